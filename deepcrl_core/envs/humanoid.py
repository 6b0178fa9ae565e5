"""Humanoid goal reaching, in the open (``humanoid``) and in mazes (``humanoid_*_maze[_eval]``).

Model: gymnasium's ``humanoid.xml`` (vendored unmodified as ``assets/humanoid.xml``, MIT
licence in ``assets/LICENSE.humanoid``; primitives only) edited with ``mujoco.MjSpec``: the
two fixed hip-knee tendons and the RK4 integrator are dropped, static bodies are fused (the
jointless feet join the shins, leaving the 11 robot links), robot geoms touch the floor but
not each other (and the walls in a maze), and a non-colliding 1 kg ``target`` body on two free
x/y slide joints at z 1.25 holds the goal, as in the published model. 17 motors,
``ctrl = 0.4 * action`` (the published action mapping), with gears (``actuation``):

* ``"gymnasium"`` (default): the MJCF's own gears, 100 x5, 300, 200, 100 x2, 300, 200, 25 x6
  (abdomen, hips, knees, then shoulders and elbows), as JaxGCRL's MJX code path uses them.
* ``"published"``: the gears the paper's code sets for brax's spring engine, 350 x11 (abdomen,
  hips, knees) and 100 x6 (arms) -- on MuJoCo physics, where they drive MJCF masses, damping and
  armature that the spring engine ignores (FIDELITY.md; ``profiling/RESULTS.md``, "Humanoid
  actuation", measures how they behave).

Link inertias (``inertia``): ``"mjcf"`` (default) MuJoCo's, from the geoms; ``"published"`` unit
principal inertias for every robot link with the MJCF's masses and centres of mass -- what the
paper's spring engine simulates (``spring_inertia_scale = 1``, ``spring_mass_scale = 0`` in its
humanoid.xml); with ``observation="mujoco"`` the ``cinert`` block of the state then carries
them (``observation="published"`` always uses unit inertias, as the published code does).

Physics: MuJoCo through MJX (the paper's code runs brax's spring engine), 0.003 s steps, 10
per control step in the open (0.03 s, the published control period) and 5 in mazes (0.015 s,
the published control period, which the published maze reaches with 10 spring steps of
0.0015 s); Newton solver, 1 iteration, 4 line-search steps (JaxGCRL's MJX settings). Contacts: every robot geom vs the
floor (29 candidate slots; ``max_contact_points`` keeps the 8 deepest, and a humanoid with
more than 8 geoms on the floor has fallen). In mazes, 11 spheres (head, hands, feet and
massless proxies at torso, pelvis, knees and elbows) collide with 4 wall-cell boxes moved
onto the wall cells nearest the torso every control step (frictionless;
:mod:`deepcrl_core.envs.mazes`).

State (268) = qpos (26: root 7, 17 joints, target x, y) + qvel (25) + a com inertia of each
of the 12 links (torso ... left_lower_arm, target; 10 each) + a com velocity of each link (6
each) + ``qfrc_actuator`` (25), the published layout. The two com blocks (``observation``):

* ``"mujoco"`` (the class default): MuJoCo's ``cinert`` (6 inertia entries, mass x offset,
  mass) and ``cvel`` (angular, then linear velocity at the kinematic tree's centre of mass).
* ``"published"`` (the task catalogue's default for the paper's humanoid tasks): what the
  published code computes with brax. With ``com`` the centre of mass of all 12 links (the
  1 kg target included) and ``p`` a link's centre of mass minus ``com``: the link's unit
  inertia (brax's spring engine, ``spring_inertia_scale = 1``) moved to ``com``,
  ``I + m (|p|^2 I - p p^T)`` (9 entries, row-major) and the mass ``m``; then the linear
  velocity of the link's centre of mass times ``m / total mass`` (3) and the angular velocity
  (3), world frame. Goal = torso xyz (``goal_indices = (0, 1, 2)``),
filled as (goal x, goal y, 1.25); obs (271) = state + goal. Start: the model's rest pose
(torso at z 1.4) with no noise, at the origin or the maze's ``R`` cell; qvel 0. Goal: radius
U(1, 5) at a uniform angle (open) or a uniform ``G`` cell centre (maze). Episodes terminate
when the torso height leaves [1.0, 2.0] (never with ``terminate_when_unhealthy=False``);
success = 3-d torso distance to the goal < 0.5.
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

GOAL_Z = 1.25
ACTUATIONS = ("gymnasium", "published")
INERTIAS = ("mjcf", "published")
OBSERVATIONS = ("mujoco", "published")
# The paper's code replaces the humanoid's gears for brax's spring engine: 350 on the 11
# abdomen/hip/knee motors, 100 on the 6 shoulder/elbow motors (MJCF actuator order).
PUBLISHED_GEARS = (350.0,) * 11 + (100.0,) * 6
# Bodies 1..12 after fusing: 11 robot links, then the target (mocap bodies come after).
_N_LINKS = 12
# Massless, invisible spheres that stand in for the capsules against maze walls (with the
# head, hand and foot spheres): MJX's sphere-box test is far cheaper than capsule-box, and a
# capsule whose end spheres are outside a flat wall is outside it too (only wall corners can
# cut a limb between its end spheres). (body, position in the body, radius).
_WALL_PROXIES = (
    ("torso", [0.0, 0.0, -0.03], 0.14),
    ("pelvis", [-0.02, 0.0, 0.0], 0.16),
    ("right_shin", [0.0, 0.0, 0.0], 0.06),
    ("left_shin", [0.0, 0.0, 0.0], 0.06),
    ("right_lower_arm", [0.0, 0.0, 0.0], 0.04),
    ("left_lower_arm", [0.0, 0.0, 0.0], 0.04),
)


def humanoid_spec(in_maze: bool = False, actuation: str = "gymnasium") -> mujoco.MjSpec:
  """The edited gymnasium humanoid (with its target body) as an ``MjSpec``."""
  if actuation not in ACTUATIONS:
    raise ValueError(f"unknown humanoid actuation {actuation!r}; choose from {ACTUATIONS}")
  spec = mjcf.load_spec("humanoid.xml")
  if actuation == "published":
    if len(spec.actuators) != len(PUBLISHED_GEARS):
      raise ValueError(f"expected {len(PUBLISHED_GEARS)} humanoid motors, "
                       f"found {len(spec.actuators)}")
    for act, gear in zip(spec.actuators, PUBLISHED_GEARS):
      act.gear = [gear, 0.0, 0.0, 0.0, 0.0, 0.0]
  for tendon in list(spec.tendons):
    spec.delete(tendon)
  wall_bit = mjcf.WALL_BIT if in_maze else 0
  for geom in spec.geoms:
    if geom.name == "floor":
      geom.contype, geom.conaffinity = 0, mjcf.FLOOR_BIT
      geom.size = [100.0, 100.0, 0.125]
    elif geom.type == mujoco.mjtGeom.mjGEOM_SPHERE:  # head, hands, feet
      geom.contype, geom.conaffinity = mjcf.FLOOR_BIT | wall_bit, 0
    else:
      geom.contype, geom.conaffinity = mjcf.FLOOR_BIT, 0
  if in_maze:
    for body, pos, radius in _WALL_PROXIES:
      spec.body(body).add_geom(
          name=f"{body}_wall_proxy", type=mujoco.mjtGeom.mjGEOM_SPHERE, pos=pos,
          size=[radius, 0, 0], mass=0.0, contype=wall_bit, conaffinity=0, group=3,
          rgba=[0.0, 0.0, 0.0, 0.0])
  target = spec.worldbody.add_body(name="target", pos=[0.0, 0.0, GOAL_Z])
  for name, axis in (("target_x", [1.0, 0.0, 0.0]), ("target_y", [0.0, 1.0, 0.0])):
    target.add_joint(name=name, type=mujoco.mjtJoint.mjJNT_SLIDE, axis=axis,
                     limited=mujoco.mjtLimited.mjLIMITED_FALSE, armature=0.0, damping=0.0,
                     stiffness=0.0)
  target.add_geom(name="target", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.5, 0, 0], mass=1.0,
                  contype=0, conaffinity=0, rgba=[0.9, 0.2, 0.2, 0.4])
  spec.compiler.fusestatic = True
  return spec


class Humanoid(LocomotionEnv):
  """Humanoid goal reaching; ``maze`` names a layout of :mod:`deepcrl_core.envs.mazes`."""

  state_size = 268
  goal_indices = (0, 1, 2)
  action_size = 17

  def __init__(self, maze: Optional[str] = None, *, maze_scale: float = 2.0,
               goal_radius=(1.0, 5.0), success_radius: float = 0.5,
               episode_length: int = 1000, timestep: float = 0.003,
               n_substeps: Optional[int] = None, healthy_z=(1.0, 2.0),
               terminate_when_unhealthy: bool = True,
               max_contact_points: int = 8, action_scale: float = 0.4,
               actuation: str = "gymnasium", inertia: str = "mjcf",
               observation: str = "mujoco"):
    if inertia not in INERTIAS:
      raise ValueError(f"unknown humanoid inertia {inertia!r}; choose from {INERTIAS}")
    if observation not in OBSERVATIONS:
      raise ValueError(f"unknown humanoid observation {observation!r}; "
                       f"choose from {OBSERVATIONS}")
    self.inertia = inertia
    self.observation = observation
    self.success_radius = float(success_radius)
    self.episode_length = int(episode_length)
    self.goal_radius = tuple(goal_radius)
    self._set_health(healthy_z, terminate_when_unhealthy)
    self.action_scale = float(action_scale)
    self._init_maze(maze, maze_scale)
    self.actuation = actuation
    spec = humanoid_spec(in_maze=self.maze is not None, actuation=actuation)
    mjcf.set_mjx_options(spec, timestep=timestep)
    if self.maze is None:
      mjcf.add_contact_caps(spec, max_contact_points=max_contact_points)
    self._build_world(spec, max_contact_points=max_contact_points)
    mj_model = spec.compile()
    if inertia == "published":
      mjcf.spring_links(mj_model, "torso", unit_mass=False)
    if n_substeps is None:
      n_substeps = 10 if self.maze is None else 5
    super().__init__(mj_model, n_substeps)
    self._find_wall_colliders(mj_model)
    self.nq, self.nv = mj_model.nq, mj_model.nv
    links = slice(1, _N_LINKS + 1)
    self._link_mass = np.array(mj_model.body_mass[links], np.float32)
    self._link_root = np.array(mj_model.body_rootid[links])
    if (self.nq, self.nv) != (26, 25) or mj_model.body(_N_LINKS).name != "target":
      raise ValueError(f"unexpected humanoid model: nq {self.nq}, nv {self.nv}, "
                       f"body {_N_LINKS} {mj_model.body(_N_LINKS).name!r}")
    # numpy constants: building an env never starts a JAX backend.
    self.init_qpos = np.array(mj_model.qpos0, np.float32)
    self.init_qpos[:2] = self.start_xy

  def _obs(self, data, goal):
    if self.observation == "published":
      inertia, velocity = self.published_com_blocks(data)
    else:
      inertia, velocity = data.cinert[1:_N_LINKS + 1], data.cvel[1:_N_LINKS + 1]
    state = jnp.concatenate([data.qpos, data.qvel, inertia.ravel(), velocity.ravel(),
                             data.qfrc_actuator])
    return jnp.concatenate([state, goal])

  def published_com_blocks(self, data):
    """The published observation's com inertia [12, 10] and com velocity [12, 6] blocks
    (module docstring), from MJX ``data`` after ``com_pos``/``com_vel``."""
    mass = jnp.asarray(self._link_mass)
    total = jnp.sum(mass)
    pos = data.xipos[1:_N_LINKS + 1]
    p = pos - jnp.sum(mass[:, None] * pos, axis=0) / total
    eye = jnp.eye(3, dtype=pos.dtype)
    inertia = (eye * (1.0 + mass * jnp.sum(p * p, axis=-1))[:, None, None]
               - mass[:, None, None] * p[:, :, None] * p[:, None, :])
    # cvel is taken at the centre of mass of each link's kinematic tree: move it to the link's.
    ang, lin = data.cvel[1:_N_LINKS + 1, :3], data.cvel[1:_N_LINKS + 1, 3:]
    lin = lin + jnp.cross(ang, pos - data.subtree_com[self._link_root])
    return (jnp.concatenate([inertia.reshape(_N_LINKS, 9), mass[:, None]], axis=-1),
            jnp.concatenate([mass[:, None] * lin / total, ang], axis=-1))

  def _goal3(self, goal_xy):
    return jnp.concatenate([goal_xy, jnp.full((1,), GOAL_Z, goal_xy.dtype)])

  def reset(self, key):
    goal = self._goal3(self.sample_goal_xy(key, self.goal_radius))
    qpos = jnp.asarray(self.init_qpos).at[-2:].set(goal[:2])
    mocap = self.place_wall_colliders(self.mocap_pos0, qpos[:2])
    data = mjcf.kinematic_init(self.mjx_model, qpos, jnp.zeros(self.nv), mocap)
    metrics = self.metrics(qpos[:3], goal)
    return State(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                 done=jnp.zeros(()), metrics=metrics, info={"goal": goal})

  def step(self, state, action):
    ctrl = self.action_scale * jnp.clip(action, -1.0, 1.0)
    data = state.data
    data = data.replace(mocap_pos=self.place_wall_colliders(data.mocap_pos, data.qpos[:2]))
    data = self.pipeline_step(data, ctrl)
    if self.observation == "published":
      # mjx.step leaves the body positions and velocities of its last substep's start; the
      # published observation is of the state after the step (the next step recomputes all).
      data = mjcf.com_quantities(self.mjx_model, data)
    goal = state.info["goal"]
    metrics = self.metrics(data.qpos[:3], goal)
    return state.replace(data=data, obs=self._obs(data, goal), reward=-metrics["dist"],
                         done=self.termination(data), metrics=metrics)
