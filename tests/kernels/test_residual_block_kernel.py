"""Fused residual block (Pallas interpret mode on CPU) against float64 references."""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import residual_block_pallas as rbp
from kernel_refs64 import (assert_block_matches_f64, assert_close, block_params,
                           block_value_and_grads)

RTOL = 3e-4  # f32 kernel vs float64, relative to each array's scale


@functools.lru_cache(maxsize=None)
def _value_and_grads(impl: str, config=None, matmul_dtype=None):
  """One jitted ``(y, grads of sum(y * ct))`` per impl/config, shared across tests."""

  def f(x, params, ct):
    y, vjp = jax.vjp(lambda x, p: kernels.fused_residual_block(
        x, p, impl=impl, config=config, matmul_dtype=matmul_dtype), x, params)
    return y, vjp(ct)

  return jax.jit(f)


def _inputs(batch, width, seed=0, dtype=jnp.float32):
  kx, kp, kc = jax.random.split(jax.random.PRNGKey(seed), 3)
  x = jax.random.normal(kx, (batch, width)).astype(dtype)
  ct = jax.random.normal(kc, (batch, width)).astype(dtype)
  return x, block_params(kp, width, dtype=dtype), ct


def _check_against_f64(batch, width, config=None, seed=0):
  x, params, ct = _inputs(batch, width, seed)
  assert_block_matches_f64(_value_and_grads("interpret", config)(x, params, ct), x, params, ct,
                           rtol=RTOL)


@pytest.mark.parametrize("batch,width", [
    (1, 64),     # a single row, one padded tile
    (37, 64),    # ragged batch, weights held whole
    (300, 256),  # ragged batch over several tiles, weights streamed in K-chunks
    (20, 80),    # width not a power of two: padded to 128 with masked LayerNorm stats
])
def test_block_values_and_grads_match_float64(batch, width):
  _check_against_f64(batch, width)


@pytest.mark.slow
@pytest.mark.parametrize("batch,width", [(512, 64), (37, 256), (512, 256), (300, 512),
                                         (64, 512), (33, 1024), (100, 768)])
def test_block_values_and_grads_match_float64_large(batch, width):
  _check_against_f64(batch, width, seed=1)


@pytest.mark.parametrize("save", [True, False])
def test_streamed_small_tiles_match_float64(save):
  """K-chunk streaming, small row tiles and small dw tiles at a cheap width; with the
  pre-norm z saved by the forward (default) and recomputed in the backward."""
  config = rbp.BlockConfig(block_rows=16, block_k=16, block_w=32, block_batch=16,
                           save_preactivations=save)
  _check_against_f64(50, 64, config=config, seed=2)


def test_saved_preactivations_are_the_only_extra_residuals():
  """Saving z adds exactly four [batch, width] f32 arrays per block to the residuals (what the
  XLA path saves); without it the block saves only what it was given."""
  x, params, _ = _inputs(32, 64)

  def residual_bytes(save):
    cfg = rbp.BlockConfig(block_rows=16, block_k=16, block_w=32, block_batch=16,
                          save_preactivations=save)
    _, res = jax.vjp(lambda x, p: kernels.fused_residual_block(x, p, impl="interpret",
                                                                config=cfg), x, params)
    return sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(res) if hasattr(a, "size"))

  assert residual_bytes(True) - residual_bytes(False) == 4 * 32 * 64 * 4


def test_stack_grads_under_jit_vmap_and_remat():
  width, blocks = 64, 2
  kp, kx = jax.random.split(jax.random.PRNGKey(3))
  params = block_params(kp, width, blocks=blocks)
  x = jax.random.normal(kx, (3, 10, width))  # vmapped over the leading axis

  def loss(impl, remat):
    def f(x, p):
      y = jax.vmap(lambda xi: kernels.fused_residual_stack(xi, p, impl=impl, remat=remat))(x)
      return jnp.sum(jnp.sin(y))
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

  want_val, want_grads = loss("xla", False)(x, params)
  got_val, got_grads = loss("interpret", True)(x, params)
  assert_close(got_val, want_val, rtol=RTOL, name="loss")
  for got, want in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    assert_close(got, want, rtol=1e-3, name="grad")


