"""launch/evaluate.py: metrics of a checkpoint and a headless video of one episode."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import envs
from deepcrl_core import train as train_lib
from tests.conftest import REPO_ROOT
from tests.conftest import load_config as load

TINY = ("width=32,num_envs=16,batch=64,epochs=1,train.unroll_length=10,train.sgd_steps=2,"
        "train.prefill_steps=20,train.train_steps_per_epoch=1,replay.capacity=100,"
        "replay.window_length=20,eval.num_envs=16,env.episode_length=12,log.tensorboard=false")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("evaluate") / "run")
  train_lib.train(load("pointmass", TINY), path, log_fn=lambda s: None)
  return path


def test_evaluate_writes_metrics_and_video(tmp_path, workdir):
  video = str(tmp_path / "episode.mp4")
  env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
  proc = subprocess.run(
      # No --config: the networks and env come from the config stored in the checkpoint.
      [sys.executable, "launch/evaluate.py", f"--workdir={workdir}", f"--video={video}",
       "--episodes=8", "--height=64", "--width=96"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
  if proc.returncode != 0 and ("EGL" in proc.stderr or "OpenGL" in proc.stderr):
    pytest.skip(f"no offscreen OpenGL here (install libegl1 + Mesa): {proc.stderr[-300:]}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  # the published metric names (time at goal = episode_success), with deepcrl's in brackets
  assert "eval/episode_success " in proc.stdout and "(time_at_goal)" in proc.stdout
  assert "eval/episode_success_any " in proc.stdout and "(success)" in proc.stdout
  import imageio.v2 as imageio
  frames = np.stack([f for f in imageio.get_reader(video)])  # len() is inf: no list()
  assert frames.shape == (12, 64, 96, 3)
  assert frames.std() > 1.0  # not a blank image


def test_evaluate_rejects_a_checkpoint_of_other_networks(workdir):
  proc = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--config=configs/pointmass.py:{TINY},width=64",
       f"--checkpoint={workdir}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "does not match" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_evaluate_names_a_missing_checkpoint(tmp_path):
  proc = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--workdir={tmp_path}"], cwd=REPO_ROOT,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "no complete checkpoint" in proc.stderr, proc.stderr
  assert "Traceback" not in proc.stderr


def test_evaluate_by_goal_breaks_success_down_per_goal_cell(workdir):
  # The open-arena checkpoint's networks fit the U maze (same state and goal sizes), so it can be
  # evaluated on the maze's far-goal layout, whose three goal cells are (3, 1..3).
  proc = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--config=configs/pointmass_u_maze.py:{TINY}",
       f"--checkpoint={workdir}", "--by_goal", "--episodes=24"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines()
          if line.startswith("| (")]
  assert [r[0].strip() for r in rows] == ["(3, 1)", "(3, 2)", "(3, 3)"], proc.stdout
  # Moves from the start cell (1, 1) along the U: right twice, down twice, then back left.
  assert [int(r[1]) for r in rows] == [6, 5, 4], proc.stdout
  counts = [int(r[3]) for r in rows]
  assert sum(counts) == 24 and min(counts) > 0   # uniform over 3 cells: P(an empty one) < 1e-3
  # The overall success the launcher prints is the episode-weighted mean of the rows.
  overall = float(proc.stdout.split("eval/episode_success_any ")[1].split()[0])
  per_cell = sum(n * float(r[4]) for n, r in zip(counts, rows)) / 24
  assert abs(overall - per_cell) < 0.01, proc.stdout
  # The pooled table: one row per path length (one cell each here), shortest first, the same
  # episodes and successes as the cells'.
  pooled = proc.stdout.split("by path length from the start (cells) in pointmass_u_maze_eval:")
  assert len(pooled) == 2, proc.stdout
  path_rows = [line.split("|")[1:-1] for line in pooled[1].splitlines()
               if line.startswith("| ") and line[2].isdigit()]
  assert [(int(r[0]), int(r[1]), int(r[2])) for r in path_rows] == [
      (4, 1, counts[2]), (5, 1, counts[1]), (6, 1, counts[0])], proc.stdout
  assert [r[3] for r in path_rows] == [rows[2][4], rows[1][4], rows[0][4]]


def test_evaluate_by_goal_names_an_env_without_a_maze(workdir):
  proc = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--workdir={workdir}", "--by_goal"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert ("--by_goal: env 'pointmass' has no maze: a breakdown by goal cell needs a maze env"
          in proc.stderr)
  assert "Traceback" not in proc.stderr


def test_per_episode_evaluation_is_consistent_with_the_means():
  import jax
  c = train_lib.build(load("pointmass_u_maze", TINY + ",env.episode_length=30"))
  params = c.agent.policy_params(c.agent.init(jax.random.PRNGKey(0)))
  key = jax.random.PRNGKey(3)
  means = jax.device_get(train_lib.make_eval_fn(c)(params, key))
  episodes = jax.device_get(train_lib.make_eval_fn(c, per_episode=True)(params, key))
  n = 16
  assert episodes["goal"].shape == episodes["final_position"].shape == (n, 2)
  for k, v in means.items():
    assert episodes[k].shape == (n,) and np.mean(episodes[k]) == pytest.approx(v, rel=1e-6), k
  # the final position is where final_dist was measured, and it is inside the maze's free cells
  np.testing.assert_allclose(np.linalg.norm(episodes["final_position"] - episodes["goal"], axis=1),
                             episodes["final_dist"], rtol=1e-5, atol=1e-6)
  assert not c.eval_env.unwrapped.maze.is_wall(episodes["final_position"], 1.0).any()
  assert set(np.unique(episodes["success"])) <= {0.0, 1.0}
  np.testing.assert_array_equal(episodes["success"] > 0, episodes["time_at_goal"] > 0)
  assert np.all(episodes["episode_length"] == 30)
  # the point mass never terminates: every episode ran to the time limit
  np.testing.assert_array_equal(episodes["terminated"], 0.0)
  np.testing.assert_array_equal(episodes["end_cause"], 0)


class _Countdown(envs.Env):
  """Each episode terminates after ``life`` steps (1..8, drawn at reset; 'even' or 'odd' by
  its parity); the goal is met at step 2 only (position = the step count)."""

  state_size, goal_indices, action_size, success_radius, dt = 2, (0,), 1, 0.5, 1.0
  termination_causes = ("even", "odd")

  def reset(self, key):
    life = jax.random.randint(key, (), 1, 9).astype(jnp.float32)
    return self._state(jnp.stack([0.0, life]), jnp.zeros(()))

  def _state(self, data, done):
    goal = jnp.full((1,), 2.0)
    return envs.State(data=data, obs=jnp.concatenate([data, goal]), reward=jnp.zeros(()),
                      done=done, metrics=self.goal_metrics(data[:1], goal),
                      info={"goal": goal})

  def step(self, state, action):
    data = state.data.at[0].add(1.0)
    new = self._state(data, (data[0] >= data[1]).astype(jnp.float32))
    return new.replace(info=state.info)

  def termination_cause(self, state):
    t, life = state.data
    return jnp.where(t >= life, jnp.where(life % 2 == 0, 1, 2), 0).astype(jnp.int32)


class _ZeroPolicy:
  def policy(self, params, obs):
    return jnp.zeros(obs.shape[:-1] + (1,))


def test_evaluation_records_how_each_episode_ended():
  import jax
  from deepcrl_core import agents as agents_lib
  from deepcrl_core import analysis
  limit, n = 5, 64
  eval_env = envs.wrap_for_eval(_Countdown(), limit)
  key = jax.random.PRNGKey(0)
  life = np.asarray(eval_env.reset(jax.random.split(key, n)).data[:, 1])
  assert {1.0, 4.0, 5.0, 6.0, 7.0} <= set(life)  # ends before, at and after the time limit
  episodes = jax.device_get(agents_lib.evaluate_episodes(_ZeroPolicy(), eval_env, None, key, n,
                                                         limit))
  ends = life <= limit  # an env termination on the time limit's step counts as the env's
  np.testing.assert_array_equal(episodes["terminated"], ends.astype(np.float32))
  np.testing.assert_array_equal(episodes["end_cause"],
                                np.where(ends, np.where(life % 2 == 0, 1, 2), 0))
  np.testing.assert_array_equal(episodes["episode_length"], np.minimum(life, limit))
  np.testing.assert_array_equal(episodes["success"], (life >= 2).astype(np.float32))
  means = jax.device_get(agents_lib.evaluate(_ZeroPolicy(), eval_env, None, key, n, limit))
  assert means["terminated"] == pytest.approx(ends.mean()) and "end_cause" not in means

  rows = {r["end"]: r for r in analysis.episode_ends(eval_env, episodes)}
  odd, even = ends & (life % 2 == 1), ends & (life % 2 == 0)
  assert set(rows) == {analysis.TIME_LIMIT, "even", "odd"}
  for name, mine in ((analysis.TIME_LIMIT, ~ends), ("even", even), ("odd", odd)):
    assert rows[name]["episodes"] == mine.sum()
    assert rows[name]["share"] == pytest.approx(mine.mean())
    assert rows[name]["episode_length"] == pytest.approx(np.minimum(life, limit)[mine].mean())
    assert rows[name]["median_length"] == np.median(np.minimum(life, limit)[mine])
    assert rows[name]["success"] == pytest.approx((life[mine] >= 2).mean())
  table = analysis.ends_table(analysis.episode_ends(eval_env, episodes))
  assert table.splitlines()[0].startswith("| episode ended by |") and "| odd |" in table


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  """A sweep directory as launch/sweep.py leaves it: cell width-32 trained for seeds 0 and 1,
  cell width-48 never started."""
  from deepcrl_core import sweep as sweep_lib
  work = str(tmp_path_factory.mktemp("evaluate_sweep"))
  axes = sweep_lib.parse_grid("width=32,48")
  sweep_lib.write_json(os.path.join(work, sweep_lib.MANIFEST), sweep_lib.manifest(
      os.path.join(REPO_ROOT, "configs", "pointmass_u_maze.py"), TINY, axes, [0, 1], 0.0))
  for seed in (0, 1):
    train_lib.train(load("pointmass_u_maze", f"{TINY},seed={seed}"),
                    sweep_lib.run_dir(work, sweep_lib.grid_cells(axes)[0], seed),
                    log_fn=lambda s: None)
  return work


def test_evaluate_sweep_tables_every_run_and_writes_a_csv(sweep_dir):
  import csv
  proc = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--sweep={sweep_dir}", "--by_goal",
       "--episodes=24"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  # the runs never started are listed, and both seeds of the trained cell share one compile
  assert "width-48 seed 0: skipped: not started" in out, out
  assert "2 run(s) evaluated with 1 compiled evaluation(s), 2 skipped" in out, out
  with open(os.path.join(sweep_dir, "evaluation.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [(r["cell"], r["width"], r["seed"]) for r in rows] == [("width-32", "32", "0"),
                                                                 ("width-32", "32", "1")]
  for r in rows:
    counts = [int(r[f"episodes_3_{j}"]) for j in (1, 2, 3)]
    assert sum(counts) == int(r["episodes"]) == 24
    per_cell = sum(n * float(r[f"success_3_{j}"]) for n, j in zip(counts, (1, 2, 3))) / 24
    assert float(r["success"]) == pytest.approx(per_cell, abs=1e-6)
    assert r["epoch"] == "1" and int(r["env_steps"]) > 0
  assert rows[0]["final_dist"] != rows[1]["final_dist"]  # each run with its own parameters
  assert "| width-32 | 2 |" in out and "| (3, 1) solved |" in out, out
  # the same numbers as evaluating the one run (same evaluation seed, its stored config)
  single = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--workdir={sweep_dir}/runs/width-32/seed_1",
       "--by_goal", "--episodes=24"], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=300)
  assert single.returncode == 0, single.stderr[-2000:]
  line = next(s for s in out.splitlines() if s.startswith("width-32 seed 1 ("))
  single_line = next(s for s in single.stdout.splitlines() if "(epoch 1): " in s)
  assert line.split("): ", 1)[1] == single_line.split("): ", 1)[1], (line, single_line)


def test_evaluate_sweep_names_bad_input_before_anything_compiles(tmp_path, sweep_dir, workdir):
  import shutil
  from deepcrl_core import sweep as sweep_lib
  open_sweep = str(tmp_path / "open_sweep")  # a one-run sweep of the open arena (no maze)
  shutil.copytree(workdir, os.path.join(open_sweep, "runs", "base", "seed_0"))
  sweep_lib.write_json(os.path.join(open_sweep, sweep_lib.MANIFEST), sweep_lib.manifest(
      os.path.join(REPO_ROOT, "configs", "pointmass.py"), TINY, [], [0], 0.0))
  for args, expected in [
      ([f"--sweep={open_sweep}", "--by_goal"], "--by_goal: env 'pointmass' has no maze"),
      ([f"--sweep={tmp_path}"], "is not a sweep directory: it has no sweep.json"),
      ([f"--sweep={sweep_dir}", "--video=x.mp4"], "drop --config and --video"),
      ([f"--sweep={sweep_dir}", f"--workdir={sweep_dir}"], "pass exactly one of"),
  ]:
    proc = subprocess.run([sys.executable, "launch/evaluate.py", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and expected in proc.stderr, (args, proc.stderr)
    assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(sweep_dir, "x.mp4"))
  assert not os.path.exists(os.path.join(open_sweep, "evaluation.csv"))
