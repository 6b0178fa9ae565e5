"""Checkpoints of host arrays: single ``.npz`` pytrees, and run checkpoints that scale.

:func:`save` / :func:`load`: one pytree as one ``.npz`` file, each leaf under its key path
(``jax.tree_util.keystr``), so it restores into any pytree of the same structure and shapes on
any device count. Written to a temporary name and renamed: a crash never leaves a partial file.

:class:`RunCheckpointer`: a training run's state, one directory per step::

    checkpoints/step_00000004/state.npz                  small, replicated state (process 0)
    checkpoints/step_00000004/replay-00000-of-00002.npz  each process's own replay shard

At the paper's humanoid sizes the replay buffer is ~5.5 GB and everything else a few MB, so
(1) no process gathers the buffer: each copies only its addressable shards to host and writes
them itself, and (2) the file writes run on a background thread while training goes on; only
the device-to-host copy (started for all shards at once with ``copy_to_host_async``) happens
before the next epoch is dispatched, since the next epoch donates the buffers. A step counts as
written only once ``state.npz`` and every shard its metadata lists are in place (each file is
atomically renamed into place), so a run killed mid-write leaves the previous step as the newest
complete one. Metadata (JSON in ``state.npz``) holds the resolved config, so a checkpoint alone
rebuilds its networks and envs. Shards carry their env ranges, so a run resumes on a different
device or process count.

The choice over orbax-checkpoint: the state is a few flat arrays, the format must be readable
with numpy alone, and orbax (with tensorstore) would be the heaviest dependency of the project
for features (multi-tier storage, arbitrary array layouts) a run does not use; the two properties
that matter at scale, no gather and no blocking write, are above.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np

_NAME = re.compile(r"^ckpt_(\d{8})\.npz$")
_META_KEY = "__metadata__"


def _flatten(tree) -> Dict[str, np.ndarray]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  out = {}
  for path, leaf in leaves:
    out[jax.tree_util.keystr(path)] = np.asarray(jax.device_get(leaf))
  return out


def path_for(directory: str, step: int) -> str:
  return os.path.join(directory, f"ckpt_{step:08d}.npz")


def list_steps(directory: str) -> List[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(m.group(1)) for f in os.listdir(directory) if (m := _NAME.match(f)))


def latest_step(directory: str) -> Optional[int]:
  steps = list_steps(directory)
  return steps[-1] if steps else None


def _write_npz_atomically(final: str, arrays: Dict[str, np.ndarray]) -> None:
  directory = os.path.dirname(final) or "."
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, final)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save(directory: str, step: int, tree, metadata: Optional[dict] = None,
         keep: int = 2) -> str:
  """Writes ``tree`` as checkpoint ``step`` atomically; deletes all but the newest ``keep``."""
  os.makedirs(directory, exist_ok=True)
  arrays = _flatten(tree)
  arrays[_META_KEY] = np.asarray(json.dumps(metadata or {}))
  final = path_for(directory, step)
  _write_npz_atomically(final, arrays)
  for old in list_steps(directory)[:-keep] if keep > 0 else []:
    os.remove(path_for(directory, old))
  return final


def _dtype_kind(dtype) -> str:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  for kind in (jnp.bool_, jnp.unsignedinteger, jnp.signedinteger, jnp.floating,
               jnp.complexfloating):
    if jnp.issubdtype(dtype, kind):
      return kind.__name__
  return str(dtype)


def load(path: str, template) -> Tuple[Any, dict]:
  """Restores ``template``'s structure from ``path``; returns ``(tree, metadata)``.

  ``template`` leaves may be arrays or ``jax.ShapeDtypeStruct``s; the result holds numpy arrays
  of the template's dtypes. A stored leaf is cast within its kind (float32 <-> float64, int32
  <-> int64: runs with and without ``jax_enable_x64``), never across kinds.

  Raises ValueError naming every missing leaf, shape mismatch and dtype-kind mismatch (a float
  stored where an integer is expected, ...).
  """
  with np.load(path, allow_pickle=False) as data:
    stored = {k: data[k] for k in data.files}
  metadata = json.loads(str(stored.pop(_META_KEY, np.asarray("{}"))))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  restored, problems = [], []
  for key_path, leaf in leaves:
    name = jax.tree_util.keystr(key_path)
    if name not in stored:
      problems.append(f"missing {name}")
      restored.append(leaf)
      continue
    value = stored[name]
    want = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
    if value.shape != want:
      problems.append(f"{name}: shape {value.shape} in checkpoint, {want} expected")
    if hasattr(leaf, "dtype") and _dtype_kind(value.dtype) != _dtype_kind(leaf.dtype):
      problems.append(f"{name}: dtype {value.dtype} in checkpoint, {np.dtype(leaf.dtype)} "
                      f"expected")
    restored.append(value.astype(leaf.dtype) if hasattr(leaf, "dtype") else value)
  if problems:
    raise ValueError(f"checkpoint {path} does not match this run's state "
                     f"(different config?): " + "; ".join(problems[:10]) +
                     (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))
  return jax.tree_util.tree_unflatten(treedef, restored), metadata


# --- run checkpoints: per-process replay shards, background writes ---------------------------

_STEP_DIR = re.compile(r"^step_(\d{8})$")
_SHARD = "replay-{:05d}-of-{:05d}.npz"
_RANGE_SEP = "@"


def step_dir(directory: str, step: int) -> str:
  return os.path.join(directory, f"step_{step:08d}")


def _read_metadata(path: str) -> dict:
  with np.load(path, allow_pickle=False) as data:
    return json.loads(str(data[_META_KEY]))


def is_complete(directory: str, step: int) -> bool:
  """Whether run checkpoint ``step`` has its state and every replay shard in place."""
  d = step_dir(directory, step)
  state = os.path.join(d, "state.npz")
  if not os.path.isfile(state):
    return False
  try:
    n = int(_read_metadata(state).get("replay_shards", 0))
  except (OSError, ValueError, KeyError):
    return False
  return all(os.path.isfile(os.path.join(d, _SHARD.format(i, n))) for i in range(n))


def complete_steps(directory: str) -> List[int]:
  if not os.path.isdir(directory):
    return []
  steps = sorted(int(m.group(1)) for f in os.listdir(directory) if (m := _STEP_DIR.match(f)))
  return [s for s in steps if is_complete(directory, s)]


def latest_complete_step(directory: str) -> Optional[int]:
  steps = complete_steps(directory)
  return steps[-1] if steps else None


def split_sharded(tree, min_ndim: int = 2):
  """``(arrays, rest)``: ``tree``'s leaves of at least ``min_ndim`` dimensions (those sharded
  over envs, e.g. a replay buffer's time-major ``[time, env, ...]`` arrays) and the others,
  each a flat dict keyed by key path."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  big = {jax.tree_util.keystr(p): x for p, x in leaves if len(x.shape) >= min_ndim}
  rest = {jax.tree_util.keystr(p): x for p, x in leaves if len(x.shape) < min_ndim}
  return big, rest


