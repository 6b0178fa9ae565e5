"""Wrappers kept apart from the physics: episode limit, auto-reset, batching.

Training envs are ``VmapWrapper(AutoResetWrapper(EpisodeWrapper(env, episode_length),
reset_mode))`` (:func:`wrap_for_training`); evaluation envs skip the auto-reset
(:func:`wrap_for_eval`).

Reset modes (:data:`RESET_MODES`):

* ``"first"`` -- the published behaviour (brax's ``AutoResetWrapper``, used by the paper's code
  github.com/wang-kevin3290/scaling-crl): a finished episode's slot returns to exactly the state
  and goal it had after its first reset, kept in ``info["first"]``. No reset is computed after
  the first, so a run trains on ``num_envs`` fixed start/goal pairs.
* ``"fresh"`` -- a new start state and goal each episode. Under ``vmap`` a per-env
  ``lax.cond`` becomes a select that evaluates both branches, so this computes a full
  ``env.reset`` for every env on every step and keeps it only where the episode ended
  (``profiling/RESULTS.md``, "Reset modes", measures what that costs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from deepcrl_core.envs.base import Env, State


class Wrapper(Env):
  """Delegates everything it does not override to the wrapped env."""

  def __init__(self, env: Env):
    self.env = env

  def __getattr__(self, name):
    if name == "env":  # not yet set (e.g. during unpickling)
      raise AttributeError(name)
    return getattr(self.env, name)

  @property
  def state_size(self):
    return self.env.state_size

  @property
  def goal_indices(self):
    return self.env.goal_indices

  @property
  def action_size(self):
    return self.env.action_size

  @property
  def success_radius(self):
    return self.env.success_radius

  @property
  def dt(self):
    return self.env.dt

  @property
  def unwrapped(self) -> Env:
    return self.env.unwrapped

  @property
  def termination_causes(self):
    return self.env.termination_causes

  def termination_cause(self, state):
    return self.env.termination_cause(state)

  def reset(self, key):
    return self.env.reset(key)

  def step(self, state, action):
    return self.env.step(state, action)


class EpisodeWrapper(Wrapper):
  """Ends episodes after ``episode_length`` steps.

  ``info["steps"]`` counts steps in the episode; ``info["truncation"]`` is 1.0 when the episode
  ended by the time limit rather than by the env's own termination.
  """

  def __init__(self, env: Env, episode_length: int):
    super().__init__(env)
    if episode_length <= 0:
      raise ValueError(f"episode_length must be positive, got {episode_length}")
    self.episode_length = int(episode_length)

  def reset(self, key):
    state = self.env.reset(key)
    info = dict(state.info, steps=jnp.zeros((), jnp.int32), truncation=jnp.zeros(()))
    return state.replace(info=info)

  def step(self, state, action):
    state = self.env.step(state, action)
    steps = state.info["steps"] + 1
    out_of_time = steps >= self.episode_length
    truncation = (out_of_time & (state.done < 0.5)).astype(jnp.float32)
    done = jnp.maximum(state.done, out_of_time.astype(state.done.dtype))
    info = dict(state.info, steps=steps, truncation=truncation)
    return state.replace(done=done, info=info)


RESET_MODES = ("first", "fresh")


class AutoResetWrapper(Wrapper):
  """Starts a new episode in place of a finished one (``reset_mode``: see the module doc).

  On the step where ``done`` becomes 1 the returned ``obs``/``data`` already belong to the new
  episode, while ``done``, ``reward`` and ``metrics`` describe the step that ended the old one.
  ``info["traj_id"]`` increments with each new episode of the slot, so consecutive stored
  observations with equal ids belong to one episode. Each slot carries its own ``info["rng"]``
  (``"fresh"``) or its first reset's ``data``, ``obs`` and ``info`` in ``info["first"]``
  (``"first"``).
  """

  _MANAGED = ("rng", "traj_id", "truncation", "first")

  def __init__(self, env: Env, reset_mode: str = "fresh"):
    super().__init__(env)
    if reset_mode not in RESET_MODES:
      raise ValueError(f"reset_mode must be one of {RESET_MODES}, got {reset_mode!r}")
    self.reset_mode = reset_mode

  def reset(self, key):
    key, reset_key = jax.random.split(key)
    state = self.env.reset(reset_key)
    info = dict(state.info, rng=key, traj_id=jnp.zeros((), jnp.int32))
    if self.reset_mode == "first":
      info["first"] = {"data": state.data, "obs": state.obs,
                       "info": {k: v for k, v in state.info.items() if k not in self._MANAGED}}
    return state.replace(info=info)

  def step(self, state, action):
    stepped = self.env.step(state.replace(done=jnp.zeros_like(state.done)), action)
    if self.reset_mode == "first":
      rng = state.info["rng"]
      fresh = state.info["first"]
      fresh_data, fresh_obs, fresh_info = fresh["data"], fresh["obs"], fresh["info"]
    else:
      rng, reset_key = jax.random.split(state.info["rng"])
      new = self.env.reset(reset_key)
      fresh_data, fresh_obs, fresh_info = new.data, new.obs, new.info
    done = stepped.done > 0.5

    def pick(new, old):
      return jnp.where(jnp.reshape(done, done.shape + (1,) * (old.ndim - done.ndim)), new, old)

    data = jax.tree.map(pick, fresh_data, stepped.data)
    obs = pick(fresh_obs, stepped.obs)
    info = {}
    for k, v in stepped.info.items():
      if k in self._MANAGED or k not in fresh_info:
        info[k] = v
      else:
        info[k] = jax.tree.map(pick, fresh_info[k], v)
    info["rng"] = rng
    info["traj_id"] = state.info["traj_id"] + done.astype(jnp.int32)
    return stepped.replace(data=data, obs=obs, info=info)


class VmapWrapper(Wrapper):
  """Batches ``reset``/``step`` over a leading env axis (``reset`` takes keys ``[num_envs]``)."""

  def reset(self, keys):
    return jax.vmap(self.env.reset)(keys)

  def step(self, state, action):
    return jax.vmap(self.env.step)(state, action)

  def termination_cause(self, state):
    return jax.vmap(self.env.termination_cause)(state)


def wrap_for_training(env: Env, episode_length: int, reset_mode: str = "fresh") -> Env:
  """Batched, episode-limited, auto-resetting env (``reset_mode``: ``"first"`` | ``"fresh"``)."""
  return VmapWrapper(AutoResetWrapper(EpisodeWrapper(env, episode_length), reset_mode))


def wrap_for_eval(env: Env, episode_length: int) -> Env:
  return VmapWrapper(EpisodeWrapper(env, episode_length))
