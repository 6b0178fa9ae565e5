"""One live run per run directory.

``lock(workdir)`` takes an exclusive ``fcntl.flock`` on ``workdir/.lock`` and holds it for as
long as the returned object lives (or until ``release()``). The kernel drops a flock when its
process dies, however it dies (``kill -9`` included), so a lock left by a killed run is
recognised as stale simply by being lockable again: ``--resume`` after a crash needs no manual
cleanup. The file records the holder's pid, host and start time, for the error message a second
process gets while the first is alive.

flock is advisory and per host: it guards against two runs started on one machine (the common
mistake: a second terminal, a rerun script). On a network file system shared by several hosts
it may not be enforced; multi-host runs lock from process 0 only.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time


class RunDirectoryBusy(RuntimeError):
  """Another live process holds the run directory."""


class RunDirectoryNotEmpty(RuntimeError):
  """A fresh run was started on a run directory that already holds a run's checkpoints."""


class RunDirectoryLock:
  """An exclusive lock on a run directory; release with ``release()`` or ``with``."""

  def __init__(self, workdir: str):
    self._fd = None
    self.path = os.path.join(workdir, ".lock")
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise RunDirectoryBusy(
          f"run directory {workdir!r} is in use by another live run ({holder}); wait for it "
          f"to finish, stop it, or choose another --workdir") from None
    self._fd = fd
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    os.fsync(fd)

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.release()

  def __del__(self):
    try:
      self.release()
    except Exception:  # pylint: disable=broad-except  (interpreter shutdown)
      pass


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    info = {}
  if not info:
    return "holder unknown"
  return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"


def lock(workdir: str) -> RunDirectoryLock:
  """Locks ``workdir`` for this process or raises :class:`RunDirectoryBusy`."""
  return RunDirectoryLock(workdir)
