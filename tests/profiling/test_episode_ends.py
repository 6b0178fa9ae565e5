"""profiling/episode_ends.py: argument checks, reset penetration, and how episodes end."""

import numpy as np
import pytest

import episode_ends

from deepcrl_core import envs
from deepcrl_core.envs import ant


@pytest.mark.parametrize("argv, message", [
    (["--tasks=ant,antt"], "--tasks=ant,antt: expected a comma-separated subset"),
    (["--policies=zero,greedy"], "--policies=zero,greedy: expected a comma-separated subset"),
    (["--episodes=0"], "--episodes must be positive"),
    (["--env_kwargs=mass"], "--env_kwargs: malformed override 'mass': expected key=value"),
])
def test_bad_arguments_are_named(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    episode_ends.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_reset_penetration_of_the_ant():
  env = envs.make("ant")
  nominal = np.asarray(ant.INIT_QPOS, np.float64)
  lifted, lowered = nominal.copy(), nominal.copy()
  lifted[2], lowered[2] = 2.0, 0.3
  depth = episode_ends.reset_penetration(env.mj_model, np.stack([nominal, lifted, lowered]))
  # nominal: the foot spheres (r 0.08) centred 0.074 m up touch the floor by 6 mm
  np.testing.assert_allclose(depth, [0.006, 0.0, 0.256], atol=2e-3)


def test_a_never_terminating_env_runs_every_episode_to_the_limit(tmp_path, capsys):
  out = tmp_path / "ends.md"
  assert episode_ends.main(["--tasks=pointmass", "--episodes=6", "--episode_length=5",
                            f"--out={out}"]) == 0
  text = out.read_text()
  assert text == capsys.readouterr().out.split("random: done\n", 1)[1]
  for policy in ("zero", "random"):
    assert f"| pointmass | {policy} | time limit | 6 | 1.00 | 0.00 | 0.0 | 5 | 5 |" in text


@pytest.mark.parametrize("kwargs, message", [
    ("mass=heavy", "--env_kwargs: task 'ant' rejects {'mass': 'heavy'}: unknown ant mass"),
    ("gear=3", "--env_kwargs: task 'ant' rejects {'mass': 'published', 'gear': 3}"),
])
def test_env_kwargs_a_task_rejects_are_named_before_any_rollout(kwargs, message, capsys):
  assert episode_ends.main(["--tasks=ant", f"--env_kwargs={kwargs}"]) == 2
  assert message in capsys.readouterr().err


def test_paper_tasks_are_built_as_their_configs_build_them():
  assert episode_ends.task_kwargs("ant", {}) == {"mass": "published"}
  assert episode_ends.task_kwargs("ant_u4_maze_eval", {}) == {"mass": "published"}
  assert episode_ends.task_kwargs("ant", {"mass": "mjcf", "start_height": 0.75}) == {
      "mass": "mjcf", "start_height": 0.75}
  assert episode_ends.task_kwargs("humanoid", {}) == {"observation": "published"}
  assert episode_ends.task_kwargs("pointmass", {"episode_length": 3}) == {"episode_length": 3}
  built = episode_ends.make_envs(["ant", "humanoid"], {})
  assert list(built) == ["ant (mass=published)", "humanoid (observation=published)"]
  assert built["ant (mass=published)"].mass == "published"


def test_env_kwargs_reach_the_env_and_label_the_rows(capsys):
  assert episode_ends.main(["--tasks=pointmass", "--episodes=4", "--episode_length=3",
                            "--policies=zero", "--env_kwargs=episode_length=3"]) == 0
  out = capsys.readouterr().out
  assert "| pointmass (episode_length=3) | zero | time limit | 4 | 1.00 |" in out


@pytest.mark.slow
def test_the_published_mass_ant_started_clear_of_the_floor_mostly_stays_upright():
  env = envs.make("ant", mass="published", start_height=0.75)
  episodes, qpos = episode_ends.rollout(env, "random", 16, 200)
  assert np.all(np.abs(qpos[:, 2] - 0.75) <= 0.1 + 1e-6)
  # the 9 kg ant survives uniform random actions where the 0.91 kg one jumps or flips (below)
  assert episodes["terminated"].mean() < 0.25


@pytest.mark.slow
def test_the_ant_terminates_under_random_actions(tmp_path):
  episodes, qpos = episode_ends.rollout(envs.make("ant"), "random", 16, 200)
  assert qpos.shape == (16, 15)
  assert np.all(np.abs(qpos[:, 2] - 0.55) <= 0.1 + 1e-6)  # the start states (init z +- noise)
  # uniform random actions flip or launch the light MJX ant within 200 steps in most episodes
  assert episodes["terminated"].mean() > 0.5
  assert set(np.unique(episodes["end_cause"][episodes["terminated"] > 0])) <= {1, 2}
  ended = episodes["terminated"] > 0
  assert np.all(episodes["episode_length"][ended] < 200)
  assert np.all(episodes["episode_length"][~ended] == 200)


def test_replay_of_a_directory_without_checkpoints_is_named(tmp_path, capsys):
  assert episode_ends.main(["--tasks=", f"--replay={tmp_path}"]) == 2
  assert "--replay: no complete checkpoint in" in capsys.readouterr().err


def test_replay_table_of_a_tiny_run(tmp_path, capsys):
  from deepcrl_core import train as train_lib
  from tests.conftest import TINY_RUN, load_config
  run = str(tmp_path / "run")
  # 16 envs x (20 prefill + 6 epochs x 2 x 10) steps of 50-step point-mass episodes in a
  # 100-step buffer (steps 40-139): each env's episode of steps 50-99 is the one complete
  train_lib.train(load_config("pointmass", TINY_RUN + ",epochs=6"), run, log_fn=lambda s: None)
  assert episode_ends.main(["--tasks=", f"--replay={run}"]) == 0
  out = capsys.readouterr().out
  assert "How " not in out  # no fixed-policy rollouts with --tasks=
  row = [line for line in out.splitlines() if line.startswith(f"| {run} |")]
  assert len(row) == 1
  cells = [c.strip() for c in row[0].strip("|").split("|")]
  assert cells[1] == "6" and cells[3:8] == ["16", "50", "50", "50", "1.00"]
  assert cells[-1] == "-"  # the point mass has no healthy height range


def test_unhealthy_share_counts_the_stored_rows_only():
  from deepcrl_core import replay
  obs = np.zeros((4, 2, 31))
  obs[:, :, 2] = [[0.5, 0.1], [1.5, 0.5], [0.5, 0.5], [9.0, 9.0]]  # the last row is not stored
  buf = replay.ReplayState(obs=obs, action=np.zeros((4, 2, 8)), traj_id=np.zeros((4, 2)),
                           insert_pos=np.int32(3), size=np.int32(3))
  assert episode_ends.unhealthy_share(buf, (0.2, 1.0)) == pytest.approx(2 / 6)
