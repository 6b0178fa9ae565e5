"""The CRL agent: training state, one SGD step, data collection and evaluation.

Everything here is a pure function of pytrees, jitted by :mod:`deepcrl_core.train`.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax

from deepcrl_core import losses as L
from deepcrl_core import networks as nets
from deepcrl_core import replay
from deepcrl_core.envs import Env


class TrainingState(NamedTuple):
  actor_params: Any
  critic_params: Any
  log_alpha: jax.Array
  actor_opt_state: Any
  critic_opt_state: Any
  alpha_opt_state: Any
  key: jax.Array
  grad_steps: jax.Array  # [] int32


class Agent:
  """Bundles the networks, optimisers and loss settings of one run."""

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

  def sgd_step(self, ts: TrainingState, batch: L.Transitions):
    """Actor and alpha first, then the critic, on the same minibatch."""
    key, k_actor = jax.random.split(ts.key)
    (_, actor_aux), actor_grads = jax.value_and_grad(L.actor_loss, has_aux=True)(
        ts.actor_params, ts.critic_params, ts.log_alpha, self.networks, batch, k_actor,
        self.loss_cfg)
    log_prob = actor_aux.pop("log_prob")
    a_loss, alpha_grad = jax.value_and_grad(L.alpha_loss)(
        ts.log_alpha, log_prob, self.loss_cfg.target_entropy)
    (_, critic_aux), critic_grads = jax.value_and_grad(L.critic_loss, has_aux=True)(
        ts.critic_params, self.networks, batch, self.loss_cfg)

    updates, actor_opt_state = self.actor_opt.update(actor_grads, ts.actor_opt_state)
    actor_params = optax.apply_updates(ts.actor_params, updates)
    updates, alpha_opt_state = self.alpha_opt.update(alpha_grad, ts.alpha_opt_state)
    log_alpha = optax.apply_updates(ts.log_alpha, updates)
    updates, critic_opt_state = self.critic_opt.update(critic_grads, ts.critic_opt_state)
    critic_params = optax.apply_updates(ts.critic_params, updates)

    metrics = {**actor_aux, **critic_aux, "alpha_loss": a_loss, "alpha": jnp.exp(log_alpha)}
    new = TrainingState(actor_params, critic_params, log_alpha, actor_opt_state,
                        critic_opt_state, alpha_opt_state, key, ts.grad_steps + 1)
    return new, metrics

  # --- acting -----------------------------------------------------------------------------

  def policy(self, actor_params, obs, key=None):
    """Stochastic action when ``key`` is given, else the deterministic ``tanh(mean)``."""
    mean, log_std = self.networks.actor.apply(actor_params, obs)
    if key is None:
      return nets.deterministic_action(mean)
    action, _ = nets.tanh_gaussian_sample(key, mean, log_std)
    return action


def collect(agent: Agent, env: Env, actor_params, env_state, key, num_steps: int,
            random_actions: bool = False):
  """Runs ``num_steps`` steps of a batched, auto-resetting env.

  Returns ``(env_state, replay.Unroll [num_steps, num_envs, ...])`` where each step records the
  observation the action was taken from, the action and that observation's trajectory id.
  """

  def body(state, k):
    if random_actions:
      action = jax.random.uniform(k, (state.obs.shape[0], env.action_size), minval=-1, maxval=1)
    else:
      action = agent.policy(actor_params, state.obs, k)
    record = replay.Unroll(obs=state.obs, action=action, traj_id=state.info["traj_id"])
    return env.step(state, action), record

  return jax.lax.scan(body, env_state, jax.random.split(key, num_steps))


def evaluate(agent: Agent, eval_env: Env, actor_params, key, num_envs: int,
             episode_length: int, constrain=lambda tree: tree) -> Dict[str, jax.Array]:
  """Runs one episode per env with the deterministic policy (``eval_env`` must be wrapped by
  :func:`deepcrl_core.envs.wrap_for_eval`).

  Returns ``success`` (fraction of episodes that reach the goal at least once),
  ``time_at_goal`` (steps within the success radius while the episode is running),
  ``final_dist`` (distance to goal at the last running step) and ``episode_length``.
  ``constrain`` may place the batched env state (e.g. shard it over devices).
  """
  state = constrain(eval_env.reset(jax.random.split(key, num_envs)))

  def body(carry, _):
    state, active, at_goal, reached, final_dist, length = carry
    state = eval_env.step(state, agent.policy(actor_params, state.obs))
    success = state.metrics["success"]
    at_goal = at_goal + active * success
    reached = jnp.maximum(reached, active * success)
    final_dist = jnp.where(active > 0, state.metrics["dist"], final_dist)
    length = length + active
    active = active * (1.0 - state.done)
    return (state, active, at_goal, reached, final_dist, length), None

  zeros = jnp.zeros(num_envs)
  carry = (state, jnp.ones(num_envs), zeros, zeros, state.metrics["dist"], zeros)
  (_, _, at_goal, reached, final_dist, length), _ = jax.lax.scan(
      body, carry, None, length=episode_length)
  return {"success": jnp.mean(reached), "time_at_goal": jnp.mean(at_goal),
          "final_dist": jnp.mean(final_dist), "episode_length": jnp.mean(length)}
