"""Atomic checkpoints: round trip, retention, mismatch errors, no partial files."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import checkpoint as ckpt


def _tree(scale=1.0):
  return {"a": jnp.arange(6.0).reshape(2, 3) * scale, "b": (jnp.ones(4, jnp.int32), jnp.zeros(()))}


def test_round_trip_and_retention(tmp_path):
  d = str(tmp_path)
  for step in range(1, 5):
    ckpt.save(d, step, _tree(step), {"epoch": step}, keep=2)
  assert ckpt.list_steps(d) == [3, 4]
  tree, meta = ckpt.load(ckpt.path_for(d, 4), _tree())
  assert meta == {"epoch": 4}
  for got, want in zip(jax.tree.leaves(tree), jax.tree.leaves(_tree(4))):
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype
  with np.load(ckpt.path_for(d, 4)) as raw:  # stored as written, not cast on the way in
    assert sorted(str(raw[k].dtype) for k in raw.files if k.startswith("['b']")) == [
        "float32", "int32"]
  assert not [f for f in os.listdir(d) if f.startswith(".tmp")]


def test_mismatched_structure_is_reported(tmp_path):
  d = str(tmp_path)
  ckpt.save(d, 1, _tree())
  with pytest.raises(ValueError, match=r"shape \(2, 3\) in checkpoint, \(3, 3\) expected"):
    ckpt.load(ckpt.path_for(d, 1), {"a": jnp.zeros((3, 3)), "b": _tree()["b"]})
  with pytest.raises(ValueError, match="missing"):
    ckpt.load(ckpt.path_for(d, 1), {**_tree(), "c": jnp.zeros(2)})
  # a float where an integer is expected is refused; a width change within a kind is cast
  with pytest.raises(ValueError, match=r"\['a'\]: dtype float32 in checkpoint, int32 expected"):
    ckpt.load(ckpt.path_for(d, 1), {"a": jnp.zeros((2, 3), jnp.int32), "b": _tree()["b"]})
  wide = {"a": jax.ShapeDtypeStruct((2, 3), np.float64), "b": _tree()["b"]}
  tree, _ = ckpt.load(ckpt.path_for(d, 1), wide)
  assert tree["a"].dtype == np.float64
  np.testing.assert_array_equal(tree["a"], _tree()["a"])


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
  d = str(tmp_path)
  ckpt.save(d, 1, _tree())

  def boom(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(np, "savez", boom)
  with pytest.raises(OSError):
    ckpt.save(d, 2, _tree(2.0))
  assert ckpt.list_steps(d) == [1]
  assert not [f for f in os.listdir(d) if f.startswith(".tmp")]
  tree, _ = ckpt.load(ckpt.path_for(d, 1), _tree())
  np.testing.assert_array_equal(tree["a"], _tree()["a"])
