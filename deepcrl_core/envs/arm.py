"""Franka-Panda cube tasks: ``arm_push_easy``, ``arm_push_hard``, ``arm_binpick_hard``.

Model (authored here; primitives only): the published arm's kinematic chain (body positions
and orientations), explicit link inertials, joint ranges, armature 0.1 and damping 5, the
``general`` affine position actuators (gain / bias per joint as published; fingers remapped
to ctrl 0..255) and the primitive collision geoms: hand capsule (r 0.04, half-length 0.06;
its 0.871 kg is the hand's mass), finger boxes (0.015 x 0.005 x 0.04), a 6 cm cube (0.216 kg),
the table plane and, for bin picking, eight bin-wall boxes. The published meshes are visual
only; here links are drawn with visual-only capsules (no mass, no contacts). Every geom has
``contype = conaffinity = 0``: contacts come only from explicit ``<pair>``s, the published
ones (pair friction defaults to 1) except that in bin picking the fingers and the hand meet
the bin walls through massless proxy spheres (fingertips r 0.015, hand-capsule ends r 0.04),
which MJX tests far more cheaply than box-box and capsule-box pairs. The two finger slides are
coupled by a joint equality. The goal lives in ``info["goal"]`` only (the published model
also had a free "goal marker" body with gravity compensation for rendering: 7 more qpos that
no observation reads; renderers draw the goal themselves).

State (17): cube position (3), the 7 arm joint angles, ``link7`` origin position (3) and its
world linear velocity (3), the distance between the two finger bodies (1); goal = cube
position (``goal_indices = (0, 1, 2)``), obs (20) = state + goal xyz. Actions (5) in [-1, 1]
are absolute targets: joint 1, 2, 4, 6 ctrl = centre + half-range * a (joints 3, 5, 7 held at
0, 0, 1.4487), gripper closed when ``a[4] > 0`` else open. Success: cube within 0.1 of the
goal; episodes never terminate early.

Physics: implicitfast integrator, pyramidal cones, Newton solver with 6 iterations and 12
line-search steps (as published; binpick_hard also ``impratio`` 10), but 0.005 s x 10 substeps
per 0.05 s control step instead of the published 0.002 s x 25 (2.5x cheaper; on a scripted
reach in C MuJoCo the hand path differs by < 5 mm, and the bin-picking model stays stable,
which it does not with fewer solver iterations). ``max_contact_points`` keeps the 12 deepest
of the candidate contacts (24 for pushing, 88 for bin picking); the published
finger-finger pair is dropped (the coupled fingers stay 1 mm apart when closed).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl_core.envs import mjcf
from deepcrl_core.envs.base import MjxEnv, State

# body, parent-relative pos, quat (wxyz, unnormalised as published), inertial (mass, com pos,
# full inertia ixx iyy izz ixy ixz iyz), joint (name, range or None for the class default).
_LINKS = (
    ("link1", (0, 0, 0.333), (1, 0, 0, 0),
     (4.970684, (0.003875, 0.002081, -0.04762),
      (0.70337, 0.70661, 0.0091170, -0.00013900, 0.0067720, 0.019169)), ("joint1", None)),
    ("link2", (0, 0, 0), (1, -1, 0, 0),
     (0.646926, (-0.003141, -0.02872, 0.003495),
      (0.0079620, 2.8110e-2, 2.5995e-2, -3.925e-3, 1.0254e-2, 7.04e-4)),
     ("joint2", (-1.7628, 1.7628))),
    ("link3", (0, -0.316, 0), (1, 1, 0, 0),
     (3.228604, (2.7518e-2, 3.9252e-2, -6.6502e-2),
      (3.7242e-2, 3.6155e-2, 1.083e-2, -4.761e-3, -1.1396e-2, -1.2805e-2)), ("joint3", None)),
    ("link4", (0.0825, 0, 0), (1, 1, 0, 0),
     (3.587895, (-5.317e-2, 1.04419e-1, 2.7454e-2),
      (2.5853e-2, 1.9552e-2, 2.8323e-2, 7.796e-3, -1.332e-3, 8.641e-3)),
     ("joint4", (-3.0718, -0.0698))),
    ("link5", (-0.0825, 0.384, 0), (1, -1, 0, 0),
     (1.225946, (-1.1953e-2, 4.1065e-2, -3.8437e-2),
      (3.5549e-2, 2.9474e-2, 8.627e-3, -2.117e-3, -4.037e-3, 2.29e-4)), ("joint5", None)),
    ("link6", (0, 0, 0), (1, 1, 0, 0),
     (1.666555, (6.0149e-2, -1.4117e-2, -1.0517e-2),
      (1.964e-3, 4.354e-3, 5.433e-3, 1.09e-4, -1.158e-3, 3.41e-4)),
     ("joint6", (-0.0175, 3.7525))),
    ("link7", (0.088, 0, 0), (1, 1, 0, 0),
     (7.35522e-01, (1.0517e-2, -4.252e-3, 6.1597e-2),
      (1.2516e-2, 1.0027e-2, 4.815e-3, -4.28e-4, -1.196e-3, -7.41e-4)), ("joint7", None)),
)
# Visual capsule per link: endpoints in the link frame (drawn only).
_LINK_VISUALS = {
    "link0": ((0, 0, 0.05), (0, 0, 0.25)),
    "link1": ((0, 0, -0.19), (0, 0, 0)),
    "link2": ((0, 0, 0), (0, -0.2, 0)),
    "link3": ((0, 0, -0.12), (0.0825, 0, 0)),
    "link4": ((0, 0, 0), (-0.0825, 0.2, 0)),
    "link5": ((0, 0, -0.22), (0, 0.05, -0.1)),
    "link6": ((0, 0, 0), (0.088, 0, 0)),
    "link7": ((0, 0, 0), (0, 0, 0.08)),
}
# (gain, kp, kv, forcerange, ctrlrange) per arm actuator, as published: force =
# gain * ctrl - kp * q - kv * qdot.
_ACTUATORS = (
    (4500, 4500, 450, 87, None), (4500, 4500, 450, 87, (-1.7628, 1.7628)),
    (2000, 3500, 350, 87, None), (2000, 3500, 350, 87, (-3.0718, -0.0698)),
    (1000, 2000, 200, 12, None), (1000, 2000, 200, 12, (-0.0175, 3.7525)),
    (1000, 2000, 200, 12, None),
)
_FINGER_GAIN = 0.08 * 500 / 255  # ctrl 0..255 -> static opening 0..0.08

ARM_INIT_QPOS = (1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449)
FINGER_INIT_QPOS = 0.04
CUBE_HALF = 0.03

# Bin walls of the bin-picking task: (bin centre xy, rgba); walls relative to the centre.
_BIN_WALLS = (((0, -0.19, 0.033), (0.195, 0.005, 0.033)), ((0, 0.19, 0.033), (0.195, 0.005, 0.033)),
              ((0.19, 0, 0.033), (0.005, 0.185, 0.033)), ((-0.19, 0, 0.033), (0.005, 0.185, 0.033)))


def _fmt(v: Sequence[float]) -> str:
  return " ".join(f"{x:.6g}" for x in v)


def _link_xml(k: int, inner: str) -> str:
  name, pos, quat, (mass, com, inertia), (joint, jrange) = _LINKS[k]
  a, b = _LINK_VISUALS[name]
  rng = f' range="{_fmt(jrange)}"' if jrange else ""
  return f"""
