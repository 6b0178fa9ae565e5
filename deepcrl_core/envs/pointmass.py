"""A point mass that must reach goals in a square arena: the cheap quick-start task.

A ball on two horizontal slide joints driven by two motors, with damping so its speed saturates
(top speed ``gear / damping`` = 1.5 m/s). The arena is a ``[-size, size]^2`` square whose walls
are applied after each control step (position clipped, velocity into the wall zeroed), which
keeps MJX free of contacts and constraints. Start and goal are uniform in the arena. Model:
``assets/pointmass.xml``, sized by the constructor's arguments.

State (4): ball x, y, vx, vy; goal = x, y (``goal_indices=(0, 1)``); actions (2) in [-1, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco

from deepcrl_core.envs import mjcf
from deepcrl_core.envs.base import MjxEnv, State


def pointmass_spec(arena_size: float = 1.0, timestep: float = 0.05, max_speed: float = 1.5,
                   damping: float = 2.0, ball_radius: float = 0.05) -> mujoco.MjSpec:
  """``assets/pointmass.xml`` with the arena (floor 0.2 m wider), ball and motors set."""
  spec = mjcf.load_spec("pointmass.xml")
  spec.option.timestep = timestep
  floor = arena_size + 0.2
  spec.geom("floor").size = [floor, floor, 0.1]
  spec.body("ball").pos = [0.0, 0.0, ball_radius]
  spec.geom("ball").size = mjcf.set_first(spec.geom("ball").size, ball_radius)
  for joint in ("x", "y"):
    spec.joint(joint).damping = mjcf.set_first(spec.joint(joint).damping, damping)
  for motor in spec.actuators:
    motor.gear = mjcf.set_first(motor.gear, max_speed * damping)
  return spec

class PointMass(MjxEnv):
  """Goal reaching for a point mass in an open square arena."""

  state_size = 4
  goal_indices = (0, 1)
  action_size = 2

  def __init__(self, arena_size: float = 1.0, success_radius: float = 0.1,
               episode_length: int = 50, control_dt: float = 0.1, n_substeps: int = 2,
               max_speed: float = 1.5, damping: float = 2.0, ball_radius: float = 0.05):
    self.arena_size = float(arena_size)
    self.success_radius = float(success_radius)
    self.episode_length = int(episode_length)
    spec = pointmass_spec(arena_size, timestep=control_dt / n_substeps, max_speed=max_speed,
                          damping=damping, ball_radius=ball_radius)
    super().__init__(spec.compile(), n_substeps)

  def _obs(self, data, goal):
    return jnp.concatenate([data.qpos[:2], data.qvel[:2], goal])

  def reset(self, key):
    k_pos, k_goal = jax.random.split(key)
    lim = self.arena_size
    qpos = jax.random.uniform(k_pos, (2,), minval=-lim, maxval=lim)
    goal = jax.random.uniform(k_goal, (2,), minval=-lim, maxval=lim)
    data = self.pipeline_init(qpos, jnp.zeros(2))
    metrics = self.goal_metrics(qpos, goal)
    return State(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                 done=jnp.zeros(()), metrics=metrics, info={"goal": goal})

  def step(self, state, action):
    action = jnp.clip(action, -1.0, 1.0)
    data = self.pipeline_step(state.data, action)
    lim = self.arena_size
    qpos = jnp.clip(data.qpos, -lim, lim)
    hit = ((qpos >= lim) & (data.qvel > 0)) | ((qpos <= -lim) & (data.qvel < 0))
    data = data.replace(qpos=qpos, qvel=jnp.where(hit, 0.0, data.qvel))
    goal = state.info["goal"]
    metrics = self.goal_metrics(data.qpos[:2], goal)
    return state.replace(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                         done=jnp.zeros(()), metrics=metrics)
