"""launch/evaluate.py: metrics of a checkpoint and a headless video of one episode."""

import os
import subprocess
import sys

import numpy as np
import pytest

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
  counts = [int(r[2]) for r in rows]
  assert sum(counts) == 24 and min(counts) > 0   # uniform over 3 cells: P(an empty one) < 1e-3
  # The overall success the launcher prints is the episode-weighted mean of the rows.
  overall = float(proc.stdout.split("eval/episode_success_any ")[1].split()[0])
  per_cell = sum(n * float(r[3]) for n, r in zip(counts, rows)) / 24
  assert abs(overall - per_cell) < 0.01, proc.stdout


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
