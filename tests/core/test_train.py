"""End-to-end training: learning on the quick-start task, exact resume, NaN handling."""

import csv
import os

import jax
import numpy as np
import pytest

from deepcrl_core import checkpoint as ckpt
from deepcrl_core import losses as losses_lib
from deepcrl_core import train as train_lib
from tests.core.test_config import load

TINY = ("width=32,num_envs=16,batch=64,epochs=4,train.unroll_length=10,train.sgd_steps=4,"
        "train.prefill_steps=20,train.train_steps_per_epoch=2,replay.capacity=100,"
        "replay.window_length=20,eval.num_envs=16,checkpoint.every=1,checkpoint.keep=3")


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return list(csv.DictReader(f))


def test_quick_start_learns(tmp_path):
  """The quick-start config reaches >= 0.8 evaluation success (random-ish policy: < 0.5)."""
  config = load("pointmass", "epochs=6")
  rows = train_lib.train(config, str(tmp_path), log_fn=lambda s: None)
  success = [r["eval/success"] for r in rows]
  assert max(success) >= 0.8, success
  assert rows[-1]["critic_accuracy"] > rows[0]["critic_accuracy"]
  assert rows[-1]["eval/final_dist"] < 0.5 * rows[0]["eval/final_dist"]
  # Run directory contents.
  for name in ("config.json", "metrics.csv", "checkpoints", "tb"):
    assert os.path.exists(tmp_path / name), name
  assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))
  header = _rows(tmp_path)[0].keys()
  for col in ("env_steps", "eval/success", "eval/time_at_goal", "critic_loss", "actor_loss", "sps"):
    assert col in header
  assert len(_rows(tmp_path)) == 6


def _final_state(workdir):
  last = ckpt.latest_step(os.path.join(workdir, "checkpoints"))
  with np.load(ckpt.path_for(os.path.join(workdir, "checkpoints"), last)) as f:
    return last, {k: f[k] for k in f.files if k != "__metadata__"}


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path):
  config = load("pointmass", TINY)
  full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
  rows_full = train_lib.train(config, full, log_fn=lambda s: None)
  train_lib.train(config, parts, log_fn=lambda s: None, stop_after_epochs=2)
  assert ckpt.latest_step(os.path.join(parts, "checkpoints")) == 2
  # Simulate a crash that lost the metrics row of the checkpointed epoch and left junk rows.
  rows_resumed = train_lib.train(config, parts, resume=True, log_fn=lambda s: None)
  assert [r["epoch"] for r in rows_resumed] == [3, 4]
  step_a, a = _final_state(full)
  step_b, b = _final_state(parts)
  assert step_a == step_b == 4 and a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  for key in ("critic_loss", "actor_loss", "eval/success"):
    assert rows_full[-1][key] == rows_resumed[-1][key]
  assert [int(r["epoch"]) for r in _rows(parts)] == [1, 2, 3, 4]


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  config = load("pointmass", TINY)
  workdir = str(tmp_path)
  train_lib.train(config, workdir, log_fn=lambda s: None, stop_after_epochs=1)
  good_step, good = _final_state(workdir)

  original = losses_lib.critic_loss

  def poisoned(*args, **kwargs):
    loss, metrics = original(*args, **kwargs)
    return loss * np.nan, {**metrics, "critic_loss": loss * np.nan}

  monkeypatch.setattr(losses_lib, "critic_loss", poisoned)
  with pytest.raises(train_lib.TrainingDiverged, match="non-finite critic_loss.* at epoch 2") as e:
    train_lib.train(config, workdir, resume=True, log_fn=lambda s: None)
  assert "ckpt_00000001.npz" in str(e.value)
  assert ckpt.list_steps(os.path.join(workdir, "checkpoints")) == [good_step]
  _, after = _final_state(workdir)
  for k in good:
    np.testing.assert_array_equal(good[k], after[k])
