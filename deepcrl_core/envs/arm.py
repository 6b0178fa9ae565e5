"""Franka-Panda cube tasks: ``arm_push_easy``, ``arm_push_hard``, ``arm_binpick_hard``.

Model (authored here; primitives only): the published arm's kinematic chain (body positions
and orientations), explicit link inertials, joint ranges, armature 0.1 and damping 5, the
``general`` affine position actuators (gain / bias per joint as published; fingers remapped
to ctrl 0..255), the hand capsule (r 0.04, half-length 0.06; its 0.871 kg is the hand's
mass), finger boxes (0.015 x 0.005 x 0.04), a 6 cm cube (0.216 kg), the table plane and, for
bin picking, eight bin-wall boxes. The published meshes are visual only; here links are drawn
with visual-only capsules. Every geom has ``contype = conaffinity = 0``: contacts come only
from explicit ``<pair>``s. The two finger slides are coupled by a joint equality. The goal
lives in ``info["goal"]`` only (renderers draw it).

Physics presets (``physics=``, :data:`PHYSICS`):

* ``"fast"`` (default). Contacts (``contacts="proxy"``): the cube meets the table as published
  (box-plane) and the gripper through capsules: the hand's own capsule and, per finger, a
  massless capsule of the finger box's thickness on its long axis, its pad surface on the
  box's pad face. MJX tests capsule-box and capsule-plane pairs far more cheaply than the
  published box-box pairs. Gripper-table and gripper-wall contacts are frictionless
  (``condim`` 1, their own group under the contact cap); cube contacts keep the published
  friction. In bin picking the cube meets the walls through two wall-sized mocap boxes moved
  each control step onto the x-wall and the y-wall nearest the cube, the gripper through two
  more placed by the hand: a 6 cm cube can touch at most one wall of each orientation, so
  this is exact while a control step moves the cube less than the distance between walls.
  The 8 deepest contacts of each group are kept. Time step 0.005 s x 10 substeps (published:
  0.002 x 25), Newton with 6 iterations as published but 3 line-search steps (published 12:
  under ``vmap`` every line-search step is paid for, and 3 give identical trajectories here).
  Bin picking uses ``impratio`` 2 instead of the published 10: at this time step 10 makes the
  grasp fail (3 of 4 scripted picks that lift the cube in the published model drop it; with
  2 all 4 lift, final cube positions within 2 cm of the published model's).
* ``"published"``: the published pairs (minus finger-finger), 0.002 s x 25, 6/12 iterations,
  no contact cap. For comparisons: ~5-20x slower.

Why not faster: at 0.01 s steps the arm (up to ~3 m/s at the hand) drives the cube 3 cm into
things per step; scripted picks then fail and random actions launch the cube, and with fewer
than 6 Newton iterations a cube pinched between the arm and the table or a wall gets
launched too (``profiling/arm_physics.py`` measures both; ``profiling/RESULTS.md``).

State (17): cube position (3), the 7 arm joint angles, ``link7`` origin position (3) and its
world linear velocity (3), the distance between the two finger bodies (1); goal = cube
position (``goal_indices = (0, 1, 2)``), obs (20) = state + goal xyz. Actions (5) in [-1, 1]
are absolute targets: joint 1, 2, 4, 6 ctrl = centre + half-range * a (joints 3, 5, 7 held at
0, 0, 1.4487), gripper closed when ``a[4] > 0`` else open. Success: cube within 0.1 of the
goal; episodes never terminate early.
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
  </body>
</body>"""

CONTACT_MODELS = ("proxy", "published")
# Proxy model: each finger box touches things through two massless, invisible capsules along
# the finger's long axis (near the box's side edges), as thick as the box, their pad surface on
# the box's pad face; the hand through its own capsule. MJX tests capsules against boxes and
# planes far more cheaply than boxes against boxes.
FINGER_CAPSULE_RADIUS = 0.005
FINGER_CAPSULE_X = (-0.01, 0.01)  # across the finger (the box spans -0.015..0.015)
FINGER_CAPSULE_Z = (0.0, 0.07)    # segment ends along it (the box spans -0.005..0.075)


def finger_proxies(side: str) -> Tuple[str, ...]:
  return tuple(f"{side}_finger_proxy{k}" for k in range(len(FINGER_CAPSULE_X)))


def finger_proxy_xml(side: str) -> str:
  r = FINGER_CAPSULE_RADIUS
  y = 0.0005 + r  # the box's pad face is at y = 0.0005
  z0, z1 = FINGER_CAPSULE_Z
  return "".join(
      f'\n    <geom name="{name}" type="capsule" size="{r}" fromto="{x} {y} {z0} {x} {y} {z1}" '
      f'mass="0" group="3" rgba="0 0 0 0"/>'
      for name, x in zip(finger_proxies(side), FINGER_CAPSULE_X))


