"""Franka-Panda cube tasks: ``arm_push_easy``, ``arm_push_hard``, ``arm_binpick_hard``.

Model (``assets/panda_cube.xml``, authored here; primitives only): the published arm's
kinematic chain (body positions
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

from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl_core.envs import mjcf
from deepcrl_core.envs.base import MjxEnv, State

ARM_INIT_QPOS = (1.571, 0.742, 0.0, -1.571, 0.0, 3.054, 1.449)
FINGER_INIT_QPOS = 0.04
CUBE_HALF = 0.03

# Bin walls of the bin-picking task: (centre, half size), relative to the bin's centre.
_BIN_WALLS = (((0, -0.19, 0.033), (0.195, 0.005, 0.033)), ((0, 0.19, 0.033), (0.195, 0.005, 0.033)),
              ((0.19, 0, 0.033), (0.005, 0.185, 0.033)), ((-0.19, 0, 0.033), (0.005, 0.185, 0.033)))

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


def add_finger_proxies(spec: mujoco.MjSpec, side: str) -> None:
  """Adds the proxy capsules of the ``side`` finger (``"left"`` or ``"right"``) to ``spec``."""
  r = FINGER_CAPSULE_RADIUS
  y = 0.0005 + r  # the box's pad face is at y = 0.0005
  z0, z1 = FINGER_CAPSULE_Z
  finger = spec.body(f"{side}_finger")
  for name, x in zip(finger_proxies(side), FINGER_CAPSULE_X):
    finger.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_CAPSULE, size=[r, 0.0, 0.0],
                    fromto=[x, y, z0, x, y, z1], mass=0.0, group=3, rgba=[0.0, 0.0, 0.0, 0.0])


# Wall colliders of the proxy bin-picking model (mocap boxes of ``assets/panda_cube.xml``, sized
# as the x-walls and y-walls of :data:`_BIN_WALLS`). The env moves each onto the bin wall of
# its orientation nearest the cube ("cube_*") or the hand ("hand_*").
WALL_COLLIDERS = ("cube_xwall", "cube_ywall", "hand_xwall", "hand_ywall")


def bin_walls(cube_region: Tuple, goal_region: Tuple) -> Tuple[np.ndarray, np.ndarray]:
  """World centres ``[4, 3]`` of the x-walls (long along x) and of the y-walls of both bins."""
  xw, yw = [], []
  for (cx, cy), _ in (cube_region, goal_region):
    for w, (pos, _) in enumerate(_BIN_WALLS):
      (xw if w < 2 else yw).append((cx + pos[0], cy + pos[1], pos[2]))
  return np.array(xw, np.float32), np.array(yw, np.float32)


def arm_spec(bins: bool, cube_region: Tuple, goal_region: Tuple,
             max_contact_points: Optional[int] = None, contacts: str = "proxy") -> mujoco.MjSpec:
  """``assets/panda_cube.xml`` edited into an arm task. ``*_region`` = (centre xy, half-width
  xy): the cube starts at the start region's centre; both are drawn as floor pads.

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
  spec = mjcf.load_spec("panda_cube.xml")
  spec.modelname = f"panda_{'binpick' if bins else 'push'}"
  if max_contact_points:
    mjcf.add_contact_caps(spec, max_contact_points=max_contact_points)
  spec.body("cube").pos = [cube_region[0][0], cube_region[0][1], CUBE_HALF]
  box = mujoco.mjtGeom.mjGEOM_BOX
  visual = spec.find_default("visual")
  blue, red = [0.0, 0.2, 0.8, 1.0], [0.8, 0.0, 0.0, 1.0]
  for name, ((cx, cy), (hx, hy)), rgba in (("start_pad", cube_region, blue),
                                           ("goal_pad", goal_region, red)):
    spec.worldbody.add_geom(name=name, default=visual, type=box, pos=[cx, cy, 0.0005],
                            size=[hx + CUBE_HALF, hy + CUBE_HALF, 0.0005], rgba=rgba)
  if proxy:
    add_finger_proxies(spec, "left")
    add_finger_proxies(spec, "right")
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
  if bins:
    for b, ((cx, cy), _), rgba in (("binA", cube_region, blue), ("binB", goal_region, red)):
      for w, (pos, size) in enumerate(_BIN_WALLS):
        name = f"{b}{w + 1}"
        spec.worldbody.add_geom(name=name, default=visual if proxy else None, type=box,
                                pos=[cx + pos[0], cy + pos[1], pos[2]], size=list(size),
                                rgba=rgba)
        if not proxy:
          pairs += [("cube", name, None)] + [(g, name, None) for g in fingers + ("hand",)]
  if bins and proxy:
    for name in WALL_COLLIDERS:
      if name.startswith("cube"):
        pairs.append(("cube", name, None))
      else:
        pairs += [(g, name, 1) for g in grip]
  else:
    for name in WALL_COLLIDERS:
      spec.delete(spec.body(name))
  mjcf.add_pairs(spec, pairs)
  return spec


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
    spec = arm_spec(params["bins"], params["cube_region"], params["goal_region"],
                    opts["max_contact_points"] or None, opts["contacts"])
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
    self.init_qpos = qpos0  # numpy constants: building an env never starts a JAX backend
    # bin-wall colliders (proxy bin picking): mocap slots and the candidate wall centres
    self._colliders = bool(params["bins"]) and opts["contacts"] == "proxy"
    if self._colliders:
      if mjcf.mocap_slots(mj_model, WALL_COLLIDERS) != slice(0, mj_model.nmocap):
        raise ValueError("the wall colliders must be the model's only mocap bodies, in order")
      xw, yw = bin_walls(params["cube_region"], params["goal_region"])
      self._walls = (np.asarray(xw), np.asarray(yw))
      self._wall_half = (np.asarray(_BIN_WALLS[0][1], np.float32),
                         np.asarray(_BIN_WALLS[2][1], np.float32))
      # the hand's start position (the arm always starts in the same pose)
      d0 = mujoco.MjData(mj_model)
      d0.qpos[:] = qpos0
      mujoco.mj_kinematics(mj_model, d0)
      self._hand0 = np.asarray(d0.xpos[self._hand], np.float32)

  def collider_positions(self, cube: jax.Array, hand: jax.Array) -> jax.Array:
    """``[4, 3]`` mocap positions: the x- and y-wall nearest the cube, then the hand."""
    return jnp.concatenate([mjcf.nearest_boxes(point[:2], centres, half[:2], 1)
                            for point in (cube, hand)
                            for centres, half in zip(self._walls, self._wall_half)])

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
    qpos = jnp.asarray(self.init_qpos).at[0:2].set(cube_xy)
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
