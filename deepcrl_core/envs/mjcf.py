"""Shared model-building helpers (``mujoco.MjSpec`` edits) for the MJX envs.

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

from typing import Optional

import mujoco
import numpy as np

from deepcrl_core.envs import mazes

FLOOR_BIT = 1
WALL_BIT = 2


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

  The env moves them onto the wall cells nearest the robot every control step (see
  :func:`mazes.neighbour_walls`), so MJX checks the robot against ``count`` boxes whatever the
  maze size. They are invisible (alpha 0, geom group 3); walls are frictionless
  (``condim`` 1 with ``priority`` 1, see the module docstring).
  """
  half = [scale / 2, scale / 2, scale / 4]
  for k in range(count):
    body = spec.worldbody.add_body(name=f"wall_collider_{k}", mocap=True,
                                   pos=[0.0, 0.0, mazes.PARKED_Z * scale])
    body.add_geom(name=f"wall_collider_{k}", type=mujoco.mjtGeom.mjGEOM_BOX, size=half,
                  contype=0, conaffinity=WALL_BIT, condim=1, priority=1, group=3,
                  rgba=[0.0, 0.0, 0.0, 0.0])


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
  data = mjx.kinematics(mjx_model, data)
  data = mjx.com_pos(mjx_model, data)
  return mjx.com_vel(mjx_model, data)