<body name="{name}" pos="{_fmt(pos)}" quat="{_fmt(quat)}">
  <inertial mass="{mass}" pos="{_fmt(com)}" fullinertia="{_fmt(inertia)}"/>
  <joint name="{joint}"{rng}/>
  <geom class="visual" type="capsule" size="0.055" fromto="{_fmt(a)} {_fmt(b)}"/>{inner}
</body>"""


_HAND = """
<body name="hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834">
  <geom name="hand" type="capsule" size="0.04 0.06" pos="0 0 0.035" quat="1 1 0 0"
        rgba=".95 .95 .95 1"/>
  <body name="left_finger" pos="0 0 0.0584">
    <inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
    <joint name="finger_joint1" class="finger"/>
    <geom name="left_finger" type="box" size="0.015 0.005 0.04" pos="0 0.0055 0.035"
          rgba=".25 .25 .25 1"/>{left_proxy}
  </body>
  <body name="right_finger" pos="0 0 0.0584" quat="0 0 0 1">
    <inertial mass="0.015" pos="0 0 0" diaginertia="2.375e-6 2.375e-6 7.5e-7"/>
    <joint name="finger_joint2" class="finger"/>
    <geom name="right_finger" type="box" size="0.015 0.005 0.04" pos="0 0.0055 0.035"
          rgba=".25 .25 .25 1"/>{right_proxy}
  </body>{hand_proxies}
