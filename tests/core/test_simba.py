"""network.block=simba: the SimbaV2-style hyperspherical trunk (deepcrl_core.networks.SimbaTrunk)."""

import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import networks as nets
from tests.conftest import assert_close_to_rounding, assert_compile_flat_in_depth


def _trunk(depth, width=32, out=8, remat="none", impl="xla"):
  return hk.without_apply_rng(hk.transform(
      lambda x: nets.SimbaTrunk(depth, width, out, kernel_impl=impl, remat=remat,
                                name="trunk")(x)))


def _perturbed_params(t, x, seed=0, noise=0.3):
  """Parameters away from their constant initial values (scalers, alphas, biases)."""
  params = t.init(jax.random.PRNGKey(seed), x)
  keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 64))
  return jax.tree.map(lambda a: a * (1 + noise * jax.random.normal(next(keys), a.shape)) +
                      0.05 * jax.random.normal(next(keys), a.shape), params)


def _numpy_forward(P, x, depth, width):
  """The trunk written out in float64 numpy from the paper's equations."""
  unit = lambda v, axis=-1: v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), 1e-8)
  n = depth // 4
  hidden = 1.0                                # init / scale = sqrt(2/W) / sqrt(2/W)
  alpha_f = (1.0 / (n + 1)) * math.sqrt(width)  # alpha_init / alpha_scale
  out_f = math.sqrt(width)                    # output_init / output_scale
  p = {k: np.asarray(v, np.float64) for k, v in P["trunk"].items()}
  xt = unit(np.concatenate([np.asarray(x, np.float64), np.full((x.shape[0], 1), 3.0)], -1))
  h = unit(p["input_scaler"] * hidden * (xt @ unit(p["input_w"], 0)))
  streams = [h]
  for b in range(n):
    z = h
    for i in range(3):
      z = np.maximum(p["blocks_scaler"][b, i] * hidden * (z @ unit(p["blocks_w"][b, i], 0)), 0)
    z = unit(z @ unit(p["blocks_w"][b, 3], 0))
    h = unit(h + p["blocks_alpha"][b] * alpha_f * (z - h))
    streams.append(h)
  out = p["output_scaler"] * out_f * (h @ unit(p["output_w"], 0)) + p["output_b"]
  return out, streams


def test_simba_matches_a_hand_written_forward_pass_and_keeps_the_stream_on_the_sphere():
  depth, width = 12, 16
  t = _trunk(depth, width, out=5)
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (6, 7))
  params = _perturbed_params(t, x)
  want, streams = _numpy_forward(params, np.asarray(x), depth, width)
  np.testing.assert_allclose(t.apply(params, x), want, rtol=2e-5, atol=2e-5)
  # The residual stream: unit norm after the embedding and after every block.
  for h in streams:
    np.testing.assert_allclose(np.linalg.norm(h, axis=-1), 1.0, atol=1e-12)
  # ... and the implementation's own stream (the blocks' scan) is unit-norm too.
  sc = nets.SimbaScales.for_trunk(depth // 4, width)
  h0 = jnp.asarray(streams[0], jnp.float32)
  blocks = {"w": params["trunk"]["blocks_w"], "scaler": params["trunk"]["blocks_scaler"],
            "alpha": params["trunk"]["blocks_alpha"]}
  h = h0
  block = jax.jit(nets.simba_block, static_argnums=2)
  for b in range(depth // 4):
    h = block(h, jax.tree.map(lambda a: a[b], blocks), sc)
    np.testing.assert_allclose(jnp.linalg.norm(h, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(h, streams[b + 1], atol=1e-5)


def test_simba_parameters_and_initial_scales():
  depth, width = 8, 32
  t = _trunk(depth, width, out=4)
  p = t.init(jax.random.PRNGKey(0), jnp.zeros((1, 5)))["trunk"]
  assert p["blocks_w"].shape == (2, 4, width, width)
  assert p["blocks_scaler"].shape == (2, 3, width)
  assert p["blocks_alpha"].shape == (2, width)
  assert p["input_w"].shape == (6, width)            # + the shift constant's input
  assert "blocks_b" not in p                          # no biases inside (normalised stream)
  np.testing.assert_allclose(p["blocks_scaler"], math.sqrt(2 / width), rtol=1e-6)
  np.testing.assert_allclose(p["blocks_alpha"], 1 / math.sqrt(width), rtol=1e-6)
  sc = nets.SimbaScales.for_trunk(2, width)
  np.testing.assert_allclose(sc.alpha(p["blocks_alpha"]), 1 / 3, rtol=1e-6)  # 1 / (blocks + 1)
  # Outputs start with about unit scale (unit stream . unit weights * sqrt(width)).
  out = t.apply(t.init(jax.random.PRNGKey(0), jnp.zeros((1, 5))),
                jax.random.normal(jax.random.PRNGKey(1), (512, 5)))
  assert 0.2 < float(jnp.std(out)) < 5.0


def test_simba_gradients_are_finite_at_depth_64():
  t = _trunk(64, width=32, out=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 5))
  params = t.init(jax.random.PRNGKey(0), x)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(t.apply(p, x) ** 2)))(params)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  # Every block receives gradient (the first block's weights included).
  first = grads["trunk"]["blocks_w"][0]
  assert float(jnp.max(jnp.abs(first))) > 0


@pytest.mark.parametrize("policy", ["block", "nested"])
def test_simba_remat_gives_the_same_values_and_gradients(policy):
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 5))
  plain, remat = _trunk(32), _trunk(32, remat=policy)   # 8 blocks: nested groups of 2 or 4
  params = _perturbed_params(plain, x)
  f = lambda t: jax.jit(jax.value_and_grad(lambda p: jnp.sum(t.apply(p, x) ** 2)))(params)
  (v1, g1), (v2, g2) = f(plain), f(remat)
  assert_close_to_rounding(v2, v1, terms=32 * 32)
  jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=32 * 32), g1, g2)
  # A real difference would be caught: one block's weights perturbed by 1% of their scale.
  w = params["trunk"]["blocks_w"]
  noise = 1e-2 * jnp.std(w) * jax.random.normal(jax.random.PRNGKey(4), w.shape[1:])
  bumped = dict(params, trunk=dict(params["trunk"], blocks_w=w.at[3].add(noise)))
  g3 = jax.jit(jax.grad(lambda p: jnp.sum(remat.apply(p, x) ** 2)))(bumped)
  with pytest.raises(AssertionError):
    jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=32 * 32), g1, g3)


