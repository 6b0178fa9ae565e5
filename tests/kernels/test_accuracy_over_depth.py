"""Rounding error of a deep residual trunk grows slowly with depth under TF32 and bf16 matmuls.

On a GPU the Pallas kernels (and XLA's default float32 matmuls) round matmul inputs to TF32
(10-bit mantissa) and, with ``matmul_dtype=bfloat16``, to bf16 (7-bit mantissa), accumulating
in float32. Interpret mode on a CPU is exact float32, so the rounding is emulated here in a
float32 jnp trunk (each matmul's operands rounded to nearest-even, forward and backward) and
compared with float64 over 64 stacked blocks (256 layers). ``kernels/README.md`` quotes these
bounds as what a user should expect. The library's own trunk (``fused_residual_stack``, XLA and
interpret paths, float32 and real bf16 matmul inputs) is held to the same bounds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_refs64 import LN_EPS, block64, block_params, x64

BLOCKS, WIDTH, BATCH = 64, 256, 32
REPORT_AT = (1, 4, 16, 64)
# Max error relative to max|float64| allowed at each depth (measured: about a third of
# these, tabulated in kernels/README.md). Float32 itself stays near 1e-6.
BOUNDS = {
    "tf32": {1: 2e-3, 4: 2e-3, 16: 2e-3, 64: 2e-3, "grad": 5e-3},
    "bf16": {1: 1.5e-2, 4: 1.5e-2, 16: 1.5e-2, 64: 1.5e-2, "grad": 4e-2},
    "f32": {1: 5e-6, 4: 5e-6, 16: 5e-6, 64: 5e-6, "grad": 1e-5},
}


def round_mantissa(x, bits: int):
  """Rounds float32 ``x`` to ``bits`` explicit mantissa bits (nearest, ties to even)."""
  if bits >= 23:
    return x
  drop = 23 - bits
  u = jax.lax.bitcast_convert_type(x, jnp.uint32)
  half = jnp.uint32((1 << (drop - 1)) - 1)
  u = u + half + ((u >> drop) & jnp.uint32(1))
  u = u & jnp.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
  return jax.lax.bitcast_convert_type(u, jnp.float32)


MANTISSA = {"tf32": 10, "bf16": 7, "f32": 23}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _round_value(x, bits):
  return round_mantissa(x, bits)


_round_value.defvjp(lambda x, bits: (round_mantissa(x, bits), None),
                    lambda bits, _, g: (g,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _round_cotangent(x, bits):
  return x


_round_cotangent.defvjp(lambda x, bits: (x, None),
                        lambda bits, _, g: (round_mantissa(g, bits),))


def _matmul(a, w, bits):
  """``a @ w`` with both operands rounded, f32 accumulation; in the backward the incoming
  cotangent is rounded too, so ``dA = round(g) @ round(w).T`` and ``dW = round(a).T @ round(g)``
  as a tensor-core backward would compute them."""
  prod = jnp.dot(_round_value(a, bits), _round_value(w, bits),
                 precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
  return _round_cotangent(prod, bits)


def _layer(h, w, b, scale, offset, bits):
  z = _matmul(h, w, bits) + b
  mean = jnp.mean(z, -1, keepdims=True)
  var = jnp.mean(jnp.square(z - mean), -1, keepdims=True)
  u = (z - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + offset
  return u * jax.nn.sigmoid(u)


def _trunk32(x, stacked, bits):
  """Emulated-precision trunk; returns the output after every block ``[BLOCKS, batch, width]``."""
  def block(h, p):
    g = h
    for i in range(4):
      g = _layer(g, p["w"][i], p["b"][i], p["scale"][i], p["offset"][i], bits)
    h = h + g
    return h, h
  return jax.lax.scan(block, x, stacked)[1]


def _trunk64(x, stacked):
  def block(h, p):
    h = block64(h, p)
    return h, h
  return jax.lax.scan(block, x, stacked)[1]


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert np.all(np.isfinite(got))
  return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@functools.lru_cache(maxsize=1)
def _float64_truth():
  k = jax.random.split(jax.random.PRNGKey(7), 3)
  x = np.asarray(jax.random.normal(k[0], (BATCH, WIDTH)))
  params = jax.tree.map(np.asarray, block_params(k[1], WIDTH, blocks=BLOCKS))
  ct = np.asarray(jax.random.normal(k[2], (BATCH, WIDTH)))
  with x64():
    x64_, p64, ct64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (x, params, ct))
    outs = _trunk64(x64_, p64)
    dx, dp = jax.grad(lambda x, p: jnp.sum(_trunk64(x, p)[-1] * ct64), argnums=(0, 1))(x64_, p64)
    truth = jax.tree.map(np.asarray, (outs, dx, dp["w"][0]))
  return (x, params, ct), truth


def measure(precision: str):
  """Errors of the emulated trunk vs float64: ``{depth: value error, "dx", "dw0"}``."""
  (x, params, ct), (outs64, dx64, dw0_64) = _float64_truth()
  bits = MANTISSA[precision]
  outs = jax.jit(_trunk32, static_argnums=2)(x, params, bits)
  dx, dp = jax.jit(jax.grad(lambda x, p: jnp.sum(_trunk32(x, p, bits)[-1] * ct),
                            argnums=(0, 1)))(x, params)
  errs = {d: _rel(outs[d - 1], outs64[d - 1]) for d in REPORT_AT}
  errs["dx"] = _rel(dx, dx64)
  errs["dw0"] = _rel(dp["w"][0], dw0_64)  # the first block's weights: the longest backward
  return errs


def test_rounding_emulation_matches_hardware_formats():
  x = jax.random.normal(jax.random.PRNGKey(0), (4096,)) * 100.0
  np.testing.assert_array_equal(round_mantissa(x, 7), x.astype(jnp.bfloat16).astype(jnp.float32))
  t = round_mantissa(x, 10)
  mantissa = jax.lax.bitcast_convert_type(t, jnp.uint32) & jnp.uint32(0x1FFF)
  assert not np.any(mantissa) and np.max(np.abs(t - x) / np.abs(x)) <= 2.0 ** -11


@pytest.mark.parametrize("precision", ["f32", "tf32", "bf16"])
def test_error_over_64_blocks_is_bounded(precision):
  errs = measure(precision)
  bound = BOUNDS[precision]
  for d in REPORT_AT:
    assert errs[d] <= bound[d], (precision, d, errs)
  assert errs["dx"] <= bound["grad"] and errs["dw0"] <= bound["grad"], (precision, errs)
  # Growth from 4 to 64 blocks (16x the depth) stays well under linear: LayerNorm re-centres
  # each layer, so rounding errors add up in the residual stream instead of compounding.
  assert errs[64] <= 4.0 * max(errs[4], 1e-7), (precision, errs)
  if precision != "f32":  # the emulation really rounds: far above float32's error
    assert errs[1] >= 30 * measure_f32_once()[1], (precision, errs)


@pytest.mark.parametrize("impl", ["xla", "interpret"])
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_library_stack_over_64_blocks_stays_within_the_bounds(impl, precision):
  """The library's own trunk (``fused_residual_stack``: the XLA path, and the Pallas kernels
  in interpret mode), in float32 and with ``matmul_dtype=bfloat16``, against float64 over the
  same 64 blocks: within the emulation's bounds, and the bf16 path really rounds."""
  import deepcrl_kernels as kernels  # pylint: disable=g-import-not-at-top
  (x, params, ct), (outs64, dx64, dw0_64) = _float64_truth()
  dtype = jnp.bfloat16 if precision == "bf16" else None

  def trunk(x, p):
    return kernels.fused_residual_stack(x, p, impl=impl, matmul_dtype=dtype)

  out = jax.jit(trunk)(x, params)
  dx, dp = jax.jit(jax.grad(lambda x, p: jnp.sum(trunk(x, p) * ct), argnums=(0, 1)))(x, params)
  bound = BOUNDS[precision]
  err = _rel(out, outs64[-1])
  assert err <= bound[64], (impl, precision, err)
  assert _rel(dx, dx64) <= bound["grad"] and _rel(dp["w"][0], dw0_64) <= bound["grad"]
  if precision == "bf16":
    assert err >= 30 * measure_f32_once()[64], (impl, err)


@functools.lru_cache(maxsize=1)
def measure_f32_once():
  return measure("f32")


if __name__ == "__main__":  # prints the table quoted in kernels/README.md
  for p in ("f32", "tf32", "bf16"):
    print(p, {k: f"{v:.1e}" for k, v in measure(p).items()})
