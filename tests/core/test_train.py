"""End-to-end training: learning on the quick-start task, exact resume, NaN handling."""

import csv
import os

import numpy as np
import pytest

from deepcrl_core import checkpoint as ckpt
from deepcrl_core import losses as losses_lib
from deepcrl_core import rundir
from deepcrl_core import train as train_lib
from tests.conftest import TINY_RUN, final_checkpoint as _final_state, load_config as load

TINY = TINY_RUN


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


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path):
  config = load("pointmass", TINY)
  full, parts = str(tmp_path / "full"), str(tmp_path / "parts")
  rows_full = train_lib.train(config, full, log_fn=lambda s: None)
  # The point mass never terminates: its 16 envs end their 50-step episodes together, after
  # 20 prefill steps at env steps 50 and 100, i.e. in the 2nd and 4th epochs of 2 x 10 steps.
  assert config.env.episode_length == 50 and config.train.num_envs == 16
  assert [r["train/episode_ends"] for r in rows_full] == [0.0, 8.0, 0.0, 8.0]  # per step
  train_lib.train(config, parts, log_fn=lambda s: None, stop_after_epochs=2)
  assert ckpt.latest_complete_step(os.path.join(parts, "checkpoints")) == 2
  # Simulate a crash after epoch 3's row was written but before its checkpoint completed: a
  # junk row for epoch 3 and a half-written step directory (its replay shard only).
  with open(os.path.join(parts, "metrics.csv"), "a") as f:
    f.write("3" + ",999" * (len(_rows(parts)[0]) - 1) + "\n")
  os.makedirs(os.path.join(parts, "checkpoints", "step_00000003"))
  with open(os.path.join(parts, "checkpoints", "step_00000003", "replay-00000-of-00001.npz"),
            "wb") as f:
    f.write(b"truncated")
  assert [int(r["epoch"]) for r in _rows(parts)] == [1, 2, 3]
  lines = []
  rows_resumed = train_lib.train(config, parts, resume=True, log_fn=lines.append)
  assert [r["epoch"] for r in rows_resumed] == [3, 4]
  assert not [l for l in lines if l.startswith("note: resuming with")]  # the same config
  step_a, a = _final_state(full)
  step_b, b = _final_state(parts)
  assert step_a == step_b == 4 and a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  for key in ("critic_loss", "actor_loss", "eval/success"):
    assert rows_full[-1][key] == rows_resumed[-1][key]
  assert [int(r["epoch"]) for r in _rows(parts)] == [1, 2, 3, 4]
  assert float(_rows(parts)[2]["critic_loss"]) != 999  # the junk row was replaced


def test_resume_names_settings_that_differ_from_the_runs_config_json(tmp_path):
  import json
  from deepcrl_core import config as config_lib
  began = load("ant", "env.kwargs.goal_distance=3")
  stored = config_lib.resolved_dict(began)
  stored["env"]["kwargs"] = {"goal_distance": 3}  # a run begun before the ant's mass default
  with open(tmp_path / "config.json", "w") as f:
    json.dump(stored, f)
  assert train_lib._config_changes(str(tmp_path), began) == [
      "note: resuming with env.kwargs = {'goal_distance': 3, 'mass': 'published'}; the run "
      "began with {'goal_distance': 3} (config.json)"]
  assert train_lib._config_changes(str(tmp_path), load("ant", "env.kwargs.goal_distance=3,"
                                                             "env.kwargs.mass=mjcf,seed=4")) == [
      "note: resuming with env.kwargs = {'goal_distance': 3, 'mass': 'mjcf'}; the run began "
      "with {'goal_distance': 3} (config.json)",
      "note: resuming with seed = 4; the run began with 0 (config.json)"]
  assert train_lib._config_changes(str(tmp_path / "missing"), began) == []
  stored["env"]["kwargs"] = {"goal_distance": 3, "mass": "published"}
  with open(tmp_path / "config.json", "w") as f:
    json.dump(stored, f)
  # a sweep's per-call budget is not a change of the run
  assert train_lib._config_changes(str(tmp_path), load(
      "ant", "env.kwargs.goal_distance=3,train.max_seconds=60")) == []


def test_a_fresh_run_refuses_a_run_directory_with_checkpoints(tmp_path):
  config = load("pointmass", TINY + ",epochs=1")
  train_lib.train(config, str(tmp_path), log_fn=lambda s: None)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(rundir.RunDirectoryNotEmpty, match="--resume"):
    train_lib.train(config, str(tmp_path), log_fn=lambda s: None)
  assert sorted(os.listdir(tmp_path)) == before and len(_rows(tmp_path)) == 1


def test_progress_lines_inside_an_epoch(tmp_path):
  lines = []
  config = load("pointmass", TINY + ",epochs=2,log.progress_every_s=1e-6")
  train_lib.train(config, str(tmp_path), log_fn=lines.append)
  inside = [l for l in lines if "grad steps |" in l]
  # A line after each of the 2 training steps (4 gradient steps each) of each epoch.
  assert len(inside) == 4, lines
  # After training step 1: 320 prefill + 1 x 10 steps x 16 envs.
  assert inside[0].startswith("epoch 1/2 | 4/8 grad steps | env steps 480 |"), inside[0]
  assert inside[3].startswith("epoch 2/2 | 8/8 grad steps | env steps 960 |"), inside[3]
  assert all("ETA epoch" in l and ", run " in l for l in inside)
  # Before the first epoch the run says what it does and how long it took.
  assert any(l.startswith("prefilling replay: 320 env steps") for l in lines)
  assert any(l.startswith("prefilled in") for l in lines)
  assert any("epoch compiled in" in l for l in lines)


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
  assert "step_00000001" in str(e.value)
  assert ckpt.complete_steps(os.path.join(workdir, "checkpoints")) == [good_step]
  _, after = _final_state(workdir)
  for k in good:
    np.testing.assert_array_equal(good[k], after[k])
