"""Fused InfoNCE (Pallas interpret mode on CPU) against float64 references."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import infonce_pallas
from kernel_refs64 import MIN_SQ_DIST, assert_close, infonce_value_and_grads

RTOL = 3e-4


@functools.lru_cache(maxsize=None)
def _loss_and_grads(impl, energy, variant, penalty, config=None):
  def f(phi, psi):
    return kernels.infonce_loss(phi, psi, energy=energy, variant=variant,
                                logsumexp_penalty=penalty, impl=impl, config=config)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))


def _inputs(batch, dim, seed=0, noise=0.5):
  """Scaled so dot logits are O(sqrt(dim)) on the diagonal and O(1) off it: an unsaturated
  softmax, whose gradients are not all f32 cancellation noise."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  phi = jax.random.normal(k1, (batch, dim)) / dim ** 0.25
  return phi, phi + noise * jax.random.normal(k2, (batch, dim)) / dim ** 0.25


def _check(phi, psi, energy, variant, penalty, config=None, rtol=RTOL):
  (loss, aux), (dphi, dpsi) = _loss_and_grads("interpret", energy, variant, penalty, config)(
      phi, psi)
  loss64, aux64, (dphi64, dpsi64) = infonce_value_and_grads(
      phi, psi, energy=energy, variant=variant, penalty=penalty)
  # The loss is a mean of lse - positive: f32 rounding scales with the logits, not the loss.
  assert_close(loss, loss64, rtol=rtol, name="loss",
               scale=max(abs(loss64), np.max(np.abs(aux64["logsumexp"]))))
  for k in ("logsumexp", "logsumexp_col", "positive"):
    assert_close(aux[k], aux64[k], rtol=rtol, name=k)
  assert_close(dphi, dphi64, rtol=rtol, name="dphi")
  assert_close(dpsi, dpsi64, rtol=rtol, name="dpsi")
  # Accuracy (share of rows whose positive is the row max) may differ from float64 only by
  # rows that float64 calls a near-tie.
  correct64 = aux64["positive"] >= aux64["row_max"]
  near_ties = np.sum(~correct64 & (aux64["row_max"] - aux64["positive"] < 1e-4))
  assert abs(float(aux["accuracy"]) - np.mean(correct64)) <= near_ties / len(correct64) + 1e-6


@pytest.mark.parametrize("energy,variant", itertools.product(kernels.ENERGIES, kernels.VARIANTS))
def test_energies_and_variants_match_float64(energy, variant):
  phi, psi = _inputs(37, 16, seed=1)  # ragged batch: one padded 64-row tile
  _check(phi, psi, energy, variant, penalty=0.1)


@pytest.mark.parametrize("batch,dim,energy,variant,penalty", [
    (1, 16, "l2", "forward", 0.0),         # a single pair: loss 0, gradient 0
    (300, 64, "l2", "symmetric", 0.0),     # several row and column tiles, ragged
    (130, 20, "l2_sq", "backward", 0.05),  # feature dim padded to a power of two
])
def test_batch_sizes_and_dims_match_float64(batch, dim, energy, variant, penalty):
  phi, psi = _inputs(batch, dim, seed=batch)
  _check(phi, psi, energy, variant, penalty)


@pytest.mark.slow
@pytest.mark.parametrize("batch,energy,variant,penalty", itertools.product(
    (1, 37, 300, 512), kernels.ENERGIES, kernels.VARIANTS, (0.0, 0.1)))
def test_full_matrix_matches_float64(batch, energy, variant, penalty):
  phi, psi = _inputs(batch, 64, seed=batch + 7)
  _check(phi, psi, energy, variant, penalty)


def test_small_tiles_non_square_match_float64():
  config = infonce_pallas.InfoNCEConfig(block_rows=16, block_cols=32)
  phi, psi = _inputs(70, 32, seed=3)
  _check(phi, psi, "l2", "symmetric", 0.1, config=config)


