"""Widths below the default tiles (16, 32) run through the Pallas path with default configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels


@pytest.mark.parametrize("width", [16, 32])
def test_small_width_stack_matches_reference(width):
  k = jax.random.split(jax.random.PRNGKey(width), 3)
  x = jax.random.normal(k[0], (5, width))
  p = {"w": 0.2 * jax.random.normal(k[1], (2, 4, width, width)),
       "b": 0.1 * jax.random.normal(k[2], (2, 4, width)),
       "scale": jnp.ones((2, 4, width)), "offset": jnp.zeros((2, 4, width))}

  def grads(impl):
    f = lambda x, p: jnp.sum(jnp.sin(kernels.fused_residual_stack(x, p, impl=impl)))
    return jax.value_and_grad(f, argnums=(0, 1))(x, p)

  got, want = grads("interpret"), grads("xla")
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
