"""Whole runs of the baseline agents: bit-exact resume, launch/evaluate.py on a baseline's
checkpoint, and (slow) learning the quick-start task within 5 minutes on 2 CPU cores."""

import subprocess
import sys

import numpy as np
import pytest

from deepcrl_core import train as train_lib
from tests.conftest import REPO_ROOT, TINY_RUN, final_checkpoint as _final_state
from tests.conftest import load_config as load

# TD3: targets for actor and critics, the delayed actor update (a lax.cond on grad_steps) and
# HER's per-step keys all have to survive a checkpoint.
TINY_TD3 = TINY_RUN + ",agent=td3,log.tensorboard=false,network.kernel_impl=xla"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("td3") / "full")
  rows = train_lib.train(load("pointmass", TINY_TD3), path, log_fn=lambda s: None)
  return path, rows


def test_baseline_resume_matches_uninterrupted_run(tmp_path, full_run):
  full, rows_full = full_run
  parts = str(tmp_path / "parts")
  config = load("pointmass", TINY_TD3)
  train_lib.train(config, parts, log_fn=lambda s: None, stop_after_epochs=2)
  rows = train_lib.train(config, parts, resume=True, log_fn=lambda s: None)
  assert [r["epoch"] for r in rows] == [3, 4]
  step_a, a = _final_state(full)
  step_b, b = _final_state(parts)
  assert step_a == step_b == 4 and a.keys() == b.keys()
  assert any("target_actor_params" in k for k in a), sorted(a)[:5]
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  for key in ("critic_loss", "actor_loss", "eval/success"):
    assert rows_full[-1][key] == rows[-1][key]


def test_evaluate_a_baseline_checkpoint(full_run):
  proc = subprocess.run(
      [sys.executable, "launch/evaluate.py", f"--workdir={full_run[0]}", "--episodes=8"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "eval/episode_success_any " in proc.stdout and "(success)" in proc.stdout


# Quick start (configs/pointmass.py as it is, agent=...), capped at 5 minutes of wall clock
# including compilation; measured on this 2-core machine in profiling/RESULTS.md ("Agents").
QUICK_START = "epochs=10,train.max_seconds=300,log.tensorboard=false,log.progress_every_s=0"


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_her_baselines_learn_the_quick_start(tmp_path, agent):
  rows = train_lib.train(load("pointmass", f"{QUICK_START},agent={agent}"), str(tmp_path),
                         log_fn=lambda s: None)
  success = [r["eval/success"] for r in rows]
  assert max(success) >= 0.8, success
  assert rows[-1]["wall_s"] < 330, rows[-1]["wall_s"]


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["gcbc", "gcsl"])
def test_bc_baselines_run_the_quick_start(tmp_path, agent):
  """What GCBC and GCSL reach is reported (profiling/RESULTS.md), not required."""
  rows = train_lib.train(load("pointmass", f"{QUICK_START},agent={agent}"), str(tmp_path),
                         log_fn=lambda s: None)
  print(agent, [round(r["eval/success"], 3) for r in rows])
  assert all(np.isfinite(r["actor_loss"]) for r in rows)
