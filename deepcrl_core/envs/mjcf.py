"""Shared model-building helpers for the MJX envs: models as data, variants as ``MjSpec`` edits.

Every env model starts as an MJCF file in ``deepcrl_core/envs/assets/`` (package data), read
with :func:`load_spec`; a variant (physics preset, maze walls and their colliders, proxy
geoms, contact pairs, contact caps) is a list of edits of that ``mujoco.MjSpec`` made by the
env before ``spec.compile()``: set an attribute, add an element, or delete one. The helpers
below are the edits more than one env makes.

Contact design used throughout (MJX checks every geom pair that may touch, so only pairs that
can really touch are enabled):

* bit 1 (``FLOOR_BIT``): the floor has ``conaffinity`` 1; robot geoms meant to touch the floor
  have ``contype`` bit 1.
* bit 2 (``WALL_BIT``): maze walls have ``conaffinity`` 2 and ``contype`` 0; robot geoms that
  can hit a wall have ``contype`` bit 2. Walls carry ``priority`` 1 and ``condim`` 1, so
  robot-wall contacts are frictionless single-row constraints in their own condim group; the
  ``max_contact_points`` cap then limits wall contacts without touching the floor contacts.
* No robot geom has a ``conaffinity`` bit, so there is no self-collision.
"""

from __future__ import annotations

import importlib.resources
from typing import Iterable, Optional, Sequence

import mujoco
import numpy as np

from deepcrl_core.envs import mazes

FLOOR_BIT = 1
WALL_BIT = 2

ASSETS = importlib.resources.files("deepcrl_core.envs") / "assets"


def load_spec(name: str) -> mujoco.MjSpec:
  """The asset ``deepcrl_core/envs/assets/<name>`` as an ``MjSpec``.

  Parsed from its text, so it works from any install (no file paths; the assets use no
  includes or mesh files).
  """
  return mujoco.MjSpec.from_string((ASSETS / name).read_text())


def set_first(values, value: float):
  """``values`` (a spec attribute such as ``size``, ``gear`` or ``damping``) with its first
  entry set to ``value``; a scalar attribute (e.g. ``damping`` before MuJoCo 4) becomes it."""
  if np.ndim(values) == 0:
    return float(value)
  out = np.array(values, np.float64)
  out[0] = value
  return out


def set_mjx_options(spec: mujoco.MjSpec, *, timestep: float, iterations: int = 1,
                    ls_iterations: int = 4, integrator: Optional[int] = None,
                    impratio: Optional[float] = None) -> None:
  """Newton solver with few iterations and no Euler damping (as brax/MJX locomotion uses)."""
  opt = spec.option
  opt.timestep = timestep
  opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
  opt.iterations = iterations
  opt.ls_iterations = ls_iterations
  opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
  opt.integrator = mujoco.mjtIntegrator.mjINT_EULER if integrator is None else integrator
  if impratio is not None:
    opt.impratio = impratio


def add_contact_caps(spec: mujoco.MjSpec, *, max_contact_points: int,
                     max_geom_pairs: Optional[int] = None) -> None:
  """MJX contact caps: top-k contacts per condim group, optionally top-k pairs per function.

  ``max_contact_points`` keeps the k most penetrating contacts of each condim group (exact:
  chosen after the narrow phase). ``max_geom_pairs`` culls pairs before the narrow phase by
  bounding-sphere distance, which misjudges long merged walls (a far wall with a large bounding
  sphere outranks a near short one), so the maze envs leave it unset.

  MJX 3.17 reads these numerics at the numeric's id rather than its data address, so they
  must be the first (and scalar) numerics of the model; this is checked.
  """
  if len(spec.numerics):
    raise ValueError("contact-cap numerics must be declared before any other numeric")
  spec.add_numeric(name="max_contact_points", data=[float(max_contact_points)])
  if max_geom_pairs is not None:
    spec.add_numeric(name="max_geom_pairs", data=[float(max_geom_pairs)])


def add_maze_walls(spec: mujoco.MjSpec, maze: mazes.Maze, scale: float,
                   rgba=(0.7, 0.5, 0.3, 1.0)) -> int:
  """Adds the maze's merged wall boxes to the world body as visual-only geoms.

  Collisions with walls come from :func:`add_wall_colliders`. Returns the number of boxes.
  """
  boxes = mazes.wall_boxes(maze, scale)
  for k, (centre, half) in enumerate(boxes):
    spec.worldbody.add_geom(name=f"wall_{k}", type=mujoco.mjtGeom.mjGEOM_BOX, pos=centre,
                            size=half, contype=0, conaffinity=0, rgba=rgba)
  return len(boxes)