def test_block_inside_haiku_layer_stack_with_remat():
  hk = pytest.importorskip("haiku")
  width = 64

  def forward(x, impl):
    @hk.remat
    def block(h):
      init = hk.initializers.VarianceScaling(1.0, "fan_in", "uniform")
      p = {"w": hk.get_parameter("w", (4, width, width), init=init),
           "b": hk.get_parameter("b", (4, width), init=jnp.zeros),
           "scale": hk.get_parameter("scale", (4, width), init=jnp.ones),
           "offset": hk.get_parameter("offset", (4, width), init=jnp.zeros)}
      return kernels.fused_residual_block(h, p, impl=impl)

    return hk.layer_stack(2)(block)(x)

  model = hk.without_apply_rng(hk.transform(forward))
  x = jax.random.normal(jax.random.PRNGKey(4), (9, width))
  params = model.init(jax.random.PRNGKey(5), x, "xla")

  def grads(impl):
    return jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x, impl) ** 2)))(params)

  for got, want in zip(jax.tree.leaves(grads("interpret")), jax.tree.leaves(grads("xla"))):
    assert_close(got, want, rtol=1e-3, name="haiku grad")


def test_bf16_matmul_option_keeps_f32_layernorm():
  x, params, ct = _inputs(40, 64, seed=6)
  y, (dx, dparams) = _value_and_grads("interpret", None, jnp.bfloat16)(x, params, ct)
  want_y, (want_dx, want_dparams) = _value_and_grads("xla", None, jnp.bfloat16)(x, params, ct)
  y64, _ = block_value_and_grads(x, params, ct)
  assert y.dtype == jnp.float32 and dparams["w"].dtype == jnp.float32
  # Same operand rounding as the XLA path with matmul_dtype=bf16 ...
  assert_close(y, want_y, rtol=1e-3, name="y vs xla bf16")
  assert_close(dx, want_dx, rtol=1e-2, name="dx vs xla bf16")
  assert_close(dparams["w"], want_dparams["w"], rtol=1e-2, name="dw vs xla bf16")
  # ... and bf16-level error against float64, unlike the f32 path.
  err = np.max(np.abs(np.asarray(y) - y64)) / np.max(np.abs(y64))
  assert 1e-5 < err < 3e-2, err


def test_bf16_activations_and_params():
  x, params, ct = _inputs(24, 64, seed=7, dtype=jnp.bfloat16)
  y, (dx, dparams) = _value_and_grads("interpret")(x, params, ct)
  assert y.dtype == dx.dtype == dparams["w"].dtype == jnp.bfloat16
  y64, (dx64, dparams64) = block_value_and_grads(x, params, ct)
  assert_close(y, y64, rtol=3e-2, name="y bf16")
  assert_close(dx, dx64, rtol=5e-2, name="dx bf16")
  for leaf in ("w", "b", "scale", "offset"):
    assert_close(dparams[leaf], dparams64[leaf], rtol=5e-2, name=f"d{leaf} bf16")


def test_unsupported_inputs_raise_naming_the_constraint():
  x, params, _ = _inputs(4, 64)
  with pytest.raises(ValueError, match="multiple of 16"):
    kernels.fused_residual_block(jnp.zeros((4, 72)), block_params(jax.random.PRNGKey(0), 72),
                                 impl="interpret")
  with pytest.raises(ValueError, match="float32 or bfloat16"):
    kernels.fused_residual_block(x.astype(jnp.float16), params, impl="interpret")
  with pytest.raises(ValueError, match="power of two"):
    kernels.fused_residual_block(x, params, impl="interpret",
                                 config=rbp.BlockConfig(block_rows=48))
  with pytest.raises(ValueError, match=r"params\['b'\] must have shape"):
    kernels.fused_residual_block(x, dict(params, b=params["b"][:3]), impl="xla")
  with pytest.raises(ValueError, match="impl must be one of"):
    kernels.fused_residual_block(x, params, impl="triton")


def test_auto_falls_back_to_xla_with_a_warning_on_gpu(monkeypatch, caplog):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  params = block_params(jax.random.PRNGKey(0), 72)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 72))
  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    y = kernels.fused_residual_block(x, params, impl="auto")
  assert "falling back to impl='xla'" in caplog.text and "multiple of 16" in caplog.text
  np.testing.assert_allclose(y, kernels.residual_block_reference(x, params), rtol=1e-6)
