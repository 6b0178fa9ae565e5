"""The absl launcher: bad input ends with one readable message, no traceback, nothing written."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _launch(tmp_path, *args):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "launch", "train.py"), f"--workdir={workdir}", *args],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")})
  return proc, workdir


@pytest.mark.parametrize("args, fragments", [
    (["--config=configs/pointmass.py:depth=6,width=0,foo=1,env=nope"],
     ["unknown override key 'foo'", "network.depth must be a positive multiple of 4",
      "network.width must be positive", "unknown env 'nope'"]),
    (["--config=configs/pointmass.py:depth"], ["malformed override 'depth'"]),
    (["--config=configs/pointmass.py", "--config.network.depth=10", "--config.train.batch_size=10000000"],
     ["network.depth must be a positive multiple of 4", "larger than the replay buffer can hold"]),
    (["--config=configs/pointmass.py", "--config.network.nosuchfield=3"], ["nosuchfield"]),
    (["--config=configs/does_not_exist.py"], ["does_not_exist.py"]),
])
def test_bad_config_exits_cleanly(tmp_path, args, fragments):
  proc, workdir = _launch(tmp_path, *args)
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  for fragment in fragments:
    assert fragment in proc.stderr, (fragment, proc.stderr)
  assert not workdir.exists()


def test_resume_without_run_directory_is_refused(tmp_path):
  proc, workdir = _launch(tmp_path, "--config=configs/pointmass.py", "--resume")
  assert proc.returncode == 2 and "does not exist" in proc.stderr
  assert not workdir.exists()
