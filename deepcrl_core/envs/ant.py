"""Ant goal reaching, in the open (``ant``) and in mazes (``ant_*_maze``, ``ant_*_maze_eval``).

Model (``assets/ant.xml``, authored here, primitives only, after the classic MuJoCo ant): a
sphere torso (r 0.25) on a free joint and four legs, each a hip hinge about z (+-30 deg) and
an ankle hinge (30..70 deg), capsules of radius 0.08 and lengths 0.2*sqrt(2) (hip link) and 0.4*sqrt(2)
(ankle link), density 5, joint armature 1 and damping 1, 8 motors of gear 150 with
``ctrl = action`` in [-1, 1]. Masses (``mass``): ``"mjcf"`` (default) the geoms' density-5
masses and inertias, 0.91 kg in all; ``"published"`` every one of the 9 links 1 kg with unit
inertia, 9 kg in all -- what the paper's brax spring engine simulates (``spring_mass_scale =
spring_inertia_scale = 1`` in its ant.xml turn each link's mass into ``m ** 0 = 1`` and each
principal inertia into 1), kept at the MJCF's centres of mass; the ant tasks' configs pass
``"published"`` (:mod:`deepcrl_core.tasks`). Physics: 0.01 s x 5 substeps =
0.05 s per control step, Newton solver with 1 iteration and 4 line-search steps (as MJX
locomotion tasks use).

Contacts: only four massless foot spheres touch the floor (4 contact slots). In a maze the
torso and the feet also touch the walls (frictionless, see :mod:`deepcrl_core.envs.mjcf`);
they collide with 4 cell-sized boxes moved onto the wall cells nearest the torso
every control step (:mod:`deepcrl_core.envs.mazes`), and MJX's ``max_contact_points`` keeps
the 8 deepest of those 20 sphere-box contacts.

State (29): qpos (torso xyz, torso quat wxyz, 8 joint angles in the order hip_1, ankle_1, ...,
hip_4, ankle_4) then qvel (6 + 8); goal = torso xy (``goal_indices = (0, 1)``); obs (31) =
state + goal xy. Start: ``init_q + U(-0.1, 0.1)`` on every qpos entry (quaternion
renormalised; ``init_q`` holds the torso at ``start_height``, 0.55 m as published, where the
noise puts a foot a median 12 cm into the floor), ``qvel = 0.1 N(0, 1)``; in a maze the start
is offset to the ``R`` cell. Goal: 10 m from the origin at a uniform angle (open) or a uniform
``G`` cell centre (maze). Episodes terminate when the torso height leaves [0.2, 1.0] (never
with ``terminate_when_unhealthy=False``); success = torso xy within 0.5 of the goal.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl_core.envs import mjcf
from deepcrl_core.envs.base import State
from deepcrl_core.envs.locomotion import LocomotionEnv

# torso xyz, quat, then (hip, ankle) per leg.
INIT_QPOS = np.array([0, 0, 0.55, 1, 0, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1], np.float32)
MASSES = ("mjcf", "published")
# Geoms that touch maze walls.
WALL_GEOMS = ("torso", "foot_1", "foot_2", "foot_3", "foot_4")


def ant_spec(in_maze: bool = False) -> mujoco.MjSpec:
  """``assets/ant.xml``; ``in_maze`` lets the torso and feet collide with maze walls."""
  spec = mjcf.load_spec("ant.xml")
  if in_maze:
    for name in WALL_GEOMS:
      spec.geom(name).contype |= mjcf.WALL_BIT
  return spec


class Ant(LocomotionEnv):
  """Ant goal reaching; ``maze`` names a layout of :mod:`deepcrl_core.envs.mazes`."""

  state_size = 29
  goal_indices = (0, 1)
  action_size = 8

  def __init__(self, maze: Optional[str] = None, *, maze_scale: float = 4.0,
               goal_distance: float = 10.0, success_radius: float = 0.5,
               episode_length: int = 1000, timestep: float = 0.01, n_substeps: int = 5,
               reset_noise: float = 0.1, healthy_z=(0.2, 1.0),
               terminate_when_unhealthy: bool = True,
               max_contact_points: int = 8, mass: str = "mjcf",
               start_height: float = 0.55):
    if mass not in MASSES:
      raise ValueError(f"unknown ant mass {mass!r}; choose from {MASSES}")
    self.mass = mass
    self.start_height = float(start_height)
    if not 0.0 < self.start_height < 10.0:
      raise ValueError(f"start_height must be in (0, 10) m, got {start_height!r}")
    self.success_radius = float(success_radius)
    self.episode_length = int(episode_length)
    self.goal_distance = float(goal_distance)
    self.reset_noise = float(reset_noise)
    self._set_health(healthy_z, terminate_when_unhealthy)
    self._init_maze(maze, maze_scale)
    spec = ant_spec(in_maze=self.maze is not None)
    mjcf.set_mjx_options(spec, timestep=timestep)
    self._build_world(spec, max_contact_points=max_contact_points)
    spec.compiler.fusestatic = True
    mj_model = spec.compile()
    if mass == "published":
      mjcf.spring_links(mj_model, "torso", unit_mass=True)
    super().__init__(mj_model, n_substeps)
    self._find_wall_colliders(mj_model)
    # numpy constants: building an env never starts a JAX backend (config validation builds
    # envs before multi-host initialisation).
    self.init_qpos = np.array(INIT_QPOS, np.float32)
    self.init_qpos[:2] = self.start_xy
    self.init_qpos[2] = self.start_height

  def _obs(self, data, goal):
    return jnp.concatenate([data.qpos[:15], data.qvel[:14], goal])

  def reset(self, key):
    k_q, k_v, k_goal = jax.random.split(key, 3)
    noise = self.reset_noise
    qpos = self.init_qpos + jax.random.uniform(k_q, (15,), minval=-noise, maxval=noise)
    qpos = qpos.at[3:7].set(qpos[3:7] / jnp.linalg.norm(qpos[3:7]))
    qvel = noise * jax.random.normal(k_v, (14,))
    goal = self.sample_goal_xy(k_goal, (self.goal_distance, self.goal_distance))
    mocap = self.place_wall_colliders(self.mocap_pos0, qpos[:2])
    data = mjcf.kinematic_init(self.mjx_model, qpos, qvel, mocap)
    metrics = self.metrics(qpos[:2], goal)
    return State(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                 done=jnp.zeros(()), metrics=metrics, info={"goal": goal})

  def step(self, state, action):
    data = state.data
    data = data.replace(mocap_pos=self.place_wall_colliders(data.mocap_pos, data.qpos[:2]))
    data = self.pipeline_step(data, jnp.clip(action, -1.0, 1.0))
    goal = state.info["goal"]
    metrics = self.metrics(data.qpos[:2], goal)
    return state.replace(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                         done=self.termination(data), metrics=metrics)
