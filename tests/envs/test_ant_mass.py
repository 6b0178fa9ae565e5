"""The ant's masses: the MJCF's by default, the paper's spring-engine links (1 kg, unit
inertia) with ``mass="published"``; and its start height."""

import mujoco
import numpy as np
import pytest

from deepcrl_core import config as config_lib
from deepcrl_core import envs
from deepcrl_core.envs import ant as ant_lib

ROBOT = ["torso"] + [f"{part}_{i}" for i in range(1, 5) for part in ("hip", "ankle")]


def _robot_ids(m):
  return [m.body(name).id for name in ROBOT]


def test_published_masses_are_1_kg_links_with_unit_inertia_at_the_mjcf_centres():
  light = envs.make("ant").mj_model
  heavy = envs.make("ant", mass="published").mj_model
  ids = _robot_ids(heavy)
  assert light.body_mass[ids].sum() == pytest.approx(0.91088, abs=1e-4)  # density 5
  np.testing.assert_array_equal(heavy.body_mass[ids], 1.0)
  np.testing.assert_array_equal(heavy.body_inertia[ids], 1.0)
  assert heavy.body_subtreemass[heavy.body("torso").id] == pytest.approx(9.0)
  # Only masses and inertias change: centres of mass, geometry, joints, actuators are the MJCF's.
  for attr in ("body_ipos", "body_iquat", "body_pos", "geom_size", "geom_pos", "jnt_range",
               "dof_armature", "dof_damping", "actuator_gear", "qpos0"):
    np.testing.assert_array_equal(getattr(heavy, attr), getattr(light, attr), err_msg=attr)


def test_published_masses_derive_the_same_constants_as_the_compiler():
  """Editing the compiled model and recomputing its constants (``mj_setConst``) gives what
  MuJoCo's compiler gives for the same masses written as explicit inertials."""
  heavy = envs.make("ant", mass="published").mj_model
  light = envs.make("ant").mj_model
  spec = ant_lib.ant_spec()
  spec.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_AUTO
  for name in ROBOT:
    body = spec.body(name)
    body.explicitinertial = True
    body.mass = 1.0
    body.inertia = [1.0, 1.0, 1.0]
    body.ipos = light.body_ipos[light.body(name).id]
    body.iquat = [1.0, 0.0, 0.0, 0.0]
  ref = spec.compile()
  for attr in ("body_subtreemass", "body_invweight0", "dof_invweight0"):
    np.testing.assert_allclose(getattr(heavy, attr), getattr(ref, attr), rtol=1e-6, atol=1e-12,
                               err_msg=attr)
  assert not np.allclose(heavy.dof_invweight0, light.dof_invweight0)  # recomputed, not stale


def test_published_masses_weigh_9_kg_on_the_floor():
  """At rest on its feet, the floor carries the 9 kg robot: the contact normal forces add up to
  9 g (0.91 g with the MJCF masses)."""
  for mass, want in (("mjcf", 0.91088), ("published", 9.0)):
    m = envs.make("ant", mass=mass).mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = ant_lib.INIT_QPOS
    d.qpos[2] = 0.6
    for _ in range(600):  # 6 s of settling with the motors off
      mujoco.mj_step(m, d)
    force = np.zeros(6)
    total = 0.0
    for c in range(d.ncon):
      mujoco.mj_contactForce(m, d, c, force)
      total += force[0] * d.contact[c].frame[2]  # normal force, its vertical component
    assert total == pytest.approx(want * 9.81, rel=0.02), mass


def test_maze_wall_colliders_keep_their_masses():
  light = envs.make("ant_u4_maze").mj_model
  heavy = envs.make("ant_u4_maze", mass="published").mj_model
  others = sorted(set(range(heavy.nbody)) - set(_robot_ids(heavy)))
  np.testing.assert_array_equal(heavy.body_mass[others], light.body_mass[others])
  np.testing.assert_array_equal(heavy.body_mass[_robot_ids(heavy)], 1.0)


def test_start_height_moves_the_reset_torso_only():
  assert envs.make("ant").init_qpos[2] == pytest.approx(0.55)  # published
  low, high = envs.make("ant"), envs.make("ant", start_height=0.75)
  assert high.init_qpos[2] == pytest.approx(0.75)
  np.testing.assert_array_equal(np.delete(high.init_qpos, 2), np.delete(low.init_qpos, 2))


@pytest.mark.parametrize("override, message", [
    ("env.kwargs.mass=heavy", "unknown ant mass 'heavy'"),
    ("env.kwargs.start_height=0.0", "start_height must be in (0, 10) m"),
])
def test_bad_mass_or_start_height_is_named_by_the_validator(override, message):
  problems = config_lib.validation_problems(config_lib.paper_task_config("ant", override))
  assert any(message in p for p in problems), problems
