"""Tiled (wide-layer) residual-block kernels in Pallas interpret mode against float64."""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import _dispatch, residual_block_pallas, residual_block_tiled
from kernel_refs64 import (assert_block_matches_f64, assert_close, block_params,
                           block_value_and_grads, needs_triton)
from test_residual_block_kernel import _value_and_grads  # one jitted vjp per impl/config

RTOL = 3e-4  # f32 kernel vs float64, relative to each array's scale
# Small tiles, so cheap shapes still have several row, column and batch-split tiles.
SMALL = kernels.TiledBlockConfig(block_m=32, block_n=32, block_k=16, dw_block=32,
                                 dw_block_batch=16, dw_splits=2)
# The same tiles with each layer's activation recomputed in the GEMM prologues instead.
SMALL_PROLOGUE = dataclasses.replace(SMALL, activation_prologue=True)
BOTH = pytest.mark.parametrize("config", [SMALL, SMALL_PROLOGUE],
                               ids=["materialised", "prologue"])


def _inputs(batch, width, seed=0):
  kx, kp, kc = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.normal(kx, (batch, width)), block_params(kp, width),
          jax.random.normal(kc, (batch, width)))


def _check_against_f64(batch, width, config, seed=0, shift=0.0):
  x, params, ct = _inputs(batch, width, seed)
  if shift:  # large row means: the variance must not come from E[z^2] - E[z]^2
    params = dict(params, b=params["b"] + shift)
  assert_block_matches_f64(_value_and_grads("interpret", config)(x, params, ct), x, params, ct,
                           rtol=RTOL)


@pytest.mark.parametrize("batch,width", [
    (50, 48),   # ragged batch; width padded to 64, the last column tile half real
    (33, 96),   # three column tiles, a ragged batch over two row tiles
    (64, 64),   # exact tiles
])
@BOTH
def test_tiled_block_matches_float64(batch, width, config):
  _check_against_f64(batch, width, config)


@BOTH
def test_tiled_statistics_survive_large_row_means(config):
  """Per-tile sums and squared deviations merged with Chan's formula stay exact when every
  pre-norm value carries a large common offset (a naive E[z^2] - E[z]^2 would not)."""
  _check_against_f64(40, 64, config, seed=3, shift=300.0)


def test_default_route_above_width_256_is_the_tiled_kernels(monkeypatch):
  """impl='interpret' without a config runs the tiled kernels above width 256 (default tiles),
  and they match float64 at a width that is not a multiple of the tiles."""
  calls = []
  real = residual_block_tiled.residual_block
  monkeypatch.setattr(residual_block_tiled, "residual_block",
                      lambda *a, **k: calls.append(k["config"]) or real(*a, **k))
  assert kernels.uses_tiled_block(288) and not kernels.uses_tiled_block(256)
  assert not kernels.uses_tiled_block(512, kernels.BlockConfig(block_rows=16))
  x, params, ct = _inputs(20, 288, seed=4)
  y, (dx, dparams) = jax.jit(lambda x, p, c: (lambda y, vjp: (y, vjp(c)))(
      *jax.vjp(lambda x, p: kernels.fused_residual_block(x, p, impl="interpret"), x, p)))(
          x, params, ct)
  assert calls == [None]
  y64, (dx64, dparams64) = block_value_and_grads(x, params, ct)
  assert_close(y, y64, rtol=RTOL, name="y")
  assert_close(dx, dx64, rtol=RTOL, name="dx")
  assert_close(dparams["w"], dparams64["w"], rtol=RTOL, name="dw")


@BOTH
def test_tiled_bf16_matmuls_match_the_bf16_reference(config):
  x, params, ct = _inputs(40, 64, seed=5)
  got = _value_and_grads("interpret", config, jnp.bfloat16)(x, params, ct)
  with jax.default_matmul_precision("highest"):
    want = _value_and_grads("xla", None, jnp.bfloat16)(x, params, ct)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(g, w, rtol=2e-2)