def add_wall_colliders(spec: mujoco.MjSpec, scale: float, count: int = 4) -> None:
  """Adds ``count`` mocap bodies ``wall_collider_k``, each a wall-cell-sized colliding box.

  The env moves them onto the wall cells nearest the robot every control step (candidates from
  :func:`mazes.neighbour_walls`, placed by :func:`nearest_boxes`), so MJX checks the robot
  against ``count`` boxes whatever the maze size. They are invisible (alpha 0, geom group 3); walls are frictionless
  (``condim`` 1 with ``priority`` 1, see the module docstring).
  """
  half = [scale / 2, scale / 2, scale / 4]
  for k in range(count):
    body = spec.worldbody.add_body(name=f"wall_collider_{k}", mocap=True,
                                   pos=[0.0, 0.0, mazes.PARKED_Z * scale])
    body.add_geom(name=f"wall_collider_{k}", type=mujoco.mjtGeom.mjGEOM_BOX, size=half,
                  contype=0, conaffinity=WALL_BIT, condim=1, priority=1, group=3,
                  rgba=[0.0, 0.0, 0.0, 0.0])


def add_pairs(spec: mujoco.MjSpec, pairs: Iterable[Sequence]) -> None:
  """Adds explicit contact pairs ``(geom1, geom2, condim or None for the pair default 3)``."""
  for geom1, geom2, condim in pairs:
    kwargs = {} if condim is None else {"condim": int(condim)}
    spec.add_pair(geomname1=geom1, geomname2=geom2, **kwargs)


def mocap_slots(mj_model: mujoco.MjModel, bodies: Sequence[str]) -> slice:
  """The ``mocap_pos`` rows of the mocap ``bodies``, which must be contiguous and in order."""
  ids = [int(mj_model.body_mocapid[mj_model.body(name).id]) for name in bodies]
  if not ids or ids != list(range(ids[0], ids[0] + len(ids))) or ids[0] < 0:
    raise ValueError(f"mocap ids of {list(bodies)} are not contiguous: {ids}")
  return slice(ids[0], ids[0] + len(ids))


def nearest_boxes(point_xy, centres, half_xy, count: int, valid=None):
  """Centres ``[count, 3]`` of the ``count`` boxes nearest to ``point_xy``, nearest first.

  The one rule by which every env moves its mocap colliders onto the walls near a robot part.
  Boxes are axis-aligned with centres ``[n, 3]`` and xy half extents ``half_xy`` (``[2]`` or
  ``[n, 2]``); the distance is the Euclidean distance from ``point_xy`` ``[2]`` to a box's xy
  footprint (0 inside it). Candidates where ``valid`` ``[n]`` is False rank last; ties go to
  the lower index. Jittable; ``count`` is static.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  gap = jnp.maximum(jnp.abs(point_xy - centres[:, :2]) - half_xy, 0.0)
  dist = jnp.linalg.norm(gap, axis=-1)
  if valid is not None:
    dist = jnp.where(valid, dist, jnp.inf)
  _, nearest = jax.lax.top_k(-dist, count)
  return jnp.asarray(centres)[nearest]


def spring_links(mj_model: mujoco.MjModel, root: str, *, unit_mass: bool) -> None:
  """The links of brax's spring engine at ``spring_inertia_scale = 1`` (and, with
  ``unit_mass``, ``spring_mass_scale = 1``), on ``mj_model`` in place: every body of ``root``'s
  subtree gets unit principal inertias (``i ** 0``) and, with ``unit_mass``, a mass of 1 kg
  (``m ** 0``); the centres of mass stay where the geoms put them. MuJoCo's derived constants
  (subtree masses, the inverse weights the constraint solver scales with) are recomputed."""
  robot = np.flatnonzero(mj_model.body_rootid == mj_model.body(root).id)
  mj_model.body_inertia[robot] = 1.0
  if unit_mass:
    mj_model.body_mass[robot] = 1.0
  mujoco.mj_setConst(mj_model, mujoco.MjData(mj_model))


def count_contact_slots(mj_model: mujoco.MjModel) -> int:
  """Number of contact slots MJX allocates for the model (after caps)."""
  from mujoco.mjx._src import collision_driver  # pylint: disable=g-import-not-at-top
  return int(np.size(collision_driver.make_condim(mj_model)))


def kinematic_init(mjx_model, qpos, qvel, mocap_pos=None):
  """MJX data at ``qpos``/``qvel`` with kinematics and com quantities (``cinert``, ``cvel``).

  A cheap stand-in for a full ``mjx.forward`` (no collision, no constraint solve) for reset:
  the auto-reset wrapper computes a fresh reset on every training step, and the next
  ``mjx.step`` recomputes everything from ``qpos``, ``qvel``, ``ctrl`` and ``mocap_pos``
  anyway. ``ctrl`` is zero, so ``qfrc_actuator`` (zero) is consistent too.
  """
  from mujoco import mjx  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  data = mjx.make_data(mjx_model)
  data = data.replace(qpos=qpos, qvel=qvel, ctrl=jnp.zeros(mjx_model.nu))
  if mocap_pos is not None:
    data = data.replace(mocap_pos=mocap_pos)
  return com_quantities(mjx_model, data)


def com_quantities(mjx_model, data):
  """``data`` with body poses (``xpos``, ``xipos``, ...), ``subtree_com``, ``cinert`` and
  ``cvel`` computed from its ``qpos``/``qvel``/``mocap_pos`` (``mjx.step`` leaves those of its
  start, before the integration)."""
  from mujoco import mjx  # pylint: disable=g-import-not-at-top
  data = mjx.kinematics(mjx_model, data)
  data = mjx.com_pos(mjx_model, data)
  return mjx.com_vel(mjx_model, data)
