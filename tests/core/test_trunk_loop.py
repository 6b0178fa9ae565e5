"""The XLA-path residual stack (lean residuals, scan unroll) equals the plain scanned stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import residual_block as rb
from deepcrl_kernels import residual_stack_xla
from tests.conftest import assert_close_to_rounding

WIDTH, BATCH = 64, 16


def _plain_stack(x, params):
  """The stack as it was before: a scan over the reference block, differentiated by autodiff
  (every intermediate saved as a scan output)."""
  return jax.lax.scan(lambda h, p: (rb.residual_block_reference(h, p), None), x, params)[0]


def _inputs(depth, seed=0):
  n = depth // 4
  k = jax.random.split(jax.random.PRNGKey(seed), 5)
  params = {
      "w": jax.random.uniform(k[0], (n, 4, WIDTH, WIDTH), minval=-1, maxval=1) / WIDTH ** 0.5,
      "b": 0.1 * jax.random.normal(k[1], (n, 4, WIDTH)),
      "scale": 1.0 + 0.1 * jax.random.normal(k[2], (n, 4, WIDTH)),
      "offset": 0.1 * jax.random.normal(k[3], (n, 4, WIDTH)),
  }
  return jax.random.normal(k[4], (BATCH, WIDTH)), params


def _value_and_grads(stack, x, params):
  loss = lambda x, p: jnp.sum(jnp.sin(stack(x, p)))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, params), jax.jit(stack)(x, params)


@pytest.mark.parametrize("depth,remat", [(4, False), (16, False), (64, False), (16, "block"),
                                         (16, "nested"), (64, "nested")])
def test_new_stack_equals_plain_scan_to_float32_rounding(depth, remat):
  x, params = _inputs(depth)
  (loss_old, grads_old), y_old = _value_and_grads(_plain_stack, x, params)
  new = lambda x, p: kernels.fused_residual_stack(x, p, impl="xla", remat=remat)
  (loss_new, grads_new), y_new = _value_and_grads(new, x, params)
  terms = depth * WIDTH  # values summed along the longest path (depth matmuls of WIDTH terms)
  assert_close_to_rounding(y_new, y_old, terms=terms)
  assert_close_to_rounding(loss_new, loss_old, terms=terms * BATCH)
  jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=terms), grads_old, grads_new)
  # ... and the check would catch a real difference: one block's weights moved by 1% of scale.
  if depth == 16 and remat is False:
    w = params["w"]
    noise = 1e-2 * jnp.std(w) * jax.random.normal(jax.random.PRNGKey(9), w.shape[1:])
    bumped = dict(params, w=w.at[2].add(noise))
    (_, grads_bumped), _ = _value_and_grads(new, x, bumped)
    with pytest.raises(AssertionError):
      jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=terms), grads_old,
                   grads_bumped)


@pytest.mark.parametrize("unroll", [2, True])
def test_unrolled_stack_equals_the_loop(unroll):
  x, params = _inputs(16, seed=1)
  loop = lambda x, p: kernels.fused_residual_stack(x, p, impl="xla")
  unrolled = lambda x, p: kernels.fused_residual_stack(x, p, impl="xla", unroll=unroll)
  (_, g_loop), y_loop = _value_and_grads(loop, x, params)
  (_, g_unrolled), y_unrolled = _value_and_grads(unrolled, x, params)
  assert_close_to_rounding(y_unrolled, y_loop, terms=16 * WIDTH)
  jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=16 * WIDTH), g_loop, g_unrolled)


def _while_loops(fn, *args):
  return jax.jit(fn).lower(*args).compile().as_text().count(" while(")


def test_unroll_true_and_the_context_remove_the_loop():
  x, params = _inputs(16)
  grad = lambda **kw: jax.grad(
      lambda x, p: jnp.sum(kernels.fused_residual_stack(x, p, impl="xla", **kw)), argnums=1)
  assert _while_loops(grad(), x, params) >= 2  # forward and backward loops
  assert _while_loops(grad(unroll=True), x, params) == 0
  with residual_stack_xla.scan_unroll(True):
    assert _while_loops(grad(), x, params) == 0  # traced inside the context
  assert _while_loops(grad(), x, params) >= 2     # the default is back outside it


def test_lean_residuals_use_a_fraction_of_the_plain_scans_memory():
  """The point of the policy: the backward pass keeps 5 arrays per block, not ~40."""
  n, batch, width = 16, 1024, 128
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  p = {"w": f32(n, 4, width, width), "b": f32(n, 4, width), "scale": f32(n, 4, width),
       "offset": f32(n, 4, width)}

  def temp_mb(stack):
    loss = lambda x, p: jnp.sum(stack(x, p) ** 2)
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(f32(batch, width), p).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20

  plain = temp_mb(_plain_stack)
  lean = temp_mb(lambda x, p: kernels.fused_residual_stack(x, p, impl="xla"))
  activation_mb = n * batch * width * 4 / 2**20  # one [batch, width] array per block
  assert lean < 0.35 * plain, (lean, plain)
  assert lean < 8 * activation_mb, (lean, activation_mb)


def test_bad_unroll_is_rejected():
  x, params = _inputs(4)
  for bad in (0, -1, 1.5, "2"):
    with pytest.raises(ValueError, match="unroll"):
      kernels.fused_residual_stack(x, params, impl="xla", unroll=bad)


def test_bfloat16_matmuls_still_match_the_plain_scan():
  x, params = _inputs(16, seed=2)
  old = lambda x, p: jax.lax.scan(
      lambda h, q: (rb.residual_block_reference(h, q, jnp.bfloat16), None), x, p)[0]
  new = lambda x, p: kernels.fused_residual_stack(x, p, impl="xla", matmul_dtype=jnp.bfloat16)
  (_, g_old), y_old = _value_and_grads(old, x, params)
  (_, g_new), y_new = _value_and_grads(new, x, params)
  # Same bf16 roundings in the same order on the forward; the backward recomputes LayerNorm in
  # f32 from the saved f32 matmul outputs, so both agree to f32 rounding of bf16-valued terms.
  np.testing.assert_allclose(np.asarray(y_new), np.asarray(y_old), rtol=0, atol=1e-5)
  eps_bf16 = float(jnp.finfo(jnp.bfloat16).eps)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(b), np.asarray(a), rtol=0,
      atol=4 * eps_bf16 * float(np.max(np.abs(np.asarray(a))))), g_old, g_new)