@pytest.mark.parametrize("energy", kernels.ENERGIES)
def test_identical_rows_give_finite_values_and_grads(energy):
  """phi == psi (zero positive distance) plus duplicated rows (tied logits): no NaN."""
  phi, _ = _inputs(40, 16, seed=4)
  phi = phi.at[5].set(phi[6])  # two equal rows: row 5's positive ties with column 6
  (loss, aux), grads = _loss_and_grads("interpret", energy, "symmetric", 0.1)(phi, phi)
  for leaf in jax.tree.leaves(((loss, aux), grads)):
    assert np.all(np.isfinite(leaf))
  loss64, aux64, grads64 = infonce_value_and_grads(phi, phi, energy=energy, variant="symmetric",
                                                   penalty=0.1)
  assert_close(loss, loss64, rtol=RTOL, name="loss")
  assert_close(aux["positive"], aux64["positive"], rtol=RTOL, name="positive")
  # The sqrt of l2 is steep near zero: f32 rounding of the ~0 positive distances costs accuracy.
  for got, want in zip(grads, grads64):
    assert_close(got, want, rtol=3e-3 if energy == "l2" else 1e-3, name="grad")
  if energy != "dot":  # a zero distance is the row max: every row counts as correct
    assert float(aux["accuracy"]) == 1.0


def test_unused_logsumexp_carries_no_gradient_and_matches_xla():
  phi, psi = _inputs(20, 16, seed=5)

  def f(impl):
    def g(a, b):
      _, aux = kernels.infonce_loss(a, b, variant="forward", impl=impl)
      return jnp.sum(aux["logsumexp"]) + jnp.sum(aux["positive"])
    return jax.jit(jax.grad(g, argnums=(0, 1)))

  for got, want in zip(f("interpret")(phi, psi), f("xla")(phi, psi)):
    assert_close(got, want, rtol=RTOL, name="grad through aux")

  # The logsumexp a variant does not use is reported with its value but no gradient.
  for variant, unused in (("forward", "logsumexp_col"), ("backward", "logsumexp")):
    for impl in ("interpret", "xla"):
      def h(a, b):
        return jnp.sum(kernels.infonce_loss(a, b, variant=variant, impl=impl)[1][unused])
      value, grads = jax.jit(jax.value_and_grad(h, argnums=(0, 1)))(phi, psi)
      for grad in grads:
        np.testing.assert_array_equal(np.asarray(grad), 0.0, err_msg=f"{variant} {impl}")
      want = kernels.infonce_loss(phi, psi, variant="symmetric", impl="xla")[1][unused]
      assert_close(value, jnp.sum(want), rtol=RTOL, name=f"{variant} {impl} {unused} value")


def test_vmap_over_a_leading_axis():
  phi, psi = _inputs(3 * 24, 16, seed=6)
  phi, psi = phi.reshape(3, 24, 16), psi.reshape(3, 24, 16)

  def f(impl):
    loss = lambda a, b: kernels.infonce_loss(a, b, variant="symmetric", impl=impl)[0]
    return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))

  for got, want in zip(jax.tree.leaves(f("interpret")(phi, psi)),
                       jax.tree.leaves(f("xla")(phi, psi))):
    assert_close(got, want, rtol=RTOL, name="vmapped")


def test_clamp_constant_matches_reference_module():
  assert infonce_pallas.MIN_SQ_DIST == kernels.infonce.MIN_SQ_DIST == MIN_SQ_DIST


def test_unsupported_inputs_raise_naming_the_constraint():
  phi = jnp.zeros((8, 16))
  with pytest.raises(ValueError, match="feature dim of at most"):
    kernels.infonce_loss(jnp.zeros((8, 1024)), jnp.zeros((8, 1024)), impl="interpret")
  with pytest.raises(ValueError, match="float32 or bfloat16"):
    kernels.infonce_loss(phi.astype(jnp.float16), phi.astype(jnp.float16), impl="interpret")
  with pytest.raises(ValueError, match="precision"):
    kernels.infonce_loss(phi, phi, impl="interpret",
                         config=infonce_pallas.InfoNCEConfig(precision="fast"))
  with pytest.raises(ValueError, match="energy must be one of"):
    kernels.infonce_loss(phi, phi, energy="cosine", impl="interpret")


def test_split_columns_match_float64():
  """Several column tiles per program (splits=2 of 4 column tiles), merged by XLA."""
  config = infonce_pallas.InfoNCEConfig(block_rows=16, block_cols=16, splits=2)
  assert infonce_pallas.num_splits(config, 64) == 2
  phi, psi = _inputs(60, 16, seed=8)
  _check(phi, psi, "l2", "symmetric", 0.1, config=config)
  _check(phi, psi, "dot", "forward", 0.0, config=config)
