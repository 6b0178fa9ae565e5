"""A run directory belongs to one live run; kills (-9) mid-run or mid-checkpoint lose nothing."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from deepcrl_core import checkpoint as ckpt
from deepcrl_core import rundir
from deepcrl_core import train as train_lib
from tests.conftest import REPO_ROOT
from tests.conftest import load_config as load
from tests.conftest import TINY_RUN as TINY
from tests.core.test_train import _rows


def _spawn(code: str, *args) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": REPO_ROOT})


def _wait_for(predicate, proc, timeout_s=600):
  deadline = time.time() + timeout_s
  while not predicate():
    if proc.poll() is not None:
      raise AssertionError(f"child exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    if time.time() > deadline:
      proc.kill()
      raise AssertionError("timed out waiting for the child")
    time.sleep(0.2)


def _kill9(proc):
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL


def test_second_live_run_is_refused_and_a_killed_runs_lock_is_stale(tmp_path):
  workdir = str(tmp_path / "run")
  holder = _spawn("""
      import sys, time
      from deepcrl_core import rundir
      lock = rundir.lock(sys.argv[1])
      print("locked", flush=True)
      time.sleep(600)
  """, workdir)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(rundir.RunDirectoryBusy, match=f"pid {holder.pid}"):
    rundir.lock(workdir)
  # train() refuses before writing anything into the directory.
  with pytest.raises(rundir.RunDirectoryBusy, match="in use by another live run"):
    train_lib.train(load("pointmass", TINY), workdir, log_fn=lambda s: None)
  assert sorted(os.listdir(workdir)) == [".lock"]
  _kill9(holder)
  lock = rundir.lock(workdir)  # the dead holder's flock went with it
  lock.release()


def test_launcher_names_a_busy_run_directory(tmp_path):
  workdir = str(tmp_path / "run")
  with rundir.lock(workdir):
    proc = subprocess.run(
        [sys.executable, "launch/train.py", f"--config=configs/pointmass.py:{TINY}",
         f"--workdir={workdir}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "in use by another live run" in proc.stderr and "Traceback" not in proc.stderr


def test_kill_during_a_checkpoint_write_keeps_the_previous_one_readable(tmp_path):
  directory = str(tmp_path / "checkpoints")
  writer = _spawn("""
      import sys, time
      import jax.numpy as jnp
      import numpy as np
      from deepcrl_core import checkpoint as ckpt
      c = ckpt.RunCheckpointer(sys.argv[1], keep=2, asynchronous=True)
      state = {"w": jnp.arange(4.0)}
      replay = {"obs": jnp.ones((3, 8, 2))}
      c.save(1, state, replay, {"epoch": 1})
      c.wait()
      real = np.savez
      def slow(f, **arrays):  # writes part of the file, then hangs until killed
        f.write(b"PK partial")
        f.flush()
        print("writing", flush=True)
        time.sleep(600)
      np.savez = slow
      c.save(2, {"w": jnp.arange(4.0) * 2}, {"obs": jnp.zeros((3, 8, 2))}, {"epoch": 2})
      c.wait()
  """, directory)
  assert writer.stdout.readline().strip() == "writing"
  _kill9(writer)
  assert ckpt.latest_complete_step(directory) == 1
  state, replay, meta = ckpt.RunCheckpointer(directory).restore(
      1, {"w": np.zeros(4, np.float32)}, {"obs": np.zeros((3, 8, 2), np.float32)})
  np.testing.assert_array_equal(state["w"], np.arange(4.0))
  np.testing.assert_array_equal(replay["obs"], 1.0)
  assert meta["epoch"] == 1
  # The next save of the same step replaces the half-written one.
  c = ckpt.RunCheckpointer(directory, keep=1)
  c.save(2, {"w": np.arange(4.0) * 3}, None, {"epoch": 2})
  c.wait()
  assert ckpt.complete_steps(directory) == [2]


def test_resume_after_kill_9_mid_run(tmp_path):
  """A run killed with SIGKILL while training resumes with --resume: no stale lock, no
  unreadable checkpoint, and the metrics continue from the last checkpoint."""
  workdir = str(tmp_path / "run")
  config = TINY.replace("epochs=4", "epochs=200")
  runner = _spawn("""
      import sys
      from deepcrl_core import train as train_lib
      from tests.conftest import load_config as load
      train_lib.train(load("pointmass", sys.argv[2]), sys.argv[1], log_fn=lambda s: None)
  """, workdir, config)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  _wait_for(lambda: (ckpt.latest_complete_step(ckpt_dir) or 0) >= 2, runner)
  _kill9(runner)
  last = ckpt.latest_complete_step(ckpt_dir)
  rows = train_lib.train(load("pointmass", config.replace("epochs=200", f"epochs={last + 1}")),
                         workdir, resume=True, log_fn=lambda s: None)
  assert [r["epoch"] for r in rows] == [last + 1]
  assert [int(r["epoch"]) for r in _rows(workdir)] == list(range(1, last + 2))
