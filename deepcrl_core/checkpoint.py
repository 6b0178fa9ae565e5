"""Atomic checkpoints of arbitrary pytrees as ``.npz`` files of host arrays.

Each leaf is stored under its key path (``jax.tree_util.keystr``), so a checkpoint restores
into any pytree of the same structure and shapes -- on any device count, since arrays are
saved as plain host numpy. Files are written to a temporary name and renamed, so a crash
never leaves a partial checkpoint, and the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple

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


def save(directory: str, step: int, tree, metadata: Optional[dict] = None,
         keep: int = 2) -> str:
  """Writes ``tree`` as checkpoint ``step`` atomically; deletes all but the newest ``keep``."""
  os.makedirs(directory, exist_ok=True)
  arrays = _flatten(tree)
  arrays[_META_KEY] = np.asarray(json.dumps(metadata or {}))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_ckpt_", suffix=".npz")
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    final = path_for(directory, step)
    os.replace(tmp, final)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  for old in list_steps(directory)[:-keep] if keep > 0 else []:
    os.remove(path_for(directory, old))
  return final


def load(path: str, template) -> Tuple[Any, dict]:
  """Restores ``template``'s structure from ``path``; returns ``(tree, metadata)``.

  ``template`` leaves may be arrays or ``jax.ShapeDtypeStruct``s; the result holds numpy arrays.

  Raises ValueError naming every missing leaf or shape/dtype mismatch.
  """
  with np.load(path, allow_pickle=False) as data:
    stored = {k: data[k] for k in data.files}
  metadata = json.loads(str(stored.pop(_META_KEY, np.asarray("{}"))))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
  restored, problems = [], []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if name not in stored:
      problems.append(f"missing {name}")
      restored.append(leaf)
      continue
    value = stored[name]
    want = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
    if value.shape != want:
      problems.append(f"{name}: shape {value.shape} in checkpoint, {want} expected")
    restored.append(value.astype(leaf.dtype) if hasattr(leaf, "dtype") else value)
  if problems:
    raise ValueError(f"checkpoint {path} does not match this run's state "
                     f"(different config?): " + "; ".join(problems[:10]) +
                     (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))
  return jax.tree_util.tree_unflatten(treedef, restored), metadata