def test_simba_compile_time_is_flat_in_depth():
  assert_compile_flat_in_depth(lambda depth: _trunk(depth, width=64, out=16))


def test_simba_is_xla_only():
  for impl in ("pallas", "interpret"):
    with pytest.raises(ValueError, match="block=simba has no Pallas kernel"):
      _trunk(4, impl=impl).init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
  # auto (and xla) run, on XLA.
  out = _trunk(4, impl="auto").apply(_trunk(4).init(jax.random.PRNGKey(0), jnp.zeros((1, 3))),
                                     jnp.ones((2, 3)))
  assert out.shape == (2, 8)


def test_make_trunk_honours_the_spec_block():
  spec = nets.NetworkSpec(state_size=3, goal_size=2, action_size=2, actor_depth=4,
                          critic_depth=4, width=16, repr_dim=8, kernel_impl="xla", block="simba")
  networks = nets.make_networks(spec)
  actor_params, critic_params = nets.init_params(networks, jax.random.PRNGKey(0))
  assert "blocks_alpha" in actor_params["actor"]
  assert "blocks_alpha" in critic_params["sa_encoder"]
  assert "blocks_alpha" in critic_params["goal_encoder"]
  bad = nets.NetworkSpec(**{**spec.__dict__, "block": "dense"})
  with pytest.raises(ValueError, match="network.block must be one of"):
    nets.init_params(nets.make_networks(bad), jax.random.PRNGKey(0))


TINY_MRN_SIMBA = ",epochs=2,loss.energy=mrn,network.block=simba,network.repr_dim=16"


def test_the_config_reaches_the_networks_and_the_loss():
  from deepcrl_core import train as train_lib  # pylint: disable=g-import-not-at-top
  from tests.conftest import TINY_RUN, load_config  # pylint: disable=g-import-not-at-top
  c = train_lib.build(load_config("pointmass", TINY_RUN + TINY_MRN_SIMBA))
  assert (c.agent.spec.block, c.agent.spec.energy) == ("simba", "mrn")
  assert c.agent.loss_cfg.energy == "mrn"


@pytest.mark.slow   # 107 s measured on the 2-core machine under a load average of 7
def test_a_tiny_crl_run_with_mrn_and_simba_trains_with_finite_losses(tmp_path):
  from deepcrl_core import train as train_lib  # pylint: disable=g-import-not-at-top
  from tests.conftest import TINY_RUN, load_config  # pylint: disable=g-import-not-at-top
  config = load_config("pointmass", TINY_RUN + TINY_MRN_SIMBA)
  rows = train_lib.train(config, str(tmp_path), log_fn=lambda s: None)
  assert len(rows) == 2
  for row in rows:
    for key in ("critic_loss", "actor_loss"):
      assert np.isfinite(row[key]), (key, row)
