"""Residual trunk structure, initialisation, compile time flat in depth, rematerialisation."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels
from deepcrl_core import networks as nets
from tests.conftest import assert_close_to_rounding, assert_compile_flat_in_depth


def _trunk(depth, width=32, out=8, remat=False, impl="xla"):
  return hk.without_apply_rng(hk.transform(
      lambda x: nets.ResidualTrunk(depth, width, out, kernel_impl=impl, remat=remat,
                                   name="trunk")(x)))


def test_trunk_parameters_follow_the_published_architecture():
  depth, width = 12, 32
  params = _trunk(depth, width).init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))
  p = params["trunk"]
  assert p["blocks_w"].shape == (depth // 4, 4, width, width)
  assert p["blocks_b"].shape == p["blocks_scale"].shape == (depth // 4, 4, width)
  np.testing.assert_array_equal(p["blocks_b"], 0)
  np.testing.assert_array_equal(p["blocks_scale"], 1)
  np.testing.assert_array_equal(p["blocks_offset"], 0)
  assert params["trunk/input"]["w"].shape == (5, width)
  assert params["trunk/output"]["w"].shape == (width, 8)
  # Dense layers = input + depth + output.
  n_dense = 1 + p["blocks_w"].shape[0] * 4 + 1
  assert n_dense == depth + 2
  # Variance scaling 1/3, fan_in, uniform: bound sqrt(1/fan_in), variance 1/(3 fan_in).
  w = np.asarray(p["blocks_w"])
  assert np.abs(w).max() <= np.sqrt(1.0 / width) + 1e-7
  assert w.var() == pytest.approx(1.0 / (3 * width), rel=0.05)
  assert np.abs(np.asarray(params["trunk/input"]["w"])).max() <= np.sqrt(1 / 5) + 1e-7


def test_stacked_block_weights_are_haikus_uniform_draw():
  """The block stack is drawn flat and reshaped (it compiles faster with the CPU fusion emitters
  off: profiling/compile_time.py): the same numbers as ``hk.initializers.RandomUniform`` on the
  4-D shape."""
  limit = np.sqrt(1.0 / 16)

  def draw(init):
    return hk.transform(lambda: hk.get_parameter("w", (2, 4, 16, 16), init=init)).init(
        jax.random.PRNGKey(7))["~"]["w"]

  np.testing.assert_array_equal(draw(nets._stacked_uniform(16)),
                                draw(hk.initializers.RandomUniform(-limit, limit)))


def test_trunk_matches_a_hand_written_forward_pass():
  depth, width = 8, 16
  t = _trunk(depth, width, out=3)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 6))
  params = t.init(jax.random.PRNGKey(0), x)
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(2), a.shape),
                        params)  # non-trivial LN params and biases

  def ln(h, s, o):
    m = h.mean(-1, keepdims=True)
    v = ((h - m) ** 2).mean(-1, keepdims=True)
    return (h - m) / np.sqrt(v + 1e-5) * s + o

  swish = lambda h: h / (1 + np.exp(-h))
  P = jax.tree.map(np.asarray, params)
  h = np.asarray(x) @ P["trunk/input"]["w"] + P["trunk/input"]["b"]
  h = swish(ln(h, P["trunk/input_ln"]["scale"], P["trunk/input_ln"]["offset"]))
  b = P["trunk"]
  for blk in range(depth // 4):
    skip = h
    for layer in range(4):
      h = h @ b["blocks_w"][blk, layer] + b["blocks_b"][blk, layer]
      h = swish(ln(h, b["blocks_scale"][blk, layer], b["blocks_offset"][blk, layer]))
    h = h + skip
  out = h @ P["trunk/output"]["w"] + P["trunk/output"]["b"]
  np.testing.assert_allclose(t.apply(params, x), out, rtol=2e-4, atol=2e-5)


def test_depth_must_be_a_multiple_of_four():
  with pytest.raises(ValueError, match="multiple of 4"):
    _trunk(6).init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))


def test_compile_time_is_flat_in_depth():
  assert_compile_flat_in_depth(lambda depth: _trunk(depth, width=64, out=16))


@pytest.mark.parametrize("policy", ["block", "nested"])
def test_remat_gives_identical_gradients(policy):
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 5))
  plain, remat = _trunk(32), _trunk(32, remat=policy)  # 8 blocks: nested groups of 2 or 4
  params = plain.init(jax.random.PRNGKey(0), x)
  grad = lambda t: jax.jit(jax.grad(lambda p: jnp.sum(t.apply(p, x) ** 2)))(params)
  g1, g2 = grad(plain), grad(remat)
  # Same math, possibly another summation order: float32 rounding of depth x width sums.
  jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=32 * 32), g1, g2)
  # ... and a real difference would be caught: one block's weights perturbed by 1% of their scale.
  w = params["trunk"]["blocks_w"]
  noise = 1e-2 * jnp.std(w) * jax.random.normal(jax.random.PRNGKey(4), w.shape[1:])
  bumped = dict(params, trunk=dict(params["trunk"], blocks_w=w.at[3].add(noise)))
  g3 = jax.jit(jax.grad(lambda p: jnp.sum(remat.apply(p, x) ** 2)))(bumped)
  with pytest.raises(AssertionError):
    jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=32 * 32), g1, g3)


def _activation_mb(depth, remat, batch=4096, width=256):
  """XLA's temporary memory of the block stack's gradient (params and grads excluded)."""
  n = depth // 4
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  p = {"w": f32(n, 4, width, width), "b": f32(n, 4, width), "scale": f32(n, 4, width),
       "offset": f32(n, 4, width)}
  loss = lambda x, p: jnp.sum(kernels.fused_residual_stack(x, p, impl="xla", remat=remat) ** 2)
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(f32(batch, width), p).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def test_rematerialisation_keeps_activation_memory_nearly_flat_in_depth():
  none = {d: _activation_mb(d, False) for d in (64, 256)}
  block = {d: _activation_mb(d, True) for d in (64, 256)}
  nested = {d: _activation_mb(d, "nested") for d in (64, 256)}
  assert none[256] > 3 * none[64]              # without remat: linear in depth
  # Per block: the XLA path without remat keeps 5 arrays per block (input + 4 matmul outputs),
  # with it 1.
  assert block[256] < 0.3 * none[256]
  assert nested[256] < 1.5 * nested[64], nested  # nested: depth 64 -> 256 costs < 1.5x


def test_actor_log_std_is_squashed_into_range():
  spec = nets.NetworkSpec(state_size=3, goal_size=2, action_size=4, actor_depth=4,
                          critic_depth=4, width=16, repr_dim=8, kernel_impl="xla")
  networks = nets.make_networks(spec)
  actor_params, critic_params = nets.init_params(networks, jax.random.PRNGKey(0))
  obs = 100.0 * jax.random.normal(jax.random.PRNGKey(1), (64, 5))
  mean, log_std = networks.actor.apply(actor_params, obs)
  assert mean.shape == log_std.shape == (64, 4)
  assert float(log_std.min()) >= nets.LOG_STD_MIN and float(log_std.max()) <= nets.LOG_STD_MAX
  phi, psi = networks.critic.apply(critic_params, obs[:, :3], mean, obs[:, 3:])
  assert phi.shape == psi.shape == (64, 8)
  # The goal encoder sees only the goal: changing the state leaves psi unchanged.
  _, psi2 = networks.critic.apply(critic_params, obs[:, :3] + 1.0, mean, obs[:, 3:])
  np.testing.assert_array_equal(psi, psi2)
