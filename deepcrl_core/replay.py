"""On-device trajectory replay with future-goal relabelling in O(batch).

Storage is a per-env ring over time, time-major: ``obs [capacity, num_envs, obs_size]``,
``action [capacity, num_envs, action_size]``, ``traj_id [capacity, num_envs]``. All envs insert
together (an unroll of ``[T, num_envs, ...]``), so one write position serves every env.
Within an env, stored steps in chronological order have non-decreasing ``traj_id``; equal ids
are one episode.

Relabelling: a transition at chronological step ``t`` gets the goal of the state at ``t + d``
of the same episode, ``P(d) ∝ gamma^d`` for ``d = 1..L`` where ``L`` is the number of later
steps of that episode in the buffer (or in the window; ``L = 0`` -> ``d = 0``, the state's own
goal, as in the published code). ``d`` is drawn by inverting the truncated geometric CDF and
``L`` by a binary search over ``traj_id``, so sampling costs ``O(batch * log capacity)`` time
and ``O(batch)`` memory (windows: ``O(num_envs * window)`` int32 for the shuffle) -- never the
``[num_envs, window, window]`` weights or the copied windows of the published implementation.

Two samplers (``replay.sampling``):

* ``windows`` -- :func:`sample_windows` + :func:`gather`: the published scheme
  (github.com/wang-kevin3290/scaling-crl, ``buffer.py`` and ``train.py``): one window of
  ``window_length`` steps per env, goals restricted to the window as well as the episode, the
  window's last step dropped, everything shuffled, the first ``sgd_steps x batch`` used. Drawn
  as indices, never as copied windows.
* ``transitions`` -- :func:`sample`: i.i.d. transitions over (env, step) of the whole buffer,
  goals anywhere later in the episode. Its goal offsets are somewhat longer than the windows'
  and it gives the newest steps their full weight.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


# The published relabelling adds 1e-5 to the diagonal of its [W, W] future-goal weights.
PUBLISHED_SELF_WEIGHT = 1e-5


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
  """Transitions with future goals: ``obs`` holds ``concat(state, relabelled goal)``.

  ``next_state`` and ``original_goal`` are filled in only by :func:`gather` with
  ``with_next=True`` (what off-policy TD agents need): the state part of the next stored step
  (meaningful where ``horizon >= 1``, i.e. the next step belongs to the same episode; elsewhere
  the transition's own state) and the goal the env commanded at ``t`` (``obs[state_size:]``).
  """
  obs: jax.Array          # [B, obs_size]
  action: jax.Array       # [B, action_size]
  offset: jax.Array       # [B] int32: steps from the transition to its goal state (d)
  horizon: jax.Array      # [B] int32: later steps of the episode available (L)
  next_state: Any = None      # [B, state_size] (with_next only)
  original_goal: Any = None   # [B, goal_size] (with_next only)


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


def truncated_geometric(key, gamma: float, horizon, self_weight: float = 0.0):
  """Samples ``d`` in ``1..horizon`` with ``P(d) ∝ gamma^d`` (0 where ``horizon == 0``).

  ``self_weight > 0`` adds weight ``self_weight`` on ``d = 0`` (the published sampler's
  ``1e-5`` on the diagonal): ``P(0) = self_weight / (self_weight + sum_{d=1..L} gamma^d)``.
  """
  u = jax.random.uniform(key, horizon.shape)
  h = horizon.astype(jnp.float32)
  log_g = math.log(gamma)
  tail = -jnp.expm1(h * log_g)   # 1 - gamma^L
  own = jnp.zeros(horizon.shape, bool)
  if self_weight > 0:
    future = gamma / (1.0 - gamma) * tail   # sum_{d=1..L} gamma^d
    v = u * (self_weight + future)
    own = v < self_weight
    u = jnp.clip((v - self_weight) / jnp.maximum(future, 1e-30), 0.0, 1.0)
  # P(D <= d) = (1 - gamma^d) / (1 - gamma^L)  =>  d = ceil(log(1 - u (1 - gamma^L)) / log gamma)
  d = jnp.ceil(jnp.log1p(-u * tail) / log_g)
  d = jnp.clip(d, 1, jnp.maximum(h, 1)).astype(jnp.int32) * (horizon > 0)
  return jnp.where(own, 0, d)


def truncated_uniform(key, horizon):
  """Samples ``d`` uniformly in ``1..horizon`` (0 where ``horizon == 0``): the "future" goals
  of hindsight experience replay (Andrychowicz et al. 2017) and GCSL (Ghosh et al. 2021)."""
  u = jax.random.uniform(key, horizon.shape)
  h = jnp.maximum(horizon, 1).astype(jnp.float32)
  d = jnp.clip(jnp.floor(u * h).astype(jnp.int32) + 1, 1, jnp.maximum(horizon, 1))
  return d * (horizon > 0)


OFFSETS = ("geometric", "uniform")


def draw_offsets(key, horizon, offsets: str, gamma: float, self_weight: float = 0.0):
  """Goal offsets ``d`` for anchors with ``horizon`` later steps: ``geometric`` =
  :func:`truncated_geometric` (``P(d) ∝ gamma^d``; CRL's law), ``uniform`` =
  :func:`truncated_uniform` (``self_weight`` applies to ``geometric`` only)."""
  if offsets == "geometric":
    return truncated_geometric(key, gamma, horizon, self_weight)
  if offsets == "uniform":
    return truncated_uniform(key, horizon)
  raise ValueError(f"offsets must be one of {OFFSETS}, got {offsets!r}")


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


class Anchors(NamedTuple):
  """Where transitions and their goals sit in the buffer (chronological steps, per env)."""
  env: jax.Array       # [...] int32
  t: jax.Array         # [...] int32: the transition's chronological step
  offset: jax.Array    # [...] int32: d, the goal is the state at t + d
  horizon: jax.Array   # [...] int32: L, later steps of the episode inside the window


def sample_anchors(state: ReplayState, key, batch_size: int, gamma: float,
                   offsets: str = "geometric") -> Anchors:
  """The anchors of :func:`sample`: ``batch_size`` i.i.d. transitions (env uniform, step uniform
  in ``0 .. size-2``) and their goal offsets (``offsets``: see :func:`draw_offsets`)."""
  k_env, k_t, k_d = jax.random.split(key, 3)
  env = jax.random.randint(k_env, (batch_size,), 0, state.num_envs)
  last = state.size - 1
  t = jax.random.randint(k_t, (batch_size,), 0, jnp.maximum(last, 1))
  tid = state.traj_id[_ring_index(state, t), env]
  num_iters = max(1, int(np.ceil(np.log2(state.capacity))) + 1)
  end = _episode_last(lambda c: state.traj_id[_ring_index(state, c), env], tid, t,
                      jnp.full_like(t, last), num_iters)
  horizon = end - t
  d = draw_offsets(k_d, horizon, offsets, gamma)
  return Anchors(env=env, t=t, offset=d, horizon=horizon)


def sample(state: ReplayState, key, batch_size: int, gamma: float,
           goal_indices: Sequence[int], state_size: int, offsets: str = "geometric",
           with_next: bool = False) -> Relabelled:
  """``batch_size`` i.i.d. transitions, each with a future goal of its own episode.

  Anchors are uniform over envs and over chronological steps ``0 .. size-2`` (the newest step
  has no stored successor). Requires ``size >= 2``.
  """
  return gather(state, sample_anchors(state, key, batch_size, gamma, offsets), goal_indices,
                state_size, with_next)


def _gather_relabelled(state, env, t, k, d, horizon, goal_indices, state_size,
                       with_next: bool = False):
  obs_t = state.obs[_ring_index(state, t), env]
  goal = state.obs[_ring_index(state, k), env][:, np.asarray(goal_indices)]
  obs = jnp.concatenate([obs_t[:, :state_size], goal.astype(obs_t.dtype)], axis=-1)
  extra = {}
  if with_next:
    # The next stored step where it is the same episode's (horizon >= 1); else t itself, so the
    # gather stays inside what is stored (such rows carry no TD target; the agent masks them).
    nxt = jnp.where(horizon > 0, t + 1, t)
    extra = dict(next_state=state.obs[_ring_index(state, nxt), env][:, :state_size],
                 original_goal=obs_t[:, state_size:])
  return Relabelled(obs=obs, action=state.action[_ring_index(state, t), env],
                    offset=d.astype(jnp.int32), horizon=horizon.astype(jnp.int32), **extra)


def sample_windows(state: ReplayState, key, num_transitions: int, window_length: int,
                   gamma: float, self_weight: float = PUBLISHED_SELF_WEIGHT,
                   offsets: str = "geometric") -> Anchors:
  """The published minibatch scheme, as anchors (``[num_transitions]``), without copying windows.

  One window of ``window_length`` consecutive stored steps from every env, each starting
  uniformly in ``0 .. size - window_length - 1`` (so the newest stored step is never in a
  window); every step of a window but its last is a transition, relabelled with the state
  ``d`` steps later in the same window and episode, ``P(d) ∝ gamma^d`` for ``d >= 1`` plus
  ``self_weight`` on ``d = 0`` (the anchor's own state, all there is when nothing follows it);
  the ``num_envs * (window_length - 1)`` transitions are shuffled and the first
  ``num_transitions`` kept. The published code gathers the windows (``[num_envs,
  window_length, obs]``), builds a ``[window_length, window_length]`` probability matrix per
  env and draws a categorical per row; here the same law is drawn per kept transition
  (binary search for its episode's end in the window, inverse CDF for ``d``), so memory is
  ``O(num_transitions)`` indices. Requires ``size > window_length`` and ``num_transitions <=
  num_envs * (window_length - 1)``. ``offsets="uniform"`` draws ``d`` uniformly in ``1..L``
  instead (:func:`draw_offsets`; ``self_weight`` is then unused).
  """
  n, w = state.num_envs, int(window_length)
  if num_transitions > n * (w - 1):
    raise ValueError(f"{num_transitions} transitions requested from {n} windows of {w - 1}")
  k_start, k_perm, k_d = jax.random.split(key, 3)
  start = jax.random.randint(k_start, (n,), 0, jnp.maximum(state.size - w, 1))
  flat = jax.random.permutation(k_perm, n * (w - 1))[:num_transitions].astype(jnp.int32)
  env, pos = flat % n, flat // n
  t = start[env] + pos
  traj = lambda c: state.traj_id[_ring_index(state, c), env]
  num_iters = max(1, int(np.ceil(np.log2(w))) + 1)
  end = _episode_last(traj, traj(t), t, start[env] + (w - 1), num_iters)
  horizon = end - t
  d = draw_offsets(k_d, horizon, offsets, gamma, self_weight)
  return Anchors(env=env, t=t, offset=d, horizon=horizon)


def gather(state: ReplayState, anchors: Anchors, goal_indices: Sequence[int],
           state_size: int, with_next: bool = False) -> Relabelled:
  """The relabelled transitions ``[B]`` of ``anchors`` (``[B]``); ``with_next`` adds each
  one's next state and the env's original goal (:class:`Relabelled`)."""
  return _gather_relabelled(state, anchors.env, anchors.t, anchors.t + anchors.offset,
                            anchors.offset, anchors.horizon, goal_indices, state_size, with_next)


SAMPLINGS = ("windows", "transitions")


class Sampler(NamedTuple):
  """How one training step draws its ``sgd_steps`` minibatches, chosen once per run.

  ``draw(state, key)`` returns a pytree with a leading ``sgd_steps`` axis (scanned over by the
  update loop); ``batch(state, x)`` turns one slice of it into the relabelled minibatch.
  """
  draw: Callable
  batch: Callable


def make_sampler(sampling: str, *, sgd_steps: int, batch_size: int, gamma: float,
                 window_length: int, goal_indices: Sequence[int], state_size: int,
                 offsets: str = "geometric", self_weight: float = PUBLISHED_SELF_WEIGHT,
                 with_next: bool = False) -> Sampler:
  """The :class:`Sampler` of ``replay.sampling`` (``windows`` | ``transitions``).

  ``offsets`` is the goal-offset law (:func:`draw_offsets`; CRL: ``geometric``),
  ``self_weight`` the windows sampler's weight on ``d = 0`` (the published 1e-5 by default),
  ``with_next`` adds next states and original goals (:func:`gather`).
  """
  if sampling == "windows":
    def draw(state, key):
      anchors = sample_windows(state, key, sgd_steps * batch_size, window_length, gamma,
                               self_weight, offsets)
      return jax.tree.map(lambda x: x.reshape((sgd_steps, batch_size)), anchors)

    return Sampler(draw, lambda state, a: gather(state, a, goal_indices, state_size, with_next))
  if sampling == "transitions":
    return Sampler(
        lambda state, key: jax.random.split(key, sgd_steps),
        lambda state, k: sample(state, k, batch_size, gamma, goal_indices, state_size, offsets,
                                with_next))
  raise ValueError(f"replay.sampling must be one of {SAMPLINGS}, got {sampling!r}")
