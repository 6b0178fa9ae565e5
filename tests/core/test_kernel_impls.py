"""Training through the Pallas kernels (interpreter on CPU) matches the XLA reference."""

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl_core import agent as agent_lib
from deepcrl_core import losses as L
from deepcrl_core import networks as nets
from tests.conftest import assert_close_to_rounding


def _agent(impl):
  # The exact tanh log-density: the published one, log(1 - tanh(u)^2 + 1e-6) in float32, is a
  # step function of u at saturated actions (1 - tanh(u)^2 takes a few float32 values near 1e-7,
  # against the 1e-6), so its float32 gradient jumps when rounding moves u across a step -- a
  # property of that loss, not of the kernels. Measured with the same noise against float64 at
  # these shapes, 8 seeds (profiling/actor_grad_precision.py): the published actor gradient's
  # float32 error reached 1.6e-1 of a leaf's largest entry (XLA and the kernels alike), the
  # exact one's at most 1.6e-6.
  spec = nets.NetworkSpec(state_size=4, goal_size=2, action_size=2, actor_depth=4,
                          critic_depth=8, width=64, repr_dim=16, kernel_impl=impl, remat="block")
  cfg = L.LossConfig(energy="l2", variant="forward", logsumexp_penalty=0.1,
                     target_entropy=-1.0, kernel_impl=impl, tanh_correction="exact")
  return agent_lib.Agent(nets.make_networks(spec), cfg, 3e-4, 3e-4, 3e-4)


def test_gradients_through_interpreted_kernels_match_xla():
  """One gradient of the critic and actor losses: the same to float32 rounding."""
  k_s, k_a, k_g = jax.random.split(jax.random.PRNGKey(0), 3)
  batch = L.Transitions(state=jax.random.normal(k_s, (37, 4)),
                        action=jax.random.uniform(k_a, (37, 2), minval=-1, maxval=1),
                        goal=jax.random.normal(k_g, (37, 2)))
  grads = {}
  for impl in ("xla", "interpret"):
    agent = _agent(impl)
    ts = agent.init(jax.random.PRNGKey(1))
    critic = jax.grad(lambda p: L.critic_loss(p, agent.networks, batch, agent.loss_cfg)[0])
    actor = jax.grad(lambda p: L.actor_loss(p, ts.critic_params, ts.log_alpha, agent.networks,
                                            batch, jax.random.PRNGKey(2), agent.loss_cfg)[0])
    grads[impl] = jax.jit(lambda: (critic(ts.critic_params), actor(ts.actor_params)))()
  jax.tree.map(lambda a, b: assert_close_to_rounding(b, a, terms=8 * 64), grads["xla"],
               grads["interpret"])


def test_sgd_steps_with_interpreted_kernels_match_xla():
  key = jax.random.PRNGKey(0)
  k_s, k_a, k_g = jax.random.split(key, 3)
  batches = L.Transitions(state=jax.random.normal(k_s, (3, 37, 4)),
                          action=jax.random.uniform(k_a, (3, 37, 2), minval=-1, maxval=1),
                          goal=jax.random.normal(k_g, (3, 37, 2)))
  results = {}
  for impl in ("xla", "interpret"):
    agent = _agent(impl)
    ts = agent.init(jax.random.PRNGKey(1))
    ts, metrics = jax.jit(lambda ts, b: jax.lax.scan(agent.sgd_step, ts, b))(ts, batches)
    results[impl] = (ts, metrics)
  (ts_x, m_x), (ts_i, m_i) = results["xla"], results["interpret"]
  # Step 0 starts from the same parameters: its losses agree to float32 rounding.
  for k in ("critic_loss", "actor_loss", "alpha_loss"):
    assert_close_to_rounding(m_i[k][0], m_x[k][0], terms=8 * 64)
  # Later steps follow Adam, whose first updates are +-lr * sign(gradient) per parameter: a
  # gradient entry near zero can change sign between two float32 summation orders and move
  # that parameter by 2 lr, so the trajectories agree to ~lr-sized differences, not rounding.
  for k in ("critic_loss", "actor_loss", "alpha_loss"):
    np.testing.assert_allclose(m_i[k], m_x[k], rtol=1e-3, atol=1e-4, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=4 * 3e-4 * 3),
               (ts_i.actor_params, ts_i.critic_params, ts_i.log_alpha),
               (ts_x.actor_params, ts_x.critic_params, ts_x.log_alpha))
  # The parameters moved: the comparison is not between two untouched inits.
  init = _agent("xla").init(jax.random.PRNGKey(1))
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                       ts_x.critic_params, init.critic_params))
  assert max(moved) > 1e-4