# Wall colliders of the proxy bin-picking model: (name, half size). The env moves each onto
# the bin wall of its orientation nearest the cube ("cube_*") or the hand ("hand_*").
WALL_COLLIDERS = (("cube_xwall", _BIN_WALLS[0][1]), ("cube_ywall", _BIN_WALLS[2][1]),
                  ("hand_xwall", _BIN_WALLS[0][1]), ("hand_ywall", _BIN_WALLS[2][1]))


def bin_walls(cube_region: Tuple, goal_region: Tuple) -> Tuple[np.ndarray, np.ndarray]:
  """World centres ``[4, 3]`` of the x-walls (long along x) and of the y-walls of both bins."""
  xw, yw = [], []
  for (cx, cy), _ in (cube_region, goal_region):
    for w, (pos, _) in enumerate(_BIN_WALLS):
      (xw if w < 2 else yw).append((cx + pos[0], cy + pos[1], pos[2]))
  return np.array(xw, np.float32), np.array(yw, np.float32)


def arm_xml(bins: bool, cube_region: Tuple, goal_region: Tuple,
            max_contact_points: Optional[int] = None, contacts: str = "proxy") -> str:
  """MJCF of the arm task. ``*_region`` = (centre xy, half-width xy): drawn floor pads.

  ``contacts="published"``: the published contact pairs (cube, hand capsule and finger boxes
  against the table and the bin walls, cube against hand and fingers) minus finger-finger.
  ``contacts="proxy"``: the gripper (hand capsule, two proxy capsules per finger) touches the
  cube with the published friction and the table and bin walls frictionless (condim 1); the
  cube meets the bins through two wall-sized mocap colliders, the gripper through two more
  (see :class:`Arm`).
  """
  if contacts not in CONTACT_MODELS:
    raise ValueError(f"unknown contact model {contacts!r}; known: {', '.join(CONTACT_MODELS)}")
  proxy = contacts == "proxy"
  chain = _HAND.format(left_proxy=finger_proxy_xml("left") if proxy else "",
                       right_proxy=finger_proxy_xml("right") if proxy else "")
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
  # (geom1, geom2, condim or None for the pair default 3)
  fingers = ("left_finger", "right_finger")
  if proxy:
    grip = ("hand",) + finger_proxies("left") + finger_proxies("right")
    pairs = [("cube", "table", None)] + [(g, "cube", None) for g in grip]
    pairs += [("table", g, 1) for g in grip]
  else:
    pairs = [("cube", "table", None), ("cube", "hand", None)]
    pairs += [("cube", f, None) for f in fingers]
    pairs += [("table", g, None) for g in ("hand",) + fingers]
  bin_geoms, colliders = [], []
  if bins:
    for b, ((cx, cy), _), rgba in (("binA", cube_region, "0 .2 .8 1"),
                                   ("binB", goal_region, ".8 0 0 1")):
      for w, (pos, size) in enumerate(_BIN_WALLS):
        name = f"{b}{w + 1}"
        cls = ' class="visual"' if proxy else ""
        bin_geoms.append(f'<geom name="{name}"{cls} type="box" pos="{cx + pos[0]} {cy + pos[1]} '
                         f'{pos[2]}" size="{_fmt(size)}" rgba="{rgba}"/>')
        if not proxy:
          pairs += [("cube", name, None)] + [(g, name, None) for g in fingers + ("hand",)]
    if proxy:
      for name, size in WALL_COLLIDERS:
        colliders.append(f'<body name="{name}" mocap="true" pos="0 0 -1"><geom name="{name}" '
                         f'type="box" size="{_fmt(size)}" group="3" rgba="0 0 0 0"/></body>')
        if name.startswith("cube"):
          pairs.append(("cube", name, None))
        else:
          pairs += [(g, name, 1) for g in grip]
  pairs = "\n    ".join(
      f'<pair geom1="{a}" geom2="{b}"' + (f' condim="{c}"/>' if c else "/>")
      for a, b, c in pairs)
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
    {''.join(colliders)}
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


# Physics presets: ``fast`` (default; the speed design of this library) and ``published`` (the
# published contact pairs, time step and solver settings, for comparisons).
PHYSICS = {
    "fast": dict(contacts="proxy", timestep=0.005, n_substeps=10, iterations=6, ls_iterations=3,
                 max_contact_points=8, impratio={"binpick_hard": 2.0}),
    "published": dict(contacts="published", timestep=0.002, n_substeps=25, iterations=6,
                      ls_iterations=12, max_contact_points=None, impratio={}),
}


