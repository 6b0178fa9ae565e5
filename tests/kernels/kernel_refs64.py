"""Float64 references for the kernel tests, written independently of ``kernels``.

They use the broadcast-difference form of the distances and plain autodiff, so they share no
code (nor the matmul identity) with the implementations they check.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_kernels import _pallas_common as _common

LN_EPS = 1e-5
MIN_SQ_DIST = 1e-12


# Tests that lower or run the Pallas Triton kernels: skipped on a jax without that backend
# (tests/kernels/test_without_triton.py covers that case).
needs_triton = pytest.mark.skipif(_common.TRITON_MISSING is not None,
                                  reason=str(_common.TRITON_MISSING))


@contextlib.contextmanager
def x64():
  """Float64 enabled locally (``jax.enable_x64`` on jax >= 0.10, experimental before)."""
  ctx = getattr(jax, "enable_x64", None)
  if ctx is None:  # pragma: no cover - older jax
    from jax.experimental import enable_x64 as ctx  # pylint: disable=g-import-not-at-top
  with ctx(True):
    yield


def block_params(key, width: int, *, blocks: int | None = None, dtype=jnp.float32):
  """Random residual-block params (scale near 1, small bias/offset), optionally stacked."""
  lead = () if blocks is None else (blocks,)
  kw, kb, ks, ko = jax.random.split(key, 4)
  return {
      "w": (jax.random.normal(kw, lead + (4, width, width)) / np.sqrt(width)).astype(dtype),
      "b": (0.1 * jax.random.normal(kb, lead + (4, width))).astype(dtype),
      "scale": (1.0 + 0.2 * jax.random.normal(ks, lead + (4, width))).astype(dtype),
      "offset": (0.1 * jax.random.normal(ko, lead + (4, width))).astype(dtype),
  }


def block64(x, p):
  h = x
  for i in range(4):
    z = h @ p["w"][i] + p["b"][i]
    mean = z.mean(-1, keepdims=True)
    var = ((z - mean) ** 2).mean(-1, keepdims=True)
    u = (z - mean) / jnp.sqrt(var + LN_EPS) * p["scale"][i] + p["offset"][i]
    h = u / (1.0 + jnp.exp(-u))
  return x + h


def block_value_and_grads(x, params, cotangent):
  """Float64 ``y`` and the grads of ``sum(y * cotangent)`` w.r.t. ``(x, params)`` (numpy)."""
  with x64():
    args = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), (x, params, cotangent))
    y = block64(args[0], args[1])
    grads = jax.grad(lambda x, p: jnp.sum(block64(x, p) * args[2]), argnums=(0, 1))(
        args[0], args[1])
    return jax.tree.map(np.asarray, (y, grads))


def _infonce64(phi, psi, energy, variant, penalty):
  diff = phi[:, None, :] - psi[None, :, :]
  if energy == "dot":
    logits = phi @ psi.T
  else:
    sq = jnp.maximum(jnp.sum(diff * diff, -1), MIN_SQ_DIST)
    logits = -sq if energy == "l2_sq" else -jnp.sqrt(sq)
  pos = jnp.diagonal(logits)

  def lse(a, axis):
    m = jnp.max(a, axis=axis, keepdims=True)
    return jnp.squeeze(m, axis) + jnp.log(jnp.sum(jnp.exp(a - m), axis=axis))

  lse_row, lse_col = lse(logits, 1), lse(logits, 0)
  fwd = -jnp.mean(pos - lse_row) + penalty * jnp.mean(lse_row ** 2)
  bwd = -jnp.mean(pos - lse_col) + penalty * jnp.mean(lse_col ** 2)
  loss = {"forward": fwd, "backward": bwd, "symmetric": 0.5 * (fwd + bwd)}[variant]
  aux = {"logsumexp": lse_row, "logsumexp_col": lse_col, "positive": pos,
         "row_max": jnp.max(logits, 1)}
  return loss, aux


def infonce_value_and_grads(phi, psi, *, energy, variant, penalty):
  """Float64 ``(loss, aux, (dphi, dpsi))`` as numpy; aux also has ``row_max``."""
  with x64():
    a, b = (jnp.asarray(np.asarray(v, np.float64)) for v in (phi, psi))
    (loss, aux), grads = jax.value_and_grad(_infonce64, argnums=(0, 1), has_aux=True)(
        a, b, energy, variant, penalty)
    return jax.tree.map(np.asarray, (loss, aux, grads))


def assert_close(got, want, *, rtol, name="", scale=None):
  """Elementwise ``|got - want| <= rtol * (|want| + scale)``; ``scale`` defaults to max|want|.

  Pass ``scale`` when ``want`` is a small difference of large terms (a loss near zero).
  """
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (name, got.shape, want.shape)
  assert np.all(np.isfinite(got)), f"{name}: non-finite values"
  if scale is None:
    scale = np.max(np.abs(want)) if want.size else 0.0
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-6), err_msg=name)


def assert_block_matches_f64(got, x, params, cotangent, *, rtol):
  """``got = (y, (dx, dparams))`` of a block against its float64 value and gradients."""
  y, (dx, dparams) = got
  y64, (dx64, dparams64) = block_value_and_grads(x, params, cotangent)
  assert_close(y, y64, rtol=rtol, name="y")
  assert_close(dx, dx64, rtol=rtol, name="dx")
  for k in ("w", "b", "scale", "offset"):
    assert_close(dparams[k], dparams64[k], rtol=rtol, name=f"d{k}")
