"""TD3 (Fujimoto et al. 2018, arXiv:1802.09477) for goal reaching, with hindsight experience
replay by default, as JaxGCRL's TD3(+HER) (github.com/MichalBortkiewicz/JaxGCRL,
``jaxgcrl/agents/td3``).

Networks (:func:`deepcrl_core.networks.make_trunk`): a deterministic actor
``mu(s, g) = tanh(trunk(s, g))`` and the twin critics of :mod:`deepcrl_core.agents.sac`, each
with a Polyak-averaged target copy. One SGD step on a :class:`~deepcrl_core.agents.base.TDBatch`:

* critic (every step): ``a' = clip(mu'(s', g) + clip(N(0, smoothing_noise), +-smoothing_clip),
  -1, 1)`` (target policy smoothing), ``y = r + discount * min_i Q'_i(s', g, a')``, loss
  ``0.5 * mean_i (Q_i - y)^2`` over the valid rows (clipped double Q-learning);
* actor and both targets only every ``td3.policy_delay`` gradient steps (delayed policy updates,
  on the steps where ``grad_steps % policy_delay == 0``): actor loss ``-mean Q_1(s, g, mu(s, g))``
  on the critic just updated (the TD3 paper's order; JaxGCRL differentiates through the critic
  before the step), then ``theta' <- (1 - tau) theta' + tau theta`` for the actor and the
  critics (JaxGCRL blends the target actor from the online one instead; here each target
  follows its own online network). On the other steps the actor loss is evaluated (reported)
  but not applied.

Exploration (collection): ``clip(mu(s, g) + clip(N(0, exploration_noise), +-exploration_clip),
-1, 1)``; evaluation uses ``mu`` itself. Defaults and sources: the config schema (``td3.*``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from deepcrl_core import networks as nets
from deepcrl_core import replay
from deepcrl_core.agents import base
from deepcrl_core.agents import sac


class TD3State(NamedTuple):
  actor_params: Any
  critic_params: Any
  target_actor_params: Any
  target_critic_params: Any
  actor_opt_state: Any
  critic_opt_state: Any
  key: jax.Array
  grad_steps: jax.Array  # [] int32


def make_deterministic_actor(spec: nets.NetworkSpec) -> hk.Transformed:
  """``apply(params, obs) -> tanh(trunk(obs))`` in ``[-1, 1]^action_size``."""
  return hk.without_apply_rng(hk.transform(
      lambda obs: jnp.tanh(nets.make_trunk(spec, spec.actor_depth, spec.action_size,
                                           "actor")(obs))))


def clipped_noise(key, shape, std: float, clip: float):
  return jnp.clip(std * jax.random.normal(key, shape), -clip, clip)


class TD3Agent(base.Agent):
  """TD3 (+HER) on the residual trunk."""

  name = "td3"

  def __init__(self, spec: nets.NetworkSpec, *, actor_lr: float, critic_lr: float,
               discount: float, tau: float, policy_delay: int, smoothing_noise: float,
               smoothing_clip: float, exploration_noise: float, exploration_clip: float,
               her: bool, her_ratio: float, her_offsets: str):
    self.spec = spec
    self.actor = make_deterministic_actor(spec)
    self.critic = sac.make_twin_q(spec)
    self.discount, self.tau, self.policy_delay = discount, tau, int(policy_delay)
    self.smoothing_noise, self.smoothing_clip = smoothing_noise, smoothing_clip
    self.exploration_noise, self.exploration_clip = exploration_noise, exploration_clip
    self.her, self.her_ratio, self.her_offsets = her, her_ratio, her_offsets
    self.actor_opt = optax.adam(actor_lr)
    self.critic_opt = optax.adam(critic_lr)

  @property
  def networks(self):
    return {"actor": self.actor, "critic": self.critic}

  def init(self, key) -> TD3State:
    key, k_actor, k_critic = jax.random.split(key, 3)
    s = self.spec
    actor_params = self.actor.init(k_actor, jnp.zeros((1, s.state_size + s.goal_size)))
    critic_params = sac.init_twin_q(self.critic, s, k_critic)
    return TD3State(
        actor_params=actor_params, critic_params=critic_params,
        # own buffers: a donated state must not hold one buffer twice
        target_actor_params=jax.tree.map(jnp.copy, actor_params),
        target_critic_params=jax.tree.map(jnp.copy, critic_params),
        actor_opt_state=self.actor_opt.init(actor_params),
        critic_opt_state=self.critic_opt.init(critic_params),
        key=key, grad_steps=jnp.zeros((), jnp.int32))

  def make_sampler(self, config, env) -> replay.Sampler:
    """Future goals with ``her.offsets``, mixed with the original goals (``her.ratio``)."""
    return base.her_sampler(config, env, enabled=self.her, ratio=self.her_ratio,
                            offsets=self.her_offsets)

  def td_target(self, target_actor_params, target_critic_params, batch: base.TDBatch, key):
    """``r + discount * min_i Q'_i(s', g, a')`` with the smoothed target action ``a'``."""
    next_action = self.actor.apply(target_actor_params, batch.next_obs)
    next_action = jnp.clip(next_action + clipped_noise(key, next_action.shape,
                                                       self.smoothing_noise, self.smoothing_clip),
                           -1.0, 1.0)
    next_q = self.critic.apply(target_critic_params, batch.next_state, next_action, batch.goal)
    return jax.lax.stop_gradient(batch.reward + self.discount * jnp.min(next_q, axis=-1))

  def sgd_step(self, ts: TD3State, batch: base.TDBatch):
    key, k_smooth = jax.random.split(ts.key)
    target = self.td_target(ts.target_actor_params, ts.target_critic_params, batch, k_smooth)

    def critic_loss(critic_params):
      q = self.critic.apply(critic_params, batch.state, batch.action, batch.goal)
      return base.td_critic_loss(q, target, batch.mask), q

    (c_loss, q), critic_grads = jax.value_and_grad(critic_loss, has_aux=True)(ts.critic_params)
    updates, critic_opt_state = self.critic_opt.update(critic_grads, ts.critic_opt_state)
    critic_params = optax.apply_updates(ts.critic_params, updates)

    def actor_loss(actor_params):
      action = self.actor.apply(actor_params, batch.obs)
      return -jnp.mean(self.critic.apply(critic_params, batch.state, action, batch.goal)[:, 0])

    def delayed(_):
      a_loss, grads = jax.value_and_grad(actor_loss)(ts.actor_params)
      updates, opt_state = self.actor_opt.update(grads, ts.actor_opt_state)
      actor_params = optax.apply_updates(ts.actor_params, updates)
      return (a_loss, actor_params, opt_state,
              base.polyak(ts.target_actor_params, actor_params, self.tau),
              base.polyak(ts.target_critic_params, critic_params, self.tau))

    def skipped(_):
      return (actor_loss(ts.actor_params), ts.actor_params, ts.actor_opt_state,
              ts.target_actor_params, ts.target_critic_params)

    update_actor = ts.grad_steps % self.policy_delay == 0
    a_loss, actor_params, actor_opt_state, target_actor, target_critic = jax.lax.cond(
        update_actor, delayed, skipped, None)
    metrics = {
        "critic_loss": c_loss, "actor_loss": a_loss, "q": base.masked_mean(q, batch.mask),
        "td_target": base.masked_mean(target, batch.mask),
        "reward": base.masked_mean(batch.reward, batch.mask), "td_valid": jnp.mean(batch.mask)}
    new = TD3State(actor_params, critic_params, target_actor, target_critic, actor_opt_state,
                   critic_opt_state, key, ts.grad_steps + 1)
    return new, metrics

  def policy(self, actor_params, obs, key=None):
    """``mu(s, g)`` without ``key``; with it, plus clipped Gaussian exploration noise."""
    action = self.actor.apply(actor_params, obs)
    if key is None:
      return action
    noise = clipped_noise(key, action.shape, self.exploration_noise, self.exploration_clip)
    return jnp.clip(action + noise, -1.0, 1.0)


def build(config, sizes) -> TD3Agent:
  s = config.td3
  return TD3Agent(base.network_spec(config, sizes), actor_lr=s.actor_lr, critic_lr=s.critic_lr,
                  discount=s.discount, tau=s.tau, policy_delay=s.policy_delay,
                  smoothing_noise=s.smoothing_noise, smoothing_clip=s.smoothing_clip,
                  exploration_noise=s.exploration_noise, exploration_clip=s.exploration_clip,
                  her=config.her.enabled, her_ratio=config.her.ratio,
                  her_offsets=config.her.offsets)
