"""The agent interface every algorithm implements, and what they share (collection, evaluation,
network specs, the relabelled minibatches of off-policy TD learning).

An agent is built once per run from the config (:func:`deepcrl_core.agents.build`) and is then
used only through this interface by training, evaluation, checkpoints and the profilers:

* ``init(key) -> state``: a ``NamedTuple`` training state holding at least ``key`` (the run's
  PRNG key, advanced by the training loop) and ``grad_steps`` (``[]`` int32); a checkpoint is
  that pytree, so its field names are the checkpoint layout.
* ``make_sampler(config, env) -> replay.Sampler``: how one training step draws its
  ``train.sgd_steps`` minibatches from replay, already in the batch type ``sgd_step`` takes
  (the agent decides the goal relabelling: offsets law, hindsight mixing, next states).
* ``sgd_step(state, batch) -> (state, metrics)``: one update on one minibatch (pure; jitted
  and scanned by :mod:`deepcrl_core.train`); ``metrics`` is a dict of scalars with the same
  keys on every step.
* ``policy(params, obs, key=None) -> action``: stochastic (exploration) with a key,
  deterministic (evaluation) without; ``params = policy_params(state)`` is all it needs.
* ``param_counts(state) -> {name: count}`` for the run's log line; ``spec`` the
  :class:`~deepcrl_core.networks.NetworkSpec` every network is built from
  (:func:`deepcrl_core.networks.make_trunk`, so depth, width, remat, kernel_impl and
  matmul_dtype apply to every agent); ``name`` the registry name.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp

from deepcrl_core import networks as nets
from deepcrl_core import replay
from deepcrl_core.envs import Env, State
from deepcrl_core.envs.base import achieved_goal


class Agent(abc.ABC):
  """One learning algorithm behind the interface described in :mod:`deepcrl_core.agents.base`."""

  name: str = ""
  spec: nets.NetworkSpec

  @abc.abstractmethod
  def init(self, key) -> Any:
    """A fresh training state (``NamedTuple`` with ``key`` and ``grad_steps``)."""

  @abc.abstractmethod
  def make_sampler(self, config, env: Env) -> replay.Sampler:
    """The run's minibatch sampler, yielding this agent's batch type."""

  @abc.abstractmethod
  def sgd_step(self, state, batch):
    """``(state, batch) -> (state, metrics)``: one update."""

  @abc.abstractmethod
  def policy(self, params, obs, key=None):
    """Actions in ``[-1, 1]``: stochastic with ``key``, deterministic without."""

  def policy_params(self, state):
    """What :meth:`policy` needs from the training state."""
    return state.actor_params

  def param_counts(self, state) -> Dict[str, int]:
    """Parameter counts by network (for the run's log line)."""
    return {"actor": nets.param_count(state.actor_params),
            "critic": nets.param_count(state.critic_params)}


def network_spec(config, sizes) -> nets.NetworkSpec:
  """The :class:`NetworkSpec` of ``config.network`` for an env of ``sizes`` (``state_size``,
  ``goal_size``, ``action_size``): :func:`deepcrl_core.networks.network_spec`."""
  return nets.network_spec(config, sizes)


def relabel_sampler(config, env: Env, *, offsets: str, self_weight: float, with_next: bool,
                    to_batch: Callable) -> replay.Sampler:
  """A ``replay.sampling`` sampler (:func:`replay.make_sampler`, the O(batch) relabelling) whose
  minibatches go through ``to_batch(relabelled, key)``, with a key of its own per gradient
  step (for e.g. the hindsight mixing of :func:`her_batch`)."""
  t = config.train
  inner = replay.make_sampler(
      config.replay.sampling, sgd_steps=t.sgd_steps, batch_size=t.batch_size, gamma=t.gamma,
      window_length=config.replay.window_length, goal_indices=env.goal_indices,
      state_size=env.state_size, offsets=offsets, self_weight=self_weight, with_next=with_next)

  def draw(state, key):
    k_draw, k_batch = jax.random.split(key)
    return inner.draw(state, k_draw), jax.random.split(k_batch, t.sgd_steps)

  def batch(state, x):
    drawn, key = x
    return to_batch(inner.batch(state, drawn), key)

  return replay.Sampler(draw, batch)


class TDBatch(NamedTuple):
  """A minibatch of off-policy TD learning: ``(s, a, g) -> s'`` with the sparse goal reward.

  ``reward`` is the env's own success test (``env.goal_metrics``) of the next state against
  ``goal``; ``mask`` is 1 where ``next_state`` is the same episode's next step (0 at an
  episode's last stored step, whose successor was not stored: such rows get no TD target, as
  brax's SAC masks truncated transitions). There are no terminal states (goal envs run to the
  time limit), so every valid row bootstraps.
  """
  state: jax.Array       # [B, state_size]
  action: jax.Array      # [B, action_size]
  goal: jax.Array        # [B, goal_size]
  next_state: jax.Array  # [B, state_size]
  reward: jax.Array      # [B]
  mask: jax.Array        # [B]

  @property
  def obs(self):
    return jnp.concatenate([self.state, self.goal], axis=-1)

  @property
  def next_obs(self):
    return jnp.concatenate([self.next_state, self.goal], axis=-1)


def sparse_reward(env: Env, next_state, goal):
  """``1.0`` where ``next_state`` achieves ``goal`` by the env's success test, else ``0.0``."""
  return env.goal_metrics(achieved_goal(next_state, env.goal_indices), goal)["success"]


def her_sampler(config, env: Env, *, enabled: bool, ratio: float, offsets: str
                ) -> replay.Sampler:
  """The off-policy TD agents' sampler: next states, future goals drawn with ``offsets``, mixed
  with the original goals by :func:`her_batch` (``enabled``, ``ratio``)."""
  return relabel_sampler(
      config, env, offsets=offsets, self_weight=0.0, with_next=True,
      to_batch=lambda rel, k: her_batch(env, rel, k, enabled=enabled, ratio=ratio))


def her_batch(env: Env, relabelled: replay.Relabelled, key, *, enabled: bool,
              ratio: float) -> TDBatch:
  """Hindsight experience replay (Andrychowicz et al. 2017) on a relabelled minibatch: each row
  keeps its relabelled future goal with probability ``ratio`` and the env's original goal
  otherwise (``enabled=False``: original goals only); the reward is recomputed for the chosen
  goal by :func:`sparse_reward`."""
  s = env.state_size
  state, future = relabelled.obs[:, :s], relabelled.obs[:, s:]
  if enabled:
    use = jax.random.bernoulli(key, ratio, (state.shape[0],))
    goal = jnp.where(use[:, None], future, relabelled.original_goal)
  else:
    goal = relabelled.original_goal
  return TDBatch(state=state, action=relabelled.action, goal=goal,
                 next_state=relabelled.next_state,
                 reward=sparse_reward(env, relabelled.next_state, goal),
                 mask=(relabelled.horizon > 0).astype(jnp.float32))


def polyak(target, online, tau: float):
  """``(1 - tau) * target + tau * online``, leaf by leaf (soft target update)."""
  return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def masked_mean(x, mask):
  """Mean of ``x [B, ...]`` over the rows where ``mask [B]`` is 1 (0 when none is)."""
  m = mask.reshape(mask.shape + (1,) * (x.ndim - 1))
  count = jnp.maximum(jnp.sum(mask), 1.0) * (x.size // x.shape[0])
  return jnp.sum(m * x) / count


def td_critic_loss(q, target, mask):
  """``0.5 * mean((q_i - target)^2)`` over the twin critics ``q [B, 2]`` and the valid rows."""
  return 0.5 * masked_mean(jnp.square(q - target[:, None]), mask)


# --- acting -----------------------------------------------------------------------------------


def collect(agent: Agent, env: Env, policy_params, env_state, key, num_steps: int,
            random_actions: bool = False):
  """Runs ``num_steps`` steps of a batched, auto-resetting env with the agent's stochastic
  policy (or uniform random actions).

  Returns ``(env_state, replay.Unroll [num_steps, num_envs, ...])`` where each step records the
  observation the action was taken from, the action and that observation's trajectory id.
  """

  def body(state, k):
    if random_actions:
      action = jax.random.uniform(k, (state.obs.shape[0], env.action_size), minval=-1, maxval=1)
    else:
      action = agent.policy(policy_params, state.obs, k)
    record = replay.Unroll(obs=state.obs, action=action, traj_id=state.info["traj_id"])
    return env.step(state, action), record

  return jax.lax.scan(body, env_state, jax.random.split(key, num_steps))


# evaluate_episodes' outputs that are not averaged: the [num_envs, goal_size] vectors and the
# termination cause codes.
PER_EPISODE_ONLY = ("goal", "final_position", "end_cause")


def evaluate_episodes(agent: Agent, eval_env: Env, policy_params, key, num_envs: int,
                      episode_length: int, constrain=lambda tree: tree) -> Dict[str, jax.Array]:
  """Runs one episode per env with the deterministic policy (``eval_env`` must be wrapped by
  :func:`deepcrl_core.envs.wrap_for_eval`) and returns each episode's numbers, ``[num_envs]``:

  ``success`` (1 if the episode reached the goal at least once, else 0), ``time_at_goal``
  (steps within the success radius while the episode is running), ``final_dist`` (distance to
  goal at the last running step), ``episode_length``, ``terminated`` (1 if the env itself
  ended the episode, e.g. the ant's torso left its healthy height range, 0 if it ran to the
  time limit), ``end_cause`` (int32: for a terminated episode ``1 + index`` into the env's
  ``termination_causes`` of what ended it, 0 for an episode that ran to the time limit or an
  env without named causes), and ``[num_envs, goal_size]``:
  ``goal`` (the episode's goal) and ``final_position`` (the state's goal coordinates,
  ``goal_indices``, at the last running step: where the episode ended up), e.g. for a
  breakdown by maze goal cell (:func:`deepcrl_core.analysis.by_goal_cell`). ``constrain``
  may place the batched env state (e.g. shard it over devices).
  """
  start = constrain(eval_env.reset(jax.random.split(key, num_envs)))
  return run_episodes(eval_env, lambda obs, _: agent.policy(policy_params, obs), start,
                      jax.random.fold_in(key, 1), episode_length)


def run_episodes(eval_env: Env, act: Callable, start: State, key,
                 episode_length: int) -> Dict[str, jax.Array]:
  """:func:`evaluate_episodes`' numbers for the episodes that begin at the batched ``start``
  state (of ``eval_env``, wrapped by :func:`deepcrl_core.envs.wrap_for_eval`), acting with
  ``act(obs [num_envs, obs_size], key) -> action [num_envs, action_size]`` (a fresh key each
  step), e.g. a fixed policy (``profiling/episode_ends.py``)."""
  num_envs = start.done.shape[0]
  goal_idx = jnp.asarray(eval_env.goal_indices)

  def body(carry, k):
    state, active, at_goal, reached, final_dist, final_pos, length, terminated, cause = carry
    state = eval_env.step(state, act(state.obs, k))
    success = state.metrics["success"]
    at_goal = at_goal + active * success
    reached = jnp.maximum(reached, active * success)
    final_dist = jnp.where(active > 0, state.metrics["dist"], final_dist)
    final_pos = jnp.where(active[:, None] > 0, state.obs[:, goal_idx], final_pos)
    length = length + active
    # The env's own termination, not the episode wrapper's time limit (its info["truncation"]).
    ends_here = active * state.done * (1.0 - state.info["truncation"])
    terminated = jnp.maximum(terminated, ends_here)
    cause = jnp.where(ends_here > 0, eval_env.termination_cause(state), cause)
    active = active * (1.0 - state.done)
    return (state, active, at_goal, reached, final_dist, final_pos, length, terminated,
            cause), None

  zeros = jnp.zeros(num_envs)
  carry = (start, jnp.ones(num_envs), zeros, zeros, start.metrics["dist"],
           start.obs[:, goal_idx], zeros, zeros, jnp.zeros(num_envs, jnp.int32))
  (_, _, at_goal, reached, final_dist, final_pos, length, terminated, cause), _ = jax.lax.scan(
      body, carry, jax.random.split(key, episode_length))
  return {"success": reached, "time_at_goal": at_goal, "final_dist": final_dist,
          "episode_length": length, "terminated": terminated, "end_cause": cause,
          "goal": start.info["goal"], "final_position": final_pos}


def evaluate(agent: Agent, eval_env: Env, policy_params, key, num_envs: int,
             episode_length: int, constrain=lambda tree: tree) -> Dict[str, jax.Array]:
  """The means over episodes of :func:`evaluate_episodes`' numbers, less the per-episode
  vectors (:data:`PER_EPISODE_ONLY`): ``success`` is the fraction of episodes that reach the
  goal at least once, ``terminated`` the fraction the env ended before the time limit,
  ``time_at_goal``, ``final_dist`` and ``episode_length`` are means."""
  return mean_over_episodes(evaluate_episodes(agent, eval_env, policy_params, key, num_envs,
                                              episode_length, constrain))


def mean_over_episodes(episodes: Dict[str, Any]) -> Dict[str, Any]:
  """:func:`evaluate_episodes`' per-episode numbers averaged (its vectors and cause codes,
  :data:`PER_EPISODE_ONLY`, left out); jax or numpy arrays alike."""
  return {k: v.mean() for k, v in episodes.items() if k not in PER_EPISODE_ONLY}
