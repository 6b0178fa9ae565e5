"""A point mass that must reach goals in a square arena or a maze: the cheap quick-start task.

A ball on two horizontal slide joints driven by two motors, with damping so its speed saturates
(top speed per axis ``gear / damping`` = 1.5 m/s, approached with time constant
``mass / damping`` = 0.5 s). Walls are applied analytically after each control step, which
keeps MJX free of contacts and constraints (MJX has no broad phase, so every geom pair that
may touch costs a contact slot per step). Model: ``assets/pointmass.xml``, sized by the
constructor's arguments.

Open arena (``maze=None``, env ``pointmass``): a ``[-arena_size, arena_size]^2`` square; the
position is clipped to it and the velocity into a wall zeroed. Start and goal are uniform in
the arena.

Maze (``maze="u"``, ``"u4"``, ``"big"``, ...: a layout of :mod:`deepcrl_core.envs.mazes`; envs
``pointmass_<maze>_maze`` and their far-goal evaluation layouts ``pointmass_<maze>_maze_eval``):
cell (i, j) is centred at ``(i * maze_scale, j * maze_scale)``. Collisions use the ball's
axis-aligned bounding square (half side ``ball_radius``), resolved per axis: first the x move
(at the old y), then the y move (at the new x). Each move is clipped to the free run of cells
ahead of the square's leading edge in every row/column the square overlaps (precomputed "next
wall" tables), and the velocity component into the wall is zeroed. The square after each
clipped move touches no wall cell, whatever the step length, so the ball can neither tunnel
through a wall nor end up inside one, and it slides along walls. The square is conservative:
the ball's disc never reaches a wall, and at a convex wall corner it stops up to
``(sqrt(2) - 1) * ball_radius`` (2 mm) short of where a disc would touch.

Resets follow the published ant mazes (github.com/wang-kevin3290/scaling-crl,
``envs/ant_maze.py``): start = the ``R`` cell centre plus ``U(-reset_noise, reset_noise)`` on
x and y (the published ``reset_noise_scale`` 0.1 on the ant's qpos), velocity zero; goal = a
uniformly chosen ``G`` cell centre, plus ``U(-goal_noise, goal_noise)`` per axis (0 by
default: the published goal is the exact cell centre).

Maze sizes, chosen so the mazes need planning yet fit a CPU budget: ``maze_scale`` 1 m cells,
success radius 0.2 m, and episode lengths (the registry's defaults) of 100 control steps
(10 s) for ``u`` and 150 for ``u4`` and ``big``. In the U maze the start (1, 1) and the far
evaluation goals (3, 1..3) are 2 m apart across the one-cell wall (2, 1..2): a ball pushed
straight at the goal stops at x = 1.45 m, 1.55 m from the goal (1, 1) -> (3, 1), far outside
the 0.2 m radius, while the shortest feasible path around the wall is about 4.2 m long
(6 cells by BFS): about 3 s (30 control steps) at top speed. A simple scripted controller
(proportional, through the BFS path's cell centres; ``tests/envs/test_pointmass_maze.py``)
reaches the U maze's far goals in 34-51 steps of the 100, the ``u4`` ones (BFS paths of up to
10 cells) in 56-82 of 150 and the ``big`` ones (up to 11 cells) in 74-101 of 150. The radius is
larger than one control step's travel (0.15 m), so stopping in it needs no fine control, and
much smaller than a cell, so success means being in the goal cell.

State (4): ball x, y, vx, vy; goal = x, y (``goal_indices=(0, 1)``); actions (2) in [-1, 1].
Attributes for analyses: ``maze`` (a :class:`mazes.Maze`, ``None`` in the open arena) and
``maze_scale``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl_core.envs import mazes, mjcf
from deepcrl_core.envs.base import MjxEnv, State


def pointmass_spec(arena_size: float = 1.0, timestep: float = 0.05, max_speed: float = 1.5,
                   damping: float = 2.0, ball_radius: float = 0.05,
                   maze: Optional[mazes.Maze] = None, maze_scale: float = 1.0) -> mujoco.MjSpec:
  """``assets/pointmass.xml`` with the arena (floor 0.2 m wider), ball and motors set.

  With a ``maze`` the floor covers the maze (plus 0.2 m) and its walls are added as
  visual-only boxes (no contacts: the env resolves wall collisions itself).
  """
  spec = mjcf.load_spec("pointmass.xml")
  spec.option.timestep = timestep
  if maze is None:
    floor = arena_size + 0.2
    spec.geom("floor").size = [floor, floor, 0.1]
  else:
    rows, cols = maze.shape
    spec.geom("floor").pos = [(rows - 1) / 2 * maze_scale, (cols - 1) / 2 * maze_scale, 0.0]
    spec.geom("floor").size = [rows / 2 * maze_scale + 0.2, cols / 2 * maze_scale + 0.2, 0.1]
    mjcf.add_maze_walls(spec, maze, maze_scale)
  spec.body("ball").pos = [0.0, 0.0, ball_radius]
  spec.geom("ball").size = mjcf.set_first(spec.geom("ball").size, ball_radius)
  for joint in ("x", "y"):
    spec.joint(joint).damping = mjcf.set_first(spec.joint(joint).damping, damping)
  for motor in spec.actuators:
    motor.gear = mjcf.set_first(motor.gear, max_speed * damping)
  return spec


def _nearest_wall_down(wall: np.ndarray) -> np.ndarray:
  """``[rows, cols]``: the row index of the nearest wall cell at or below each cell (larger row
  index), ``rows - 1`` where none is (the padded grids always have one)."""
  out = np.empty(wall.shape, np.int32)
  nearest = np.full(wall.shape[1], wall.shape[0] - 1, np.int32)
  for i in range(wall.shape[0] - 1, -1, -1):
    nearest = np.where(wall[i], i, nearest)
    out[i] = nearest
  return out


def next_wall_tables(maze: mazes.Maze) -> np.ndarray:
  """``int32 [4, rows + 2, cols + 2]``: for each cell of the wall-padded grid, the index of
  the nearest wall cell at or beyond it, in order: +i (down the rows), -i, +j, -j.

  The grid is padded with one ring of wall cells (outside the layout counts as wall, as in
  :meth:`mazes.Maze.is_wall`), so every lookup finds a wall. Padded index = layout index + 1.
  The four directions are one scan (:func:`_nearest_wall_down`) of the flipped / transposed grid.
  """
  wall = np.pad(np.array([[c == "#" for c in row] for row in maze.grid]), 1,
                constant_values=True)
  rows, cols = wall.shape
  return np.stack([
      _nearest_wall_down(wall),
      rows - 1 - _nearest_wall_down(wall[::-1])[::-1],
      _nearest_wall_down(wall.T).T,
      cols - 1 - _nearest_wall_down(wall.T[::-1])[::-1].T,
  ]).astype(np.int32)


class PointMass(MjxEnv):
  """Goal reaching for a point mass in an open square arena or in a maze (``maze``)."""

  state_size = 4
  goal_indices = (0, 1)
  action_size = 2

  def __init__(self, arena_size: float = 1.0, success_radius: float = 0.1,
               episode_length: int = 50, control_dt: float = 0.1, n_substeps: int = 2,
               max_speed: float = 1.5, damping: float = 2.0, ball_radius: float = 0.05,
               maze: Optional[str] = None, maze_scale: float = 1.0, reset_noise: float = 0.1,
               goal_noise: float = 0.0):
    self.arena_size = float(arena_size)
    self.success_radius = float(success_radius)
    self.episode_length = int(episode_length)
    self.ball_radius = float(ball_radius)
    self.maze = mazes.get_maze(maze) if maze else None
    self.maze_scale = float(maze_scale)
    self.reset_noise = float(reset_noise)
    self.goal_noise = float(goal_noise)
    if self.maze is not None:
      half = 0.5 * self.maze_scale
      if not 0.0 < self.ball_radius < half:
        raise ValueError(f"ball_radius {ball_radius} must lie in (0, maze_scale / 2 = {half}) "
                         "for the per-axis wall resolution")
      for name, noise, margin in (("reset_noise", self.reset_noise, self.ball_radius),
                                  ("goal_noise", self.goal_noise, 0.0)):
        if not 0.0 <= noise + margin < half:
          raise ValueError(f"{name} {noise} must be >= 0 and keep the ball inside its cell "
                           f"(noise + {margin} < maze_scale / 2 = {half})")
      # numpy constants: building an env never starts a JAX backend.
      self.start_xy = self.maze.start_xy(self.maze_scale)
      self.maze_goals = np.asarray(self.maze.goal_xy(self.maze_scale), np.float32)
      if not len(self.maze_goals):
        raise ValueError(f"maze {maze!r} has no goal (G) cell")
      self._next_wall = next_wall_tables(self.maze)
    spec = pointmass_spec(arena_size, timestep=control_dt / n_substeps, max_speed=max_speed,
                          damping=damping, ball_radius=ball_radius, maze=self.maze,
                          maze_scale=self.maze_scale)
    super().__init__(spec.compile(), n_substeps)

  def _obs(self, data, goal):
    return jnp.concatenate([data.qpos[:2], data.qvel[:2], goal])

  def reset(self, key):
    k_pos, k_goal, k_noise = jax.random.split(key, 3)
    if self.maze is None:
      lim = self.arena_size
      qpos = jax.random.uniform(k_pos, (2,), minval=-lim, maxval=lim)
      goal = jax.random.uniform(k_goal, (2,), minval=-lim, maxval=lim)
    else:
      qpos = jnp.asarray(self.start_xy) + jax.random.uniform(
          k_pos, (2,), minval=-self.reset_noise, maxval=self.reset_noise)
      idx = jax.random.randint(k_goal, (), 0, self.maze_goals.shape[0])
      goal = jnp.asarray(self.maze_goals)[idx] + jax.random.uniform(
          k_noise, (2,), minval=-self.goal_noise, maxval=self.goal_noise)
    data = self.pipeline_init(qpos, jnp.zeros(2))
    metrics = self.goal_metrics(qpos, goal)
    return State(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                 done=jnp.zeros(()), metrics=metrics, info={"goal": goal})

  def step(self, state, action):
    action = jnp.clip(action, -1.0, 1.0)
    data = self.pipeline_step(state.data, action)
    if self.maze is None:
      lim = self.arena_size
      qpos = jnp.clip(data.qpos, -lim, lim)
      hit = ((qpos >= lim) & (data.qvel > 0)) | ((qpos <= -lim) & (data.qvel < 0))
      qvel = jnp.where(hit, 0.0, data.qvel)
    else:
      qpos, qvel = self.resolve_walls(state.data.qpos, data.qpos, data.qvel)
    data = data.replace(qpos=qpos, qvel=qvel)
    goal = state.info["goal"]
    metrics = self.goal_metrics(data.qpos[:2], goal)
    return state.replace(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                         done=jnp.zeros(()), metrics=metrics)

  def _cell(self, coord):
    """Padded cell index (layout index + 1) of a world coordinate along one axis."""
    return jnp.floor(coord / self.maze_scale + 0.5).astype(jnp.int32) + 1

  def resolve_walls(self, old_xy, new_xy, vel):
    """Position and velocity ``[2]`` after clipping the move ``old_xy -> new_xy`` at the walls.

    ``old_xy`` must be a collision-free position (every reset and step leaves one). Per axis
    (x then y), the move of the ball's square is clipped to the free cells ahead of it in the
    rows/columns it overlaps, and a velocity component pushing into a wall it touches is
    zeroed (as the arena's clip does). Jittable; also usable on batches via ``vmap``.
    """
    s, r = self.maze_scale, self.ball_radius
    eps = 1e-4 * s  # a square touching a wall is not inside it
    tables = jnp.asarray(self._next_wall)
    rows, cols = tables.shape[1:]
    pos = [old_xy[0], old_xy[1]]
    out_vel = [vel[0], vel[1]]
    for axis in (0, 1):
      other = 1 - axis
      lim = rows if axis == 0 else cols
      olim = cols if axis == 0 else rows
      a_lo = jnp.clip(self._cell(pos[axis] - r + eps), 0, lim - 1)
      a_hi = jnp.clip(self._cell(pos[axis] + r - eps), 0, lim - 1)
      o_cells = [jnp.clip(self._cell(pos[other] + d), 0, olim - 1) for d in (-r + eps, r - eps)]

      def look(table, a, o):
        return table[a, o] if axis == 0 else table[o, a]

      plus, minus = tables[2 * axis], tables[2 * axis + 1]
      wall_hi = jnp.minimum(*[look(plus, a_hi, o) for o in o_cells])
      wall_lo = jnp.maximum(*[look(minus, a_lo, o) for o in o_cells])
      hi = (wall_hi - 1 - 0.5) * s - r
      lo = (wall_lo - 1 + 0.5) * s + r
      target = new_xy[axis]
      clipped = jnp.clip(target, lo, hi)
      v = vel[axis]
      into_wall = ((clipped >= hi) & (v > 0)) | ((clipped <= lo) & (v < 0))
      out_vel[axis] = jnp.where(into_wall, 0.0, v)
      pos[axis] = clipped
    qpos = jnp.stack(pos).astype(new_xy.dtype)
    qvel = jnp.stack(out_vel).astype(vel.dtype)
    return qpos, qvel