</body>"""

# Bin-wall proxies (bin picking): spheres that stand in for the finger boxes and the hand
# capsule against the bin walls, so that MJX runs 32 cheap sphere-box tests instead of 16
# box-box and 8 capsule-box ones. Massless and invisible.
_FINGER_PROXY = """
    <geom name="{side}_finger_tip" type="sphere" size="0.015" pos="0 0.0055 0.06" mass="0"
          group="3" rgba="0 0 0 0"/>"""
_HAND_PROXIES = """
  <geom name="hand_end_a" type="sphere" size="0.04" pos="0 0.06 0.035" mass="0" group="3"
        rgba="0 0 0 0"/>
  <geom name="hand_end_b" type="sphere" size="0.04" pos="0 -0.06 0.035" mass="0" group="3"
        rgba="0 0 0 0"/>"""



def arm_xml(bins: bool, cube_region: Tuple, goal_region: Tuple,
            max_contact_points: Optional[int] = None, wall_proxies: bool = True) -> str:
  """MJCF of the arm task. ``*_region`` = (centre xy, half-width xy): drawn floor pads.

  ``wall_proxies`` (bin picking): the fingers and the hand meet the bin walls through spheres
  (fingertip spheres r 0.015, spheres r 0.04 at the hand capsule's ends) instead of their own
  box and capsule geoms (the published pairs).
  """
  proxies = bins and wall_proxies
  chain = _HAND.format(
      left_proxy=_FINGER_PROXY.format(side="left") if proxies else "",
      right_proxy=_FINGER_PROXY.format(side="right") if proxies else "",
      hand_proxies=_HAND_PROXIES if proxies else "")
  for k in reversed(range(len(_LINKS))):
    chain = _link_xml(k, chain)
  actuators = []
  for k, (gain, kp, kv, force, ctrl) in enumerate(_ACTUATORS):
    crange = f' ctrlrange="{_fmt(ctrl)}"' if ctrl else ""
    actuators.append(
        f'<general class="panda" name="actuator{k + 1}" joint="joint{k + 1}" gainprm="{gain}" '
        f'biasprm="0 -{kp} -{kv}" forcerange="-{force} {force}"{crange}/>')
  for k in (1, 2):
    actuators.append(
        f'<general class="panda" name="finger_actuator{k}" joint="finger_joint{k}" '
        f'gainprm="{_FINGER_GAIN:.6g}" biasprm="0 -500 -50" forcerange="-500 500" '
        f'ctrlrange="0 255"/>')
  pads = []
  for name, ((cx, cy), (hx, hy)), rgba in (("start_pad", cube_region, "0 .2 .8 1"),
                                           ("goal_pad", goal_region, ".8 0 0 1")):
    pads.append(f'<geom name="{name}" class="visual" type="box" pos="{cx} {cy} 0.0005" '
                f'size="{hx + CUBE_HALF} {hy + CUBE_HALF} 0.0005" rgba="{rgba}"/>')
  bin_geoms, pairs = [], []
  pair_names = [("cube", "table"), ("cube", "hand"), ("cube", "left_finger"),
                ("cube", "right_finger"), ("table", "hand"), ("table", "left_finger"),
                ("table", "right_finger")]
  if bins:
    for b, ((cx, cy), _), rgba in (("binA", cube_region, "0 .2 .8 1"),
                                   ("binB", goal_region, ".8 0 0 1")):
      for w, (pos, size) in enumerate(_BIN_WALLS):
        name = f"{b}{w + 1}"
        bin_geoms.append(f'<geom name="{name}" type="box" pos="{cx + pos[0]} {cy + pos[1]} '
                         f'{pos[2]}" size="{_fmt(size)}" rgba="{rgba}"/>')
        if proxies:
          pair_names += [("cube", name), ("left_finger_tip", name), ("right_finger_tip", name),
                         ("hand_end_a", name), ("hand_end_b", name)]
        else:
          pair_names += [("cube", name), ("left_finger", name), ("right_finger", name),
                         ("hand", name)]
  pairs = "\n    ".join(f'<pair geom1="{a}" geom2="{b}"/>' for a, b in pair_names)
  caps = (f'<custom><numeric name="max_contact_points" data="{max_contact_points}"/></custom>'
          if max_contact_points else "")
  return f"""
<mujoco model="panda_{'binpick' if bins else 'push'}">
  <compiler angle="radian" autolimits="true"/>
  {caps}
  <option integrator="implicitfast" cone="pyramidal"/>
  <default>
    <geom contype="0" conaffinity="0"/>
    <default class="panda">
      <joint armature="0.1" damping="5" axis="0 0 1" range="-2.8973 2.8973"/>
      <general dyntype="none" biastype="affine" ctrlrange="-2.8973 2.8973"/>
      <default class="finger">
        <joint axis="0 1 0" type="slide" range="0 0.08"/>
      </default>
    </default>
    <default class="visual">
      <geom group="2" density="0" rgba=".92 .92 .93 1"/>
    </default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" width="256" height="256"
             rgb1=".55 .5 .45" rgb2=".6 .55 .5"/>
    <material name="grid" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light pos="0 0.5 2" dir="0 0 -1" directional="true"/>
    <camera name="front" pos="0 1.9 1.1" xyaxes="-1 0 0 0 -0.5 0.87"/>
    <geom name="table" type="plane" pos="0 0.2 0" size="2.8 2.4 0.1" material="grid"/>
    {''.join(pads)}
    {''.join(bin_geoms)}
    <body name="cube" pos="{cube_region[0][0]} {cube_region[0][1]} {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" density="1000"
            rgba="0 .4 0 1"/>
    </body>
    <body name="link0" childclass="panda">
      <geom class="visual" type="capsule" size="0.06"
            fromto="{_fmt(_LINK_VISUALS['link0'][0])} {_fmt(_LINK_VISUALS['link0'][1])}"/>
      {chain}
    </body>
  </worldbody>
  <equality>
    <joint joint1="finger_joint1" joint2="finger_joint2" solimp="0.95 0.99 0.001"
           solref="0.005 1"/>
  </equality>
  <contact>
    {pairs}
  </contact>
  <actuator>
    {chr(10).join(actuators)}
  </actuator>
</mujoco>"""


# Task parameters: cube start region and goal region, (centre xy, half-width xy).
TASKS = {
    "push_easy": dict(cube_region=((-0.1, 0.6), (0.1, 0.1)),
                      goal_region=((0.1, 0.6), (0.1, 0.1)), bins=False),
    "push_hard": dict(cube_region=((-0.25, 0.65), (0.25, 0.25)),
                      goal_region=((0.25, 0.65), (0.25, 0.25)), bins=False),
    "binpick_hard": dict(cube_region=((-0.3, 0.6), (0.15, 0.15)),
                         goal_region=((0.3, 0.6), (0.15, 0.15)), bins=True, impratio=10.0),
}


class Arm(MjxEnv):
  """Panda cube task ``task`` (a key of :data:`TASKS`)."""

  state_size = 17
  goal_indices = (0, 1, 2)
  action_size = 5

  def __init__(self, task: str = "push_easy", *, success_radius: float = 0.1,
               episode_length: int = 1000, timestep: float = 0.005, n_substeps: int = 10,
               iterations: int = 6, ls_iterations: int = 12,
               max_contact_points: Optional[int] = 12, wall_proxies: bool = True):
    if task not in TASKS:
      raise ValueError(f"unknown arm task {task!r}; known: {', '.join(TASKS)}")
    params = TASKS[task]
    self.task = task
    self.success_radius = float(success_radius)
    self.episode_length = int(episode_length)
    self.cube_region = tuple(np.asarray(v, np.float32) for v in params["cube_region"])
    self.goal_region = tuple(np.asarray(v, np.float32) for v in params["goal_region"])
    spec = mujoco.MjSpec.from_string(
        arm_xml(params["bins"], params["cube_region"], params["goal_region"],
                max_contact_points, wall_proxies))
    mjcf.set_mjx_options(spec, timestep=timestep, iterations=iterations,
                         ls_iterations=ls_iterations,
                         integrator=mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
                         impratio=params.get("impratio"))
    mj_model = spec.compile()
    super().__init__(mj_model, n_substeps)
    body = lambda n: mj_model.body(n).id
    self._link7, self._root = body("link7"), body("link0")
    self._fingers = (body("left_finger"), body("right_finger"))
    self._arm_qadr = np.array([mj_model.jnt_qposadr[mj_model.joint(f"joint{k}").id]
                               for k in range(1, 8)])
    self._finger_qadr = np.array([mj_model.jnt_qposadr[mj_model.joint(f"finger_joint{k}").id]
                                  for k in (1, 2)])
    self._cube_qadr = int(mj_model.jnt_qposadr[mj_model.joint("cube").id])
    if self._cube_qadr != 0:
      raise ValueError("the cube's free joint must come first in qpos")
    qpos0 = np.array(mj_model.qpos0, np.float32)
    qpos0[self._arm_qadr] = ARM_INIT_QPOS
    qpos0[self._finger_qadr] = FINGER_INIT_QPOS
    self.init_qpos = jnp.asarray(qpos0)

  def _obs(self, data, goal):
    link7 = data.xpos[self._link7]
    # cvel is [angular, linear] at the subtree com of the arm's root body, world axes.
    ang, lin = data.cvel[self._link7, :3], data.cvel[self._link7, 3:]
    vel = lin + jnp.cross(ang, link7 - data.subtree_com[self._root])
    gap = jnp.linalg.norm(data.xpos[self._fingers[0]] - data.xpos[self._fingers[1]])
    state = jnp.concatenate([data.qpos[0:3], data.qpos[self._arm_qadr], link7, vel, gap[None]])
    return jnp.concatenate([state, goal])

  def _uniform(self, key, region):
    centre, half = region
    return jnp.asarray(centre) + jnp.asarray(half) * jax.random.uniform(key, (2,), minval=-1,
                                                                          maxval=1)

  def reset(self, key):
    k_cube, k_goal = jax.random.split(key)
    cube_xy = self._uniform(k_cube, self.cube_region)
    goal = jnp.concatenate([self._uniform(k_goal, self.goal_region), jnp.full((1,), CUBE_HALF)])
    qpos = self.init_qpos.at[0:2].set(cube_xy)
    data = mjcf.kinematic_init(self.mjx_model, qpos, jnp.zeros(self.mj_model.nv))
    metrics = self.metrics(qpos[0:3], goal)
    return State(data=data, obs=self._obs(data, goal), reward=metrics["success"],
                 done=jnp.zeros(()), metrics=metrics, info={"goal": goal})

  def ctrl_from_action(self, action: jax.Array) -> jax.Array:
    """Absolute joint targets from ``action`` in [-1, 1]^5 (published mapping)."""
    a = jnp.clip(action, -1.0, 1.0)
    arm = jnp.stack([1.5708 + 1.2217 * a[0], 0.74177 + 0.74177 * a[1], 0.0,
                     -1.5708 + 1.5010 * a[2], 0.0, 3.05435 + 0.69815 * a[3], 1.4487])
    finger = jnp.where(a[4] > 0, 0.0, 255.0)
    return jnp.concatenate([arm, jnp.stack([finger, finger])])

  def step(self, state, action):
    data = self.pipeline_step(state.data, self.ctrl_from_action(action))
    goal = state.info["goal"]
    metrics = self.metrics(data.qpos[0:3], goal)
    return state.replace(data=data, obs=self._obs(data, goal), reward=metrics["success"],
                         done=jnp.zeros(()), metrics=metrics)

  def metrics(self, cube, goal):
    m = self.goal_metrics(cube, goal)
    m["success_easy"] = (m["dist"] < 0.3).astype(jnp.float32)
    m["success_hard"] = (m["dist"] < 0.03).astype(jnp.float32)
    return m