def test_tiled_stack_under_remat_and_bf16_weights():
  width, blocks = 64, 3
  params = block_params(jax.random.PRNGKey(6), width, blocks=blocks)
  x = jax.random.normal(jax.random.PRNGKey(7), (24, width))

  def grads(impl, remat, p):
    return jax.jit(jax.grad(lambda x, p: jnp.sum(kernels.fused_residual_stack(
        x, p, impl=impl, remat=remat, config=SMALL if impl == "interpret" else None) ** 2),
        argnums=(0, 1)))(x, p)

  with jax.default_matmul_precision("highest"):
    want = grads("xla", False, params)
  for remat in (False, "nested"):
    for g, w in zip(jax.tree.leaves(grads("interpret", remat, params)), jax.tree.leaves(want)):
      assert_close(g, w, rtol=1e-3)
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  got = grads("interpret", False, p16)
  assert got[1]["w"].dtype == jnp.bfloat16
  with jax.default_matmul_precision("highest"):  # the same bf16 values, in f32 arithmetic
    want16 = grads("xla", False, jax.tree.map(lambda a: a.astype(jnp.float32), p16))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want16)):
    assert_close(g, w, rtol=5e-2)


def test_bad_tiled_inputs_raise_naming_the_constraint():
  x, params, _ = _inputs(8, 64)
  with pytest.raises(ValueError, match="TiledBlockConfig.block_m must be a power of two"):
    kernels.fused_residual_block(x, params, impl="interpret",
                                 config=kernels.TiledBlockConfig(block_m=48))
  with pytest.raises(ValueError, match=r"tiled kernels\) needs a width that is a multiple of 16"):
    x2, p2, _ = _inputs(8, 104 + 4)
    kernels.fused_residual_block(x2, p2, impl="interpret", config=SMALL)
  with pytest.raises(ValueError, match="tiles must be >= 16"):
    kernels.fused_residual_block(x, params, impl="interpret",
                                 config=kernels.TiledBlockConfig(block_k=8))


@pytest.mark.parametrize("batch,width", [(256, 512), (512, 1024), (4096, 1024), (1000, 768)])
def test_default_tiles_fit_the_shape_and_the_device(batch, width):
  cfg = kernels.default_tiled_config(width, batch, sms=132)
  assert residual_block_tiled.check_config(cfg) is None
  assert cfg.block_m >= 64  # wgmma-sized row tiles
  rows = -(-batch // cfg.batch_multiple) * cfg.batch_multiple
  assert rows // (cfg.dw_block_batch * cfg.dw_splits) >= 4  # each split has >= 4 chunks
  if (batch, width) == (4096, 1024):  # the paper's widest shape: the largest tiles, and no dW
    # split (64 weight tiles already re-read both operands at the L2 rate; splitting would
    # only add the pass that sums the parts)
    assert (cfg.block_m, cfg.block_n) == (128, 128) and cfg.dw_splits == 1
  if (batch, width) == (256, 512):  # 16 weight tiles, 4 chunks of 32 rows: no room to split
    assert cfg.dw_splits == 1


def test_dw_splits_only_where_the_weight_tiles_leave_sms_idle():
  """Width 512 has 16 dW tiles of 128 x 128 on 132 SMs: a long batch is split (4 parts at 4096
  rows, where the L2 re-reads start to bind); at width 1024 (64 tiles) the L2 re-reads bind
  already and no split pays for its sum."""
  assert kernels.default_tiled_config(512, 4096, sms=132).dw_splits == 4
  assert kernels.default_tiled_config(1024, 4096, sms=132).dw_splits == 1
  assert kernels.default_tiled_config(512, 4096, sms=8).dw_splits == 1  # 16 tiles fill 8 SMs


@needs_triton
def test_auto_keeps_xla_above_width_256_but_a_tiled_config_runs_the_self_check(monkeypatch,
                                                                               caplog):
  monkeypatch.setattr(_dispatch, "on_gpu", lambda: True)
  monkeypatch.setattr(_dispatch, "CHECK_IMPL", "interpret")
  monkeypatch.delenv(_dispatch.SELF_CHECK_ENV, raising=False)
  _dispatch.clear_self_checks()
  try:
    x, params, _ = _inputs(8, 288)
    assert residual_block_pallas.auto_prefers_xla(x) is not None
    x, params, _ = _inputs(8, 64)
    with caplog.at_level(logging.INFO, logger="deepcrl_kernels"):
      impl = _dispatch.select_impl(
          "auto", "fused_residual_block",
          lambda: residual_block_pallas.check_supported(x, params, SMALL),
          lambda: residual_block_pallas.self_check(x, params, SMALL),
          lambda: residual_block_pallas.auto_prefers_xla(x, SMALL))
    assert impl == "pallas"  # the explicit tiled config, checked in the interpreter
    [(key, reason)] = _dispatch.self_check_results().items()
    assert reason is None and SMALL in key[1]
    assert "passed its self-check" in caplog.text and "TiledBlockConfig(" in caplog.text
  finally:
    _dispatch.clear_self_checks()
