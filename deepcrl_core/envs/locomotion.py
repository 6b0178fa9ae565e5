"""Shared pieces of the goal-reaching locomotion tasks (ant and humanoid, open or in a maze)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl_core.envs import mazes, mjcf
from deepcrl_core.envs.base import MjxEnv


class LocomotionEnv(MjxEnv):
  """A robot with a free-floating torso that must bring its torso to a goal.

  Subclasses provide the model and the observation; this class holds the goal distribution
  (a ring around the origin in the open, or the layout's goal cells in a maze), the
  healthy-height termination and the per-step metrics.

  Attributes set by ``__init__``: ``maze`` (a :class:`mazes.Maze` or ``None``), ``maze_scale``,
  ``start_xy`` ``[2]`` and, in a maze, ``maze_goals`` ``[n_goals, 2]``.
  """

  healthy_z: Tuple[float, float]
  # The published rule ends an episode when the torso height leaves healthy_z; False keeps
  # every episode with a finite state to the time limit (termination_cause still names the
  # bound that was left).
  terminate_when_unhealthy: bool = True

  def _set_health(self, healthy_z, terminate_when_unhealthy: bool) -> None:
    lo, hi = (float(v) for v in healthy_z)
    if not lo < hi:
      raise ValueError(f"healthy_z must be (low, high) with low < high, got {tuple(healthy_z)}")
    if not isinstance(terminate_when_unhealthy, (bool, np.bool_)):
      raise ValueError("terminate_when_unhealthy must be true or false, got "
                       f"{terminate_when_unhealthy!r}")
    self.healthy_z = (lo, hi)
    self.terminate_when_unhealthy = bool(terminate_when_unhealthy)

  def _init_maze(self, maze: Optional[str], scale: float) -> None:
    self.maze = mazes.get_maze(maze) if maze else None
    self.maze_scale = float(scale)
    if self.maze is None:
      self.start_xy = np.zeros(2, np.float32)
      self.maze_goals = None
    else:
      self.start_xy = self.maze.start_xy(scale)
      # numpy constants (made jnp where used): building an env never starts a JAX backend.
      self.maze_goals = np.asarray(self.maze.goal_xy(scale), np.float32)
      self._neighbour_walls = np.asarray(mazes.neighbour_walls(self.maze, scale), np.float32)

  def _build_world(self, spec: mujoco.MjSpec, *, max_contact_points: int,
                   n_colliders: int = 4) -> None:
    """Adds the maze walls (and the contact caps that keep MJX cheap) to ``spec``."""
    if self.maze is None:
      return
    mjcf.add_contact_caps(spec, max_contact_points=max_contact_points)
    mjcf.add_maze_walls(spec, self.maze, self.maze_scale)
    mjcf.add_wall_colliders(spec, self.maze_scale, count=n_colliders)
    rows, cols = self.maze.shape
    centre = [(rows - 1) / 2 * self.maze_scale, (cols - 1) / 2 * self.maze_scale]
    height = 1.1 * max(rows, cols) * self.maze_scale
    spec.worldbody.add_camera(name="overview", pos=[centre[0], centre[1], height],
                              quat=[0.0, 0.0, 0.0, 1.0])

  def _find_wall_colliders(self, mj_model: mujoco.MjModel) -> None:
    """Records the model's default mocap positions and the wall colliders' mocap slots."""
    mocap_bodies = np.flatnonzero(mj_model.body_mocapid >= 0)
    order = np.argsort(mj_model.body_mocapid[mocap_bodies])
    self.mocap_pos0 = np.asarray(mj_model.body_pos[mocap_bodies[order]],
                                 np.float32).reshape(-1, 3)
    if self.maze is None:
      return
    names = [mj_model.body(b).name for b in range(mj_model.nbody)]
    count = sum(name.startswith("wall_collider_") for name in names)
    self._collider_slots = mjcf.mocap_slots(mj_model, [f"wall_collider_{k}" for k in range(count)])

  def place_wall_colliders(self, mocap_pos: jax.Array, torso_xy: jax.Array) -> jax.Array:
    """``mocap_pos`` with the colliders on the wall cells nearest to ``torso_xy``.

    Candidates are the wall cells among the 8 neighbours of the torso's cell; the
    ``n_colliders`` nearest to the torso (distance from the torso to the cell's square,
    :func:`mjcf.nearest_boxes`) get a collider, the others stay parked. A robot whose parts
    reach less than half a cell beyond the torso can touch at most 3 neighbour cells, so 4
    colliders cover every reachable wall. Called before every control step; a no-op in the open.
    """
    if self.maze is None:
      return mocap_pos
    rows, cols = self.maze.shape
    ij = jnp.round(torso_xy / self.maze_scale).astype(jnp.int32)
    i = jnp.clip(ij[0], 0, rows - 1)
    j = jnp.clip(ij[1], 0, cols - 1)
    cells = jnp.asarray(self._neighbour_walls)[i, j]  # [8, 3], parked ones far below the floor
    slots = self._collider_slots
    nearest = mjcf.nearest_boxes(torso_xy, cells, 0.5 * self.maze_scale,
                                 slots.stop - slots.start, valid=cells[:, 2] > 0)
    return jnp.asarray(mocap_pos).at[slots].set(nearest)

  def sample_goal_xy(self, key: jax.Array, ring: Tuple[float, float]) -> jax.Array:
    """A goal xy ``[2]``: a uniform goal cell in a maze, else radius ~ U(ring) at a uniform angle."""
    if self.maze_goals is not None:
      idx = jax.random.randint(key, (), 0, self.maze_goals.shape[0])
      return jnp.asarray(self.maze_goals)[idx]
    k_r, k_a = jax.random.split(key)
    radius = jax.random.uniform(k_r, (), minval=ring[0], maxval=ring[1])
    angle = jax.random.uniform(k_a, (), minval=0.0, maxval=2 * jnp.pi)
    return radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])

  # termination_cause: 1 = the torso fell below healthy_z[0] (e.g. the robot flipped or
  # collapsed), 2 = it rose above healthy_z[1] (e.g. a jump), 3 = the physics state is no
  # longer finite (a simulation blow-up, e.g. landing from a high jump when healthy_z allows
  # one): that always ends the episode, so the auto-reset replaces the state before a NaN
  # reaches the replay buffer.
  termination_causes = ("torso_low", "torso_high", "non_finite")

  def unhealthy(self, torso_z: jax.Array) -> jax.Array:
    """1.0 when the torso height leaves ``healthy_z`` (the published termination rule)."""
    lo, hi = self.healthy_z
    return ((torso_z < lo) | (torso_z > hi)).astype(jnp.float32)

  @staticmethod
  def non_finite(data) -> jax.Array:
    """True when ``qpos`` or ``qvel`` holds a NaN or an infinity."""
    return ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))

  def termination(self, data) -> jax.Array:
    """The step's ``done`` after physics ``data``: :meth:`unhealthy` of the torso height
    (``qpos[2]``) under the published rule (not with ``terminate_when_unhealthy=False``), and
    always a non-finite state (which the published code would carry on with)."""
    done = self.non_finite(data)
    if self.terminate_when_unhealthy:
      done = done | (self.unhealthy(data.qpos[2]) > 0)
    return done.astype(jnp.float32)

  def termination_cause(self, state) -> jax.Array:
    """3 for a non-finite state, else 1 when the torso height (``qpos[2]``) is below
    ``healthy_z``, 2 when above, else 0."""
    z = state.data.qpos[2]
    lo, hi = self.healthy_z
    cause = jnp.where(z < lo, 1, jnp.where(z > hi, 2, 0))
    return jnp.where(self.non_finite(state.data), 3, cause).astype(jnp.int32)

  def metrics(self, achieved: jax.Array, goal: jax.Array) -> Dict[str, jax.Array]:
    m = self.goal_metrics(achieved, goal)
    m["success_easy"] = (m["dist"] < 2.0).astype(jnp.float32)
    return m
