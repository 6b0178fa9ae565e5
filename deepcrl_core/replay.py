"""On-device trajectory replay with future-goal relabelling in O(batch).

Storage is a per-env ring over time, time-major: ``obs [capacity, num_envs, obs_size]``,
``action [capacity, num_envs, action_size]``, ``traj_id [capacity, num_envs]``. All envs insert
together (an unroll of ``[T, num_envs, ...]``), so one write position serves every env.
Within an env, stored steps in chronological order have non-decreasing ``traj_id``; equal ids
are one episode.

Relabelling: a transition at chronological step ``t`` gets the goal of the state at ``t + d``
of the same episode, ``P(d) ∝ gamma^d`` for ``d = 1..L`` where ``L`` is the number of later
steps of that episode in the buffer (``L = 0`` -> ``d = 0``, the state's own goal, as in the
published code). ``d`` is drawn by inverting the truncated geometric CDF and ``L`` by a binary
search over ``traj_id``, so sampling costs ``O(batch * log capacity)`` time and ``O(batch)``
memory -- never the ``O(batch x T^2)`` matrix of the published implementation.

Two samplers:

* :func:`sample` -- i.i.d. transitions over (env, step), relabelled; the training default.
* :func:`sample_windows` + :func:`relabel_windows` -- the published scheme: contiguous windows
  of ``window_length`` steps, goals restricted to the window as well as the episode.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class ReplayState(NamedTuple):
  obs: jax.Array        # [capacity, num_envs, obs_size]
  action: jax.Array     # [capacity, num_envs, action_size]
  traj_id: jax.Array    # [capacity, num_envs] int32
  insert_pos: jax.Array  # [] int32: ring index of the next write
  size: jax.Array       # [] int32: stored steps per env (<= capacity)

  @property
  def capacity(self) -> int:
    return self.obs.shape[0]

  @property
  def num_envs(self) -> int:
    return self.obs.shape[1]


class Unroll(NamedTuple):
  """What a collection step records, time-major ``[T, num_envs, ...]``."""
  obs: jax.Array
  action: jax.Array
  traj_id: jax.Array


class Relabelled(NamedTuple):
  """Transitions with future goals: ``obs`` holds ``concat(state, relabelled goal)``."""
  obs: jax.Array          # [B, obs_size]
  action: jax.Array       # [B, action_size]
  offset: jax.Array       # [B] int32: steps from the transition to its goal state (d)
  horizon: jax.Array      # [B] int32: later steps of the episode available (L)


def init(capacity: int, num_envs: int, obs_size: int, action_size: int,
         dtype=jnp.float32) -> ReplayState:
  return ReplayState(
      obs=jnp.zeros((capacity, num_envs, obs_size), dtype),
      action=jnp.zeros((capacity, num_envs, action_size), dtype),
      traj_id=jnp.zeros((capacity, num_envs), jnp.int32),
      insert_pos=jnp.zeros((), jnp.int32),
      size=jnp.zeros((), jnp.int32))


def insert(state: ReplayState, unroll: Unroll) -> ReplayState:
  """Writes ``unroll`` (``[T, num_envs, ...]``, ``T <= capacity``) at the ring position."""
  t = unroll.obs.shape[0]
  cap = state.capacity
  if t > cap:
    raise ValueError(f"unroll of {t} steps does not fit a replay capacity of {cap} steps")
  idx = (state.insert_pos + jnp.arange(t)) % cap
  return ReplayState(
      obs=state.obs.at[idx].set(unroll.obs.astype(state.obs.dtype)),
      action=state.action.at[idx].set(unroll.action.astype(state.action.dtype)),
      traj_id=state.traj_id.at[idx].set(unroll.traj_id.astype(jnp.int32)),
      insert_pos=(state.insert_pos + t) % cap,
      size=jnp.minimum(state.size + t, cap))


def _ring_index(state: ReplayState, chrono):
  """Ring index of chronological step ``chrono`` (0 = oldest stored)."""
  oldest = (state.insert_pos - state.size) % state.capacity
  return (oldest + chrono) % state.capacity


def truncated_geometric(key, gamma: float, horizon):
  """Samples ``d`` in ``1..horizon`` with ``P(d) ∝ gamma^d`` (0 where ``horizon == 0``)."""
  u = jax.random.uniform(key, horizon.shape)
  h = horizon.astype(jnp.float32)
  log_g = math.log(gamma)
  # P(D <= d) = (1 - gamma^d) / (1 - gamma^L)  =>  d = ceil(log(1 - u (1 - gamma^L)) / log gamma)
  d = jnp.ceil(jnp.log1p(-u * -jnp.expm1(h * log_g)) / log_g)
  return jnp.clip(d, 1, jnp.maximum(h, 1)).astype(jnp.int32) * (horizon > 0)


def _episode_last(traj_row_fn, tid, lo, hi, num_iters: int):
  """Largest ``c`` in ``[lo, hi]`` with ``traj(c) == tid`` given ``traj(lo) == tid`` and
  ``traj`` non-decreasing (vectorised binary search)."""

  def body(_, carry):
    lo, hi = carry
    mid = (lo + hi + 1) // 2
    same = traj_row_fn(mid) == tid
    return jnp.where(same, mid, lo), jnp.where(same, hi, mid - 1)

  lo, _ = jax.lax.fori_loop(0, num_iters, body, (lo, hi))
  return lo


def sample(state: ReplayState, key, batch_size: int, gamma: float,
           goal_indices: Sequence[int], state_size: int) -> Relabelled:
  """``batch_size`` i.i.d. transitions, each with a future goal of its own episode.

  Anchors are uniform over envs and over chronological steps ``0 .. size-2`` (the newest step
  has no stored successor). Requires ``size >= 2``.
  """
  k_env, k_t, k_d = jax.random.split(key, 3)
  env = jax.random.randint(k_env, (batch_size,), 0, state.num_envs)
  last = state.size - 1
  t = jax.random.randint(k_t, (batch_size,), 0, jnp.maximum(last, 1))
  tid = state.traj_id[_ring_index(state, t), env]
  num_iters = max(1, int(np.ceil(np.log2(state.capacity))) + 1)
  end = _episode_last(lambda c: state.traj_id[_ring_index(state, c), env], tid, t,
                      jnp.full_like(t, last), num_iters)
  horizon = end - t
  d = truncated_geometric(k_d, gamma, horizon)
  return _gather_relabelled(state, env, t, t + d, d, horizon, goal_indices, state_size)


def _gather_relabelled(state, env, t, k, d, horizon, goal_indices, state_size):
  obs_t = state.obs[_ring_index(state, t), env]
  goal = state.obs[_ring_index(state, k), env][:, np.asarray(goal_indices)]
  obs = jnp.concatenate([obs_t[:, :state_size], goal.astype(obs_t.dtype)], axis=-1)
  return Relabelled(obs=obs, action=state.action[_ring_index(state, t), env],
                    offset=d.astype(jnp.int32), horizon=horizon.astype(jnp.int32))


class Windows(NamedTuple):
  """Contiguous windows ``[num_windows, window_length, ...]`` of stored steps."""
  obs: jax.Array
  action: jax.Array
  traj_id: jax.Array


def sample_windows(state: ReplayState, key, num_windows: int, window_length: int) -> Windows:
  """``num_windows`` windows, each from a uniform env and start (``size >= window_length``)."""
  k_env, k_start = jax.random.split(key)
  env = jax.random.randint(k_env, (num_windows,), 0, state.num_envs)
  start = jax.random.randint(k_start, (num_windows,), 0,
                             jnp.maximum(state.size - window_length + 1, 1))
  chrono = start[:, None] + jnp.arange(window_length)[None, :]
  ring = _ring_index(state, chrono)
  envs = env[:, None]
  return Windows(obs=state.obs[ring, envs], action=state.action[ring, envs],
                 traj_id=state.traj_id[ring, envs])


def relabel_windows(windows: Windows, key, gamma: float, goal_indices: Sequence[int],
                    state_size: int) -> Relabelled:
  """Relabels every step of every window with a future goal of the same episode and window;
  returns ``[num_windows * window_length]`` transitions."""
  n, w = windows.traj_id.shape
  pos = jnp.arange(w)
  # Last index of each step's episode inside its window: traj ids are sorted along the window.
  end = jax.vmap(lambda tids: jnp.searchsorted(tids, tids, side="right") - 1)(windows.traj_id)
  horizon = end - pos[None, :]
  d = truncated_geometric(key, gamma, horizon)
  k = pos[None, :] + d
  goal = jnp.take_along_axis(windows.obs, k[:, :, None], axis=1)[..., np.asarray(goal_indices)]
  obs = jnp.concatenate([windows.obs[..., :state_size], goal], axis=-1)
  flat = lambda x: x.reshape((n * w,) + x.shape[2:])
  return Relabelled(obs=flat(obs), action=flat(windows.action), offset=flat(d),
                    horizon=flat(horizon))
