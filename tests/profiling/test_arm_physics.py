"""profiling/arm_physics.py: argument checks, scripted plans, and (slow) a tiny full run."""


import numpy as np
import pytest

import arm_physics

from deepcrl_core.envs import arm  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--tasks=arm_push_medium"], "unknown arm task 'arm_push_medium'"),
    (["--variants=fast,turbo"], "unknown variant 'turbo'"),
])
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    arm_physics.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_scripted_pushes_move_the_cube_in_c_mujoco():
  """The planned push sequences really push the cube (planning works on the fast model)."""
  env = arm.Arm("push_easy")
  cube = np.array([-0.1, 0.6, arm.CUBE_HALF])
  start = arm_physics.plan_reach(env, cube - [0.07, 0, 0], closed=True)
  over = arm_physics.plan_reach(env, cube - [0.07, 0, -0.1], closed=True, start=start)
  end = arm_physics.plan_reach(env, cube + [0.05, 0, 0], closed=True, start=start)
  assert start.shape == (4,)  # the 4 moving arm joints
  data = arm_physics._data(env, cube[:2])
  for action, seconds in ((over, 1.0), (start, 1.0), (end, 1.5)):
    arm_physics._hold(env, data, list(action) + [1.0], seconds)
  assert data.qpos[0] > cube[0] + 0.05  # pushed along +x
  assert abs(data.qpos[2] - arm.CUBE_HALF) < 0.005  # still on the table


@pytest.mark.slow
def test_tiny_run_prints_a_table(tmp_path, capsys):
  out = tmp_path / "t.md"
  assert arm_physics.main(["--tasks=arm_push_easy", "--variants=published,fast",
                           "--num_envs=4", "--scan_length=2", "--repeats=1",
                           "--stress_envs=4", "--stress_steps=5", f"--out={out}"]) == 0
  table = out.read_text()
  rows = [l for l in table.splitlines() if l.startswith("| arm_push_easy")]
  assert len(rows) == 2 and table.strip() in capsys.readouterr().out
  published, fast = (r.split("|") for r in rows)
  assert published[2].strip() == "published" and fast[2].strip() == "fast"
  assert published[10].strip() == "0.0 / 0.0"  # the reference against itself
  assert published[11].strip().startswith("5 of 15 (5)")  # all five picks lift the cube
  assert fast[3].strip() == "0.005 x 10" and fast[4].strip() == "6 / 3"
