"""Contrastive RL (CRL; Eysenbach et al. 2022, scaled by Wang et al. 2025): an InfoNCE critic
``phi(s, a) . psi(g)`` trained on future goals, and a tanh-Gaussian actor that maximises it
with an entropy bonus whose temperature is tuned to a target entropy.

One SGD step = actor and alpha on the minibatch, then the critic on the same minibatch, as in
github.com/wang-kevin3290/scaling-crl. Settings: ``loss.*`` and ``optim.*`` (the paper's).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from deepcrl_core import losses as L
from deepcrl_core import networks as nets
from deepcrl_core import replay
from deepcrl_core.agents import base


class TrainingState(NamedTuple):
  actor_params: Any
  critic_params: Any
  log_alpha: jax.Array
  actor_opt_state: Any
  critic_opt_state: Any
  alpha_opt_state: Any
  key: jax.Array
  grad_steps: jax.Array  # [] int32


def to_transitions(batch: replay.Relabelled, state_size: int) -> L.Transitions:
  return L.Transitions(state=batch.obs[:, :state_size], action=batch.action,
                       goal=batch.obs[:, state_size:])


class CRLAgent(base.Agent):
  """Bundles the networks, optimisers and loss settings of one CRL run (``networks`` is the
  :class:`deepcrl_core.networks.Networks` with ``actor`` and ``critic``)."""

  name = "crl"

  def __init__(self, networks: nets.Networks, loss_cfg: L.LossConfig, actor_lr: float,
               critic_lr: float, alpha_lr: float):
    self.networks = networks
    self.loss_cfg = loss_cfg
    self.actor_opt = optax.adam(actor_lr)
    self.critic_opt = optax.adam(critic_lr)
    self.alpha_opt = optax.adam(alpha_lr)

  @property
  def spec(self) -> nets.NetworkSpec:
    return self.networks.spec

  def init(self, key) -> TrainingState:
    key, k_params = jax.random.split(key)
    actor_params, critic_params = nets.init_params(self.networks, k_params)
    log_alpha = jnp.zeros((), jnp.float32)
    return TrainingState(
        actor_params=actor_params, critic_params=critic_params, log_alpha=log_alpha,
        actor_opt_state=self.actor_opt.init(actor_params),
        critic_opt_state=self.critic_opt.init(critic_params),
        alpha_opt_state=self.alpha_opt.init(log_alpha),
        key=key, grad_steps=jnp.zeros((), jnp.int32))

  # --- learning ---------------------------------------------------------------------------

  def make_sampler(self, config, env) -> replay.Sampler:
    """``replay.sampling`` with CRL's geometric goal offsets (``train.gamma``) and the published
    1e-5 self-weight of the windows sampler; batches are :class:`losses.Transitions`."""
    t = config.train
    inner = replay.make_sampler(
        config.replay.sampling, sgd_steps=t.sgd_steps, batch_size=t.batch_size, gamma=t.gamma,
        window_length=config.replay.window_length, goal_indices=env.goal_indices,
        state_size=env.state_size)
    return replay.Sampler(inner.draw,
                          lambda buf, x: to_transitions(inner.batch(buf, x), env.state_size))

  def sgd_step(self, ts: TrainingState, batch: L.Transitions):
    """Actor and alpha first, then the critic, on the same minibatch."""
    grads, metrics, key = self.gradients(ts, batch)
    new = self.apply_gradients(ts, grads, key)
    metrics = {**metrics, "alpha": jnp.exp(new.log_alpha)}
    return new, metrics

  def gradients(self, ts: TrainingState, batch: L.Transitions):
    """``((actor_grads, alpha_grad, critic_grads), metrics, next_key)``: what
    :meth:`sgd_step` computes before its optimiser updates (``profiling/step_split.py`` times
    the two halves apart)."""
    key, k_actor = jax.random.split(ts.key)
    (_, actor_aux), actor_grads = jax.value_and_grad(L.actor_loss, has_aux=True)(
        ts.actor_params, ts.critic_params, ts.log_alpha, self.networks, batch, k_actor,
        self.loss_cfg)
    log_prob = actor_aux.pop("log_prob")
    a_loss, alpha_grad = jax.value_and_grad(L.alpha_loss)(
        ts.log_alpha, log_prob, self.loss_cfg.target_entropy)
    (_, critic_aux), critic_grads = jax.value_and_grad(L.critic_loss, has_aux=True)(
        ts.critic_params, self.networks, batch, self.loss_cfg)
    metrics = {**actor_aux, **critic_aux, "alpha_loss": a_loss}
    return (actor_grads, alpha_grad, critic_grads), metrics, key

  def apply_gradients(self, ts: TrainingState, grads, key) -> TrainingState:
    """The three Adam updates of :meth:`sgd_step` on ``grads`` (from :meth:`gradients`)."""
    actor_grads, alpha_grad, critic_grads = grads
    updates, actor_opt_state = self.actor_opt.update(actor_grads, ts.actor_opt_state)
    actor_params = optax.apply_updates(ts.actor_params, updates)
    updates, alpha_opt_state = self.alpha_opt.update(alpha_grad, ts.alpha_opt_state)
    log_alpha = optax.apply_updates(ts.log_alpha, updates)
    updates, critic_opt_state = self.critic_opt.update(critic_grads, ts.critic_opt_state)
    critic_params = optax.apply_updates(ts.critic_params, updates)
    return TrainingState(actor_params, critic_params, log_alpha, actor_opt_state,
                         critic_opt_state, alpha_opt_state, key, ts.grad_steps + 1)

  # --- acting -----------------------------------------------------------------------------

  def policy(self, actor_params, obs, key=None):
    """Stochastic action when ``key`` is given, else the deterministic ``tanh(mean)``."""
    mean, log_std = self.networks.actor.apply(actor_params, obs)
    if key is None:
      return nets.deterministic_action(mean)
    action, _ = nets.tanh_gaussian_sample(key, mean, log_std)
    return action


def build(config, sizes) -> CRLAgent:
  """CRL from ``config.network``, ``config.loss`` and ``config.optim``."""
  return CRLAgent(nets.make_networks(base.network_spec(config, sizes)),
                  L.loss_config(config, sizes.action_size), config.optim.actor_lr,
                  config.optim.critic_lr, config.optim.alpha_lr)
