"""profiling/emitters_ab.py: one task's training step compiled with the fusion emitters off and on."""

import csv
import subprocess
import sys

import pytest


def test_unknown_task_is_named_before_anything_runs(tmp_path):
  proc = subprocess.run([sys.executable, "profiling/emitters_ab.py", "--tasks=no_such_task",
                         f"--out={tmp_path}"], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "no config configs/no_such_task.py" in proc.stderr


@pytest.mark.slow
def test_both_compiles_are_timed_for_a_task(tmp_path):
  subprocess.run([sys.executable, "profiling/emitters_ab.py", "--tasks=pointmass",
                  "--num_envs=8", "--unroll_length=5", "--sgd_steps=2", "--rounds=2",
                  f"--out={tmp_path}"], check=True, capture_output=True, timeout=600)
  with open(tmp_path / "emitters_ab.csv") as f:
    [row] = list(csv.DictReader(f))
  assert row["task"] == "pointmass" and row["status"] == "ok"
  assert float(row["off_ms"]) > 0 and float(row["on_ms"]) > 0
  assert row["on_vs_off"].endswith("%")
