"""Soft actor-critic (Haarnoja et al. 2018, arXiv:1812.05905) for goal reaching, with hindsight
experience replay (HER, Andrychowicz et al. 2017) by default, as JaxGCRL's SAC(+HER)
(github.com/MichalBortkiewicz/JaxGCRL, ``jaxgcrl/agents/sac``, which uses brax's SAC losses).

Networks (all :func:`deepcrl_core.networks.make_trunk`, so ``network.*`` applies): the CRL
tanh-Gaussian actor ``pi(a | s, g)`` (``network.actor_depth``) and twin critics
``Q_i(s, g, a)`` (two trunks of ``network.critic_depth`` with one output each), with Polyak
-averaged target critics. One SGD step on a :class:`~deepcrl_core.agents.base.TDBatch`:

* critic: ``y = r + discount * (min_i Q'_i(s', a') - alpha * log pi(a' | s', g))``,
  ``a' ~ pi(. | s', g)`` (current actor, target critics); loss ``0.5 * mean_i (Q_i - y)^2`` over
  the rows whose next state is stored (:class:`TDBatch` ``mask``);
* actor: ``mean(alpha * log pi(a | s, g) - min_i Q_i(s, g, a))``, ``a ~ pi`` (critics before
  this step's update, as brax);
* temperature: ``mean(alpha * stop_grad(-log pi - target_entropy))`` on the actor's samples,
  ``target_entropy = -sac.target_entropy_scale * action_size``;
* targets: ``Q' <- (1 - tau) Q' + tau Q`` after every step.

The tanh log-density is the exact one (brax's ``NormalTanhDistribution``). Defaults and their
sources are in the config schema (``sac.*``); HER settings in ``her.*``.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from deepcrl_core import networks as nets
from deepcrl_core import replay
from deepcrl_core.agents import base


class SACState(NamedTuple):
  actor_params: Any
  critic_params: Any
  target_critic_params: Any
  log_alpha: jax.Array
  actor_opt_state: Any
  critic_opt_state: Any
  alpha_opt_state: Any
  key: jax.Array
  grad_steps: jax.Array  # [] int32


def make_twin_q(spec: nets.NetworkSpec) -> hk.Transformed:
  """``apply(params, state, action, goal) -> [B, 2]``: two residual-trunk critics of
  ``concat(state, goal, action)``."""

  def q_fn(state, action, goal):
    x = jnp.concatenate([state, goal, action], axis=-1)
    return jnp.stack([nets.make_trunk(spec, spec.critic_depth, 1, f"q{i}")(x)[:, 0]
                      for i in (1, 2)], axis=-1)

  return hk.without_apply_rng(hk.transform(q_fn))


def init_twin_q(q: hk.Transformed, spec: nets.NetworkSpec, key):
  return q.init(key, jnp.zeros((1, spec.state_size)), jnp.zeros((1, spec.action_size)),
                jnp.zeros((1, spec.goal_size)))


class SACAgent(base.Agent):
  """SAC (+HER) on the residual trunk."""

  name = "sac"

  def __init__(self, spec: nets.NetworkSpec, *, actor_lr: float, critic_lr: float,
               alpha_lr: float, discount: float, tau: float, target_entropy: float,
               her: bool, her_ratio: float, her_offsets: str):
    self.spec = spec
    # The CRL actor (tanh-Gaussian, log std squashed into [-5, 2]); its critic part is unused.
    self.actor = nets.make_networks(spec).actor
    self.critic = make_twin_q(spec)
    self.discount, self.tau, self.target_entropy = discount, tau, target_entropy
    self.her, self.her_ratio, self.her_offsets = her, her_ratio, her_offsets
    self.actor_opt = optax.adam(actor_lr)
    self.critic_opt = optax.adam(critic_lr)
    self.alpha_opt = optax.adam(alpha_lr)

  @property
  def networks(self):
    return {"actor": self.actor, "critic": self.critic}

  def init(self, key) -> SACState:
    key, k_actor, k_critic = jax.random.split(key, 3)
    s = self.spec
    actor_params = self.actor.init(k_actor, jnp.zeros((1, s.state_size + s.goal_size)))
    critic_params = init_twin_q(self.critic, s, k_critic)
    log_alpha = jnp.zeros((), jnp.float32)
    return SACState(
        actor_params=actor_params, critic_params=critic_params,
        # own buffers: a donated state must not hold one buffer twice
        target_critic_params=jax.tree.map(jnp.copy, critic_params), log_alpha=log_alpha,
        actor_opt_state=self.actor_opt.init(actor_params),
        critic_opt_state=self.critic_opt.init(critic_params),
        alpha_opt_state=self.alpha_opt.init(log_alpha),
        key=key, grad_steps=jnp.zeros((), jnp.int32))

  def make_sampler(self, config, env) -> replay.Sampler:
    """Future goals with ``her.offsets``, mixed with the original goals (``her.ratio``)."""
    return base.her_sampler(config, env, enabled=self.her, ratio=self.her_ratio,
                            offsets=self.her_offsets)

  def _sample(self, actor_params, obs, key):
    mean, log_std = self.actor.apply(actor_params, obs)
    return nets.tanh_gaussian_sample(key, mean, log_std, "exact")

  def td_target(self, actor_params, target_critic_params, log_alpha, batch: base.TDBatch,
                key):
    """``r + discount * (min_i Q'_i(s', a') - alpha log pi(a' | s', g))``, ``a' ~ pi``."""
    next_action, next_log_prob = self._sample(actor_params, batch.next_obs, key)
    next_q = self.critic.apply(target_critic_params, batch.next_state, next_action, batch.goal)
    next_v = jnp.min(next_q, axis=-1) - jnp.exp(log_alpha) * next_log_prob
    return jax.lax.stop_gradient(batch.reward + self.discount * next_v)

  def sgd_step(self, ts: SACState, batch: base.TDBatch):
    key, k_actor, k_next = jax.random.split(ts.key, 3)
    alpha = jnp.exp(ts.log_alpha)
    target = self.td_target(ts.actor_params, ts.target_critic_params, ts.log_alpha, batch,
                            k_next)

    def critic_loss(critic_params):
      q = self.critic.apply(critic_params, batch.state, batch.action, batch.goal)
      return base.td_critic_loss(q, target, batch.mask), q

    def actor_loss(actor_params):
      action, log_prob = self._sample(actor_params, batch.obs, k_actor)
      q = self.critic.apply(ts.critic_params, batch.state, action, batch.goal)
      return jnp.mean(alpha * log_prob - jnp.min(q, axis=-1)), log_prob

    (c_loss, q), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(ts.critic_params)
    (a_loss, log_prob), actor_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        ts.actor_params)
    log_prob = jax.lax.stop_gradient(log_prob)

    def alpha_loss(log_alpha):
      return jnp.mean(jnp.exp(log_alpha) * (-log_prob - self.target_entropy))

    al_loss, alpha_grad = jax.value_and_grad(alpha_loss)(ts.log_alpha)

    updates, critic_opt_state = self.critic_opt.update(critic_grads, ts.critic_opt_state)
    critic_params = optax.apply_updates(ts.critic_params, updates)
    updates, actor_opt_state = self.actor_opt.update(actor_grads, ts.actor_opt_state)
    actor_params = optax.apply_updates(ts.actor_params, updates)
    updates, alpha_opt_state = self.alpha_opt.update(alpha_grad, ts.alpha_opt_state)
    log_alpha = optax.apply_updates(ts.log_alpha, updates)
    target_critic_params = base.polyak(ts.target_critic_params, critic_params, self.tau)

    metrics: Dict[str, jax.Array] = {
        "critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": al_loss,
        "alpha": jnp.exp(log_alpha), "entropy": -jnp.mean(log_prob),
        "q": base.masked_mean(q, batch.mask), "td_target": base.masked_mean(target, batch.mask),
        "reward": base.masked_mean(batch.reward, batch.mask), "td_valid": jnp.mean(batch.mask)}
    new = SACState(actor_params, critic_params, target_critic_params, log_alpha,
                   actor_opt_state, critic_opt_state, alpha_opt_state, key, ts.grad_steps + 1)
    return new, metrics

  def policy(self, actor_params, obs, key=None):
    """``tanh(u)``, ``u ~ N(mean, std)`` with ``key``; ``tanh(mean)`` without."""
    mean, log_std = self.actor.apply(actor_params, obs)
    if key is None:
      return nets.deterministic_action(mean)
    return nets.tanh_gaussian_sample(key, mean, log_std)[0]


def build(config, sizes) -> SACAgent:
  s = config.sac
  return SACAgent(base.network_spec(config, sizes), actor_lr=s.actor_lr, critic_lr=s.critic_lr,
                  alpha_lr=s.alpha_lr, discount=s.discount, tau=s.tau,
                  target_entropy=-s.target_entropy_scale * sizes.action_size,
                  her=config.her.enabled, her_ratio=config.her.ratio,
                  her_offsets=config.her.offsets)