def join_sharded(template, arrays, rest):
  """Inverse of :func:`split_sharded`: a tree shaped like ``template``."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  merged = {**arrays, **rest}
  return jax.tree_util.tree_unflatten(treedef, [merged[jax.tree_util.keystr(p)] for p, _ in paths])


def _local_shards(tree, axis: int):
  """``{keystr@start:stop: device array}`` of this process's shards of ``tree`` along ``axis``
  (one entry per distinct range; replicas on other devices are skipped)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = jax.tree_util.keystr(path)
    for shard in leaf.addressable_shards:
      sl = shard.index[axis]
      start, stop = sl.start or 0, sl.stop if sl.stop is not None else leaf.shape[axis]
      out.setdefault(f"{name}{_RANGE_SEP}{start}:{stop}", shard.data)
  return out


class RunCheckpointer:
  """Writes and restores run checkpoints (see the module docstring).

  ``save`` returns once this process's host copies are made; the writes finish on a background
  thread (``asynchronous=False`` writes inline). ``wait()`` blocks until the last save is on
  disk and re-raises its error, if any; ``save`` calls it first, so at most one save is in
  flight. Process 0 also deletes all but the newest ``keep`` complete steps.
  """

  def __init__(self, directory: str, *, keep: int = 2, asynchronous: bool = True,
               process_index: Optional[int] = None, process_count: Optional[int] = None):
    self.directory = directory
    self.keep = keep
    self.asynchronous = asynchronous
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    self._thread: Optional[threading.Thread] = None
    self._error: Optional[BaseException] = None
    self.last_save: Dict[str, float] = {}   # timings and size of the last save

  def wait(self) -> None:
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._error is not None:
      error, self._error = self._error, None
      raise error

  def save(self, step: int, state, replay_tree, metadata: dict, *, replay_axis: int = 1,
           gather: Callable = jax.device_get) -> None:
    """Checkpoints ``state`` (small; ``gather`` brings it to host on every process, process 0
    writes it) and ``replay_tree`` (sharded along ``replay_axis``; each process writes its own
    shards). ``replay_tree`` may be None (no replay in the checkpoint)."""
    self.wait()
    t0 = time.perf_counter()
    shards = _local_shards(replay_tree, replay_axis) if replay_tree is not None else {}
    for x in shards.values():
      x.copy_to_host_async()
    host_state = _flatten(gather(state))
    host_shards = {k: np.asarray(v) for k, v in shards.items()}
    copy_s = time.perf_counter() - t0
    n = self.process_count if replay_tree is not None else 0
    meta = dict(metadata, step=step, replay_shards=n, replay_axis=replay_axis)
    host_state[_META_KEY] = np.asarray(json.dumps(meta))
    self.last_save = {"host_copy_s": copy_s,
                      "bytes": float(sum(a.nbytes for a in host_shards.values()) +
                                     sum(a.nbytes for a in host_state.values()))}

    def write():
      try:
        t1 = time.perf_counter()
        d = step_dir(self.directory, step)
        os.makedirs(d, exist_ok=True)
        if n:
          _write_npz_atomically(os.path.join(d, _SHARD.format(self.process_index, n)),
                                host_shards)
        if self.process_index == 0:
          _write_npz_atomically(os.path.join(d, "state.npz"), host_state)
          self._prune()
        self.last_save["write_s"] = time.perf_counter() - t1
      except BaseException as e:  # pylint: disable=broad-except  (re-raised by wait())
        self._error = e

    if self.asynchronous:
      self._thread = threading.Thread(target=write, name=f"checkpoint-{step}", daemon=False)
      self._thread.start()
    else:
      write()
      self.wait()

  def _prune(self) -> None:
    if self.keep <= 0:
      return
    complete = complete_steps(self.directory)
    if not complete:
      return
    keep = set(complete[-self.keep:])
    newest = complete[-1]
    for f in os.listdir(self.directory):
      m = _STEP_DIR.match(f)
      # Older than the newest complete step and not kept: delete (incomplete ones too).
      if m and int(m.group(1)) not in keep and int(m.group(1)) < newest:
        shutil.rmtree(os.path.join(self.directory, f), ignore_errors=True)

  def metadata(self, step: int) -> dict:
    return _read_metadata(os.path.join(step_dir(self.directory, step), "state.npz"))

  def restore(self, step: int, state_template, replay_template=None) -> Tuple[Any, Any, dict]:
    """Returns ``(state, replay, metadata)`` as host numpy trees shaped like the templates
    (``replay`` is None when ``replay_template`` is). Raises ValueError on any mismatch."""
    d = step_dir(self.directory, step)
    state, meta = load(os.path.join(d, "state.npz"), state_template)
    if replay_template is None:
      return state, None, meta
    n, axis = int(meta.get("replay_shards", 0)), int(meta.get("replay_axis", 1))
    if n == 0:
      raise ValueError(f"checkpoint {d} holds no replay buffer")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(replay_template)
    full = {jax.tree_util.keystr(p): np.zeros(l.shape, l.dtype) for p, l in leaves}
    covered = {k: 0 for k in full}
    for i in range(n):
      with np.load(os.path.join(d, _SHARD.format(i, n)), allow_pickle=False) as data:
        for key in data.files:
          name, rng = key.rsplit(_RANGE_SEP, 1)
          if name not in full:
            raise ValueError(f"checkpoint {d}: replay leaf {name} is not in this run's state")
          start, stop = (int(v) for v in rng.split(":"))
          idx = [slice(None)] * full[name].ndim
          idx[axis] = slice(start, stop)
          piece = data[key]
          if piece.shape != full[name][tuple(idx)].shape:
            raise ValueError(f"checkpoint {d}: replay {name} shard {rng} has shape "
                             f"{piece.shape}, this run expects {full[name][tuple(idx)].shape} "
                             f"(different config?)")
          full[name][tuple(idx)] = piece
          covered[name] += stop - start
    missing = [k for k, v in covered.items() if v != full[k].shape[axis]]
    if missing:
      raise ValueError(f"checkpoint {d}: replay shards do not cover {missing}")
    replay = jax.tree_util.tree_unflatten(
        treedef, [full[jax.tree_util.keystr(p)] for p, _ in leaves])
    return state, replay, meta