class Arm(MjxEnv):
  """Panda cube task ``task`` (a key of :data:`TASKS`).

  ``physics`` picks a preset of :data:`PHYSICS`; any of ``contacts``, ``timestep``,
  ``n_substeps``, ``iterations``, ``ls_iterations``, ``max_contact_points`` (0 = no cap) and
  ``impratio`` overrides it (a preset's ``impratio`` maps tasks to values; tasks it does not
  name keep their published value).
  """

  state_size = 17
  goal_indices = (0, 1, 2)
  action_size = 5

  def __init__(self, task: str = "push_easy", *, physics: str = "fast",
               success_radius: float = 0.1, episode_length: int = 1000,
               contacts: Optional[str] = None, timestep: Optional[float] = None,
               n_substeps: Optional[int] = None, iterations: Optional[int] = None,
               ls_iterations: Optional[int] = None, max_contact_points: Optional[int] = None,
               impratio: Optional[float] = None):
    if task not in TASKS:
      raise ValueError(f"unknown arm task {task!r}; known: {', '.join(TASKS)}")
    if physics not in PHYSICS:
      raise ValueError(f"unknown arm physics preset {physics!r}; known: {', '.join(PHYSICS)}")
    opts = dict(PHYSICS[physics])
    for key, value in (("contacts", contacts), ("timestep", timestep), ("n_substeps", n_substeps),
                       ("iterations", iterations), ("ls_iterations", ls_iterations),
                       ("max_contact_points", max_contact_points)):
      if value is not None:
        opts[key] = value
    params = TASKS[task]
    opts["impratio"] = (float(impratio) if impratio is not None
                        else opts["impratio"].get(task, params.get("impratio", 1.0)))
    self.task = task
    self.physics = opts
    self.success_radius = float(success_radius)
    self.episode_length = int(episode_length)
    self.cube_region = tuple(np.asarray(v, np.float32) for v in params["cube_region"])
    self.goal_region = tuple(np.asarray(v, np.float32) for v in params["goal_region"])
    spec = mujoco.MjSpec.from_string(
        arm_xml(params["bins"], params["cube_region"], params["goal_region"],
                opts["max_contact_points"] or None, opts["contacts"]))
    mjcf.set_mjx_options(spec, timestep=opts["timestep"], iterations=opts["iterations"],
                         ls_iterations=opts["ls_iterations"],
                         integrator=mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
                         impratio=opts["impratio"])
    mj_model = spec.compile()
    super().__init__(mj_model, opts["n_substeps"])
    body = lambda n: mj_model.body(n).id
    self._link7, self._root, self._hand = body("link7"), body("link0"), body("hand")
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
    # bin-wall colliders (proxy bin picking): mocap slots and the candidate wall centres
    self._colliders = bool(params["bins"]) and opts["contacts"] == "proxy"
    if self._colliders:
      order = [int(mj_model.body_mocapid[body(n)]) for n, _ in WALL_COLLIDERS]
      if order != list(range(len(WALL_COLLIDERS))):
        raise ValueError(f"unexpected mocap order of the wall colliders: {order}")
      xw, yw = bin_walls(params["cube_region"], params["goal_region"])
      self._walls = (jnp.asarray(xw), jnp.asarray(yw))
      self._wall_half = (np.asarray(_BIN_WALLS[0][1], np.float32),
                         np.asarray(_BIN_WALLS[2][1], np.float32))
      # the hand's start position (the arm always starts in the same pose)
      d0 = mujoco.MjData(mj_model)
      d0.qpos[:] = qpos0
      mujoco.mj_kinematics(mj_model, d0)
      self._hand0 = jnp.asarray(d0.xpos[self._hand], jnp.float32)

  def collider_positions(self, cube: jax.Array, hand: jax.Array) -> jax.Array:
    """``[4, 3]`` mocap positions: the x- and y-wall nearest the cube, then the hand."""
    out = []
    for point in (cube, hand):
      for centres, half in zip(self._walls, self._wall_half):
        gap = jnp.maximum(jnp.abs(point[None, :2] - centres[:, :2]) - half[:2], 0.0)
        out.append(centres[jnp.argmin(jnp.sum(gap * gap, axis=-1))])
    return jnp.stack(out)

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
    return self.reset_at(cube_xy, goal)

  def reset_at(self, cube_xy: jax.Array, goal: jax.Array) -> State:
    """The start state with the cube resting at ``cube_xy`` and goal ``goal`` (xyz)."""
    qpos = self.init_qpos.at[0:2].set(cube_xy)
    mocap = (self.collider_positions(qpos[0:3], self._hand0) if self._colliders else None)
    data = mjcf.kinematic_init(self.mjx_model, qpos, jnp.zeros(self.mj_model.nv), mocap)
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
    data = state.data
    if self._colliders:
      data = data.replace(mocap_pos=self.collider_positions(data.qpos[0:3],
                                                            data.xpos[self._hand]))
    data = self.pipeline_step(data, self.ctrl_from_action(action))
    goal = state.info["goal"]
    metrics = self.metrics(data.qpos[0:3], goal)
    return state.replace(data=data, obs=self._obs(data, goal), reward=metrics["success"],
                         done=jnp.zeros(()), metrics=metrics)

  def metrics(self, cube, goal):
    m = self.goal_metrics(cube, goal)
    m["success_easy"] = (m["dist"] < 0.3).astype(jnp.float32)
    m["success_hard"] = (m["dist"] < 0.03).astype(jnp.float32)
    return m
