"""The README's plain-JAX example: kernels dropped into a hand-written contrastive MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import deepcrl_kernels as kernels

# --- begin README example (kernels/README.md, "Dropping the kernels into your own network") ---


def init(key, in_dim, width, n_blocks, out_dim):
  k_in, k_blocks, k_out = jax.random.split(key, 3)
  return {
      "w_in": jax.random.normal(k_in, (in_dim, width)) / jnp.sqrt(in_dim),
      "blocks": {
          "w": jax.random.normal(k_blocks, (n_blocks, 4, width, width)) / jnp.sqrt(width),
          "b": jnp.zeros((n_blocks, 4, width)),
          "scale": jnp.ones((n_blocks, 4, width)),
          "offset": jnp.zeros((n_blocks, 4, width)),
      },
      "w_out": jax.random.normal(k_out, (width, out_dim)) / jnp.sqrt(width),
  }


def encoder(params, x, impl="auto"):
  h = jax.nn.swish(x @ params["w_in"])
  h = kernels.fused_residual_stack(h, params["blocks"], impl=impl)
  return h @ params["w_out"]


def contrastive_loss(params, states, goals, impl="auto"):
  phi = encoder(params["sa"], states, impl)
  psi = encoder(params["g"], goals, impl)
  loss, aux = kernels.infonce_loss(phi, psi, energy="l2", impl=impl)
  return loss, aux["accuracy"]

# --- end README example ---


def _train(impl, steps=3, lr=0.05):
  k_sa, k_g, k_s = jax.random.split(jax.random.PRNGKey(0), 3)
  params = {"sa": init(k_sa, 6, 64, 1, 16), "g": init(k_g, 4, 64, 1, 16)}
  states = jax.random.normal(k_s, (24, 6))
  goals = states[:, :4] + 0.1  # goals predictable from states: the loss can fall

  @jax.jit
  def step(params):
    (loss, acc), grads = jax.value_and_grad(contrastive_loss, has_aux=True)(
        params, states, goals, impl)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads), loss, acc

  losses = []
  for _ in range(steps):
    params, loss, _ = step(params)
    losses.append(float(loss))
  return params, np.array(losses)


def test_readme_example_trains_the_same_with_interpret_and_xla():
  params_k, losses_k = _train("interpret")
  params_x, losses_x = _train("xla")
  np.testing.assert_allclose(losses_k, losses_x, rtol=1e-4)
  assert losses_k[-1] < losses_k[0]
  for got, want in zip(jax.tree.leaves(params_k), jax.tree.leaves(params_x)):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_readme_matches_this_test():
  import pathlib  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  readme = (pathlib.Path(kernels.__file__).parent / "README.md").read_text()
  for fn in (init, encoder, contrastive_loss):
    src = inspect.getsource(fn).strip()
    assert src in readme, f"kernels/README.md is out of date with {fn.__name__}"
