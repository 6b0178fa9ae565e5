"""A point mass that must reach goals in a square arena: the cheap quick-start task.

A ball on two horizontal slide joints driven by two motors, with damping so its speed saturates
(top speed ``gear / damping`` = 1.5 m/s). The arena is a ``[-size, size]^2`` square whose walls
are applied after each control step (position clipped, velocity into the wall zeroed), which
keeps MJX free of contacts and constraints. Start and goal are uniform in the arena.

State (4): ball x, y, vx, vy; goal = x, y (``goal_indices=(0, 1)``); actions (2) in [-1, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco

from deepcrl_core.envs.base import MjxEnv, State

_XML = """
<mujoco model="pointmass">
  <option timestep="{timestep}" integrator="Euler"/>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="{floor} {floor} 0.1" contype="0" conaffinity="0"
          rgba=".85 .85 .85 1"/>
    <body name="ball" pos="0 0 {radius}">
      <joint name="x" type="slide" axis="1 0 0" damping="{damping}"/>
      <joint name="y" type="slide" axis="0 1 0" damping="{damping}"/>
      <geom name="ball" type="sphere" size="{radius}" mass="1" contype="0" conaffinity="0"
            rgba=".2 .4 .9 1"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="x" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
    <motor joint="y" gear="{gear}" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""


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
    xml = _XML.format(timestep=control_dt / n_substeps, floor=arena_size + 0.2,
                      radius=ball_radius, damping=damping, gear=max_speed * damping)
    super().__init__(mujoco.MjModel.from_xml_string(xml), n_substeps)

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
