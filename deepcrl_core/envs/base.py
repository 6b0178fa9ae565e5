"""Goal-conditioned environments as pure functions over a ``State`` pytree.

An env is a single-instance, jittable pair ``reset(key) -> State`` and
``step(state, action) -> State``. Batching, episode limits and auto-reset are wrappers
(:mod:`deepcrl_core.envs.wrappers`).

Observation layout (one fact, declared by each env): ``obs = concat(state [state_size],
goal [goal_size])`` where the goal has the meaning of ``state[goal_indices]``. CRL relabels
goals with ``achieved_goal(obs) = obs[goal_indices]``.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class State:
  """Environment state of one env (or a batch, after vmap).

  Attributes:
    data: physics state (an ``mjx.Data`` or any pytree).
    obs: ``[observation_size]`` = concat(state part, goal).
    reward: scalar reward (unused by CRL; kept for diagnostics).
    done: 1.0 when the episode terminated or was truncated at this step.
    metrics: per-step metrics, at least ``dist`` and ``success``.
    info: env/wrapper bookkeeping (goal, step counter, trajectory id, ...).
  """
  data: Any
  obs: jax.Array
  reward: jax.Array
  done: jax.Array
  metrics: Dict[str, jax.Array]
  info: Dict[str, Any]

  def replace(self, **kwargs) -> "State":
    return dataclasses.replace(self, **kwargs)


class Env(abc.ABC):
  """Base class of goal-conditioned envs.

  Subclasses set: ``state_size`` (int), ``goal_indices`` (tuple of state dims forming the goal),
  ``action_size`` (int), ``success_radius`` (float), ``episode_length`` (default limit for the
  episode wrapper) and ``dt`` (control period, seconds).
  """

  state_size: int
  goal_indices: Tuple[int, ...]
  action_size: int
  success_radius: float
  episode_length: int = 1000
  dt: float

  @property
  def goal_size(self) -> int:
    return len(self.goal_indices)

  @property
  def observation_size(self) -> int:
    return self.state_size + self.goal_size

  @abc.abstractmethod
  def reset(self, key: jax.Array) -> State:
    """New episode (fresh start state and goal) from ``key``."""

  @abc.abstractmethod
  def step(self, state: State, action: jax.Array) -> State:
    """Advances one control step with ``action`` in ``[-1, 1]^action_size``."""

  @property
  def unwrapped(self) -> "Env":
    return self

  # Names of the ways the env itself ends an episode (sets ``done``), for diagnostics such as
  # the evaluation's breakdown of how episodes end; empty for envs that never terminate.
  termination_causes: Tuple[str, ...] = ()

  def termination_cause(self, state: State) -> jax.Array:
    """Which of :attr:`termination_causes` holds in the (unbatched) ``state`` after a step:
    ``1 + index`` of the first one that does, or 0 when none does. int32 scalar; the default
    (an env without named causes) is always 0."""
    del state
    return jnp.zeros((), jnp.int32)

  def goal_metrics(self, achieved: jax.Array, goal: jax.Array) -> Dict[str, jax.Array]:
    """``dist`` (Euclidean distance of goal dims) and ``success`` (1.0 within the radius)."""
    dist = jnp.linalg.norm(achieved - goal, axis=-1)
    return {"dist": dist, "success": (dist < self.success_radius).astype(jnp.float32)}


class MjxEnv(Env):
  """Helpers for envs simulated with MuJoCo MJX.

  Subclasses call ``super().__init__(mj_model, n_substeps)`` with a compiled ``mujoco.MjModel``
  whose ``opt.timestep * n_substeps`` is the control period.
  """

  def __init__(self, mj_model, n_substeps: int):
    self.mj_model = mj_model
    self.n_substeps = int(n_substeps)
    self.dt = float(mj_model.opt.timestep) * self.n_substeps

  @functools.cached_property
  def mjx_model(self):
    """The device copy of ``mj_model``, made on first use: building an env (e.g. to validate
    a config's ``env.kwargs``) never starts a JAX backend, which multi-host initialisation
    must precede."""
    from mujoco import mjx  # pylint: disable=g-import-not-at-top
    # First use may be inside a trace (a jitted reset): make concrete device arrays anyway, so
    # the cached model holds no tracer. The process's own first device: jax.devices()[0]
    # belongs to process 0 in multi-host runs.
    with jax.ensure_compile_time_eval():
      return mjx.put_model(self.mj_model, device=jax.local_devices()[0])

  def pipeline_init(self, qpos: jax.Array, qvel: jax.Array):
    """MJX data at ``qpos``/``qvel`` with derived quantities (forward kinematics) computed."""
    from mujoco import mjx  # pylint: disable=g-import-not-at-top
    data = mjx.make_data(self.mjx_model)
    data = data.replace(qpos=qpos, qvel=qvel, ctrl=jnp.zeros(self.mj_model.nu))
    return mjx.forward(self.mjx_model, data)

  def pipeline_step(self, data, ctrl: jax.Array):
    """``n_substeps`` physics steps holding ``ctrl``."""
    from mujoco import mjx  # pylint: disable=g-import-not-at-top

    def body(d, _):
      return mjx.step(self.mjx_model, d.replace(ctrl=ctrl)), None

    data, _ = jax.lax.scan(body, data, None, length=self.n_substeps)
    return data


def check_goal_indices(goal_indices: Sequence[int], state_size: int) -> Tuple[int, ...]:
  idx = tuple(int(i) for i in goal_indices)
  if not idx or min(idx) < 0 or max(idx) >= state_size:
    raise ValueError(f"goal_indices {idx} must be non-empty and within [0, {state_size})")
  return idx


def achieved_goal(obs_or_state: jax.Array, goal_indices: Sequence[int]) -> jax.Array:
  """The goal-space coordinates of a state (``[..., goal_size]``)."""
  return jnp.take(obs_or_state, np.asarray(goal_indices), axis=-1)
