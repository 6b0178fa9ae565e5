"""Training's profiling hooks: the collect/update/eval split in metrics.csv and a trace of a
window of training steps, measured on the side without changing the run."""

import csv
import os

import pytest

from deepcrl_core import config as config_lib
from deepcrl_core import train as train_lib

TINY = ("width=32,num_envs=16,batch=64,epochs=2,train.unroll_length=10,train.sgd_steps=4,"
        "train.prefill_steps=20,train.train_steps_per_epoch=2,replay.capacity=100,"
        "replay.window_length=20,eval.num_envs=16,checkpoint.every=0,log.tensorboard=false")


def _config(extra=""):
  return config_lib.make_config(
      TINY + ("," + extra if extra else ""), env__name="pointmass", env__episode_length=50)


def test_timing_split_and_trace_window(tmp_path):
  rows = train_lib.train(_config("profile.timing_split_every=1,profile.trace_steps=2"),
                         str(tmp_path), log_fn=lambda s: None)
  with open(tmp_path / "metrics.csv", newline="") as f:
    written = list(csv.DictReader(f))
  assert len(written) == 2
  for r in written:
    for col in ("time/collect_s", "time/update_s", "time/eval_s", "time/epoch_s"):
      assert float(r[col]) > 0, (col, r[col])
  # The trace of the window is in the run directory (a Perfetto and/or an xplane file).
  found = [f for _, _, files in os.walk(tmp_path / "profile") for f in files]
  assert any(f.endswith((".xplane.pb", ".json.gz", ".trace.json.gz")) for f in found), found
  assert [r["grad_steps"] for r in rows] == [8, 16]


@pytest.mark.slow
def test_hooks_leave_the_run_unchanged(tmp_path):
  hooked = train_lib.train(_config("profile.timing_split_every=1,profile.trace_steps=2"),
                           str(tmp_path / "hooked"), log_fn=lambda s: None)
  plain = train_lib.train(_config(), str(tmp_path / "plain"), log_fn=lambda s: None)
  for a, b in zip(hooked, plain):
    assert a["critic_loss"] == b["critic_loss"] and a["actor_loss"] == b["actor_loss"]
    assert a["grad_steps"] == b["grad_steps"]


def test_profile_options_are_validated():
  problems = config_lib.validation_problems(
      _config("profile.trace_steps=-1,profile.timing_split_every=-2"))
  assert any("profile.trace_steps" in p for p in problems)
  assert any("profile.timing_split_every" in p for p in problems)
