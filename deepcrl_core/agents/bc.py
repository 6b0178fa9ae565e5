"""Goal-conditioned behaviour cloning (GCBC) and goal-conditioned supervised learning (GCSL,
Ghosh et al. 2021, arXiv:1912.06088): maximum likelihood of the action taken, given the state
and a hindsight goal the trajectory reached later.

Both run in deepcrl's online loop: the replay is collected by the agent's own stochastic policy
(the tanh-Gaussian ``tanh(u)``, ``u ~ N(mean, std)``: the policy's own spread is its
exploration noise; prefill follows ``train.prefill_policy``), relabelled with future states of
the same episode, and the actor -- the CRL tanh-Gaussian actor on the residual trunk -- is
fitted by ``-mean log pi(a | s, g)`` (exact tanh density; the stored action is clipped to
``+-(1 - 1e-6)`` before ``atanh``). They differ in the goal relabelling only:

* ``gcsl``: goals uniformly among the later states of the episode (``d ~ U{1..L}``), as the
  GCSL paper relabels (its Algorithm 1 draws the goal time uniformly after the action's);
* ``gcbc``: goals at geometric offsets ``P(d) ∝ train.gamma^d`` -- CRL's own relabelling, so
  GCBC sees the same (s, a, g) distribution as the CRL critic (the GCBC baseline of JaxGCRL /
  the CRL papers is trained this way), weighting nearby goals more.

Why not a fixed prefill dataset for GCBC: this loop's only data source is the agent's own
replay, and a fixed dataset would make GCBC's result depend on a separately chosen data policy;
with both online, the comparison isolates the offset law. Settings: ``gcbc.lr``, ``gcsl.lr``.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax

from deepcrl_core import losses as L
from deepcrl_core import networks as nets
from deepcrl_core import replay
from deepcrl_core.agents import base
from deepcrl_core.agents import crl

ACTION_CLIP = 1.0 - 1e-6


class BCState(NamedTuple):
  actor_params: Any
  actor_opt_state: Any
  key: jax.Array
  grad_steps: jax.Array  # [] int32


def log_likelihood(mean, log_std, action):
  """``log pi(action)`` of the tanh-Gaussian ``(mean, log_std)`` (exact density), per row."""
  u = jnp.arctanh(jnp.clip(action, -ACTION_CLIP, ACTION_CLIP))
  return nets.tanh_gaussian_log_prob(u, mean, log_std, "exact")


class BCAgent(base.Agent):
  """Maximum-likelihood goal-conditioned policy (``name``: ``gcbc`` or ``gcsl``)."""

  def __init__(self, name: str, spec: nets.NetworkSpec, *, lr: float, offsets: str):
    self.name = name
    self.spec = spec
    self.offsets = offsets
    self.actor = nets.make_networks(spec).actor
    self.opt = optax.adam(lr)

  @property
  def networks(self):
    return {"actor": self.actor}

  def init(self, key) -> BCState:
    key, k_actor = jax.random.split(key)
    s = self.spec
    params = self.actor.init(k_actor, jnp.zeros((1, s.state_size + s.goal_size)))
    return BCState(params, self.opt.init(params), key, jnp.zeros((), jnp.int32))

  def make_sampler(self, config, env) -> replay.Sampler:
    return base.relabel_sampler(
        config, env, offsets=self.offsets, self_weight=0.0, with_next=False,
        to_batch=lambda rel, _: crl.to_transitions(rel, env.state_size))

  def sgd_step(self, ts: BCState, batch: L.Transitions):
    def loss_fn(params):
      mean, log_std = self.actor.apply(params, batch.obs)
      return -jnp.mean(log_likelihood(mean, log_std, batch.action)), (mean, log_std)

    (loss, (mean, log_std)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.actor_params)
    updates, opt_state = self.opt.update(grads, ts.actor_opt_state)
    params = optax.apply_updates(ts.actor_params, updates)
    metrics: Dict[str, jax.Array] = {
        "actor_loss": loss, "log_std": jnp.mean(log_std),
        "action_mse": jnp.mean(jnp.square(nets.deterministic_action(mean) - batch.action))}
    return BCState(params, opt_state, ts.key, ts.grad_steps + 1), metrics

  def policy(self, actor_params, obs, key=None):
    mean, log_std = self.actor.apply(actor_params, obs)
    if key is None:
      return nets.deterministic_action(mean)
    return nets.tanh_gaussian_sample(key, mean, log_std)[0]

  def param_counts(self, state) -> Dict[str, int]:
    return {"actor": nets.param_count(state.actor_params)}


def build_gcbc(config, sizes) -> BCAgent:
  return BCAgent("gcbc", base.network_spec(config, sizes), lr=config.gcbc.lr,
                 offsets="geometric")


def build_gcsl(config, sizes) -> BCAgent:
  return BCAgent("gcsl", base.network_spec(config, sizes), lr=config.gcsl.lr,
                 offsets="uniform")
