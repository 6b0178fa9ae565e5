"""Humanoid gears: the MJCF's by default, the paper's spring-engine gears on request."""

import numpy as np
import pytest

from deepcrl_core import config as config_lib
from deepcrl_core import envs
from deepcrl_core.envs import humanoid


def _gears(actuation):
  model = humanoid.humanoid_spec(actuation=actuation).compile()
  return {model.actuator(i).name: model.actuator_gear[i, 0] for i in range(model.nu)}


def test_published_gears_are_350_on_abdomen_hips_knees_and_100_on_the_arms():
  pub, default = _gears("published"), _gears("gymnasium")
  assert len(pub) == 17
  for name, gear in pub.items():
    arm = name.startswith(("right_shoulder", "left_shoulder", "right_elbow", "left_elbow"))
    assert gear == (100.0 if arm else 350.0), name
  assert default["right_hip_y"] == 300.0 and default["right_elbow"] == 25.0  # the MJCF's
  assert default["abdomen_x"] == 100.0


def test_unknown_actuation_is_named_by_the_validator():
  problems = config_lib.validation_problems(
      config_lib.paper_task_config("humanoid", "env.kwargs.actuation=strong"))
  assert any("unknown humanoid actuation 'strong'" in p for p in problems), problems
  with pytest.raises(ValueError, match="unknown humanoid actuation"):
    humanoid.humanoid_spec(actuation="strong")


def test_published_inertias_are_unit_on_every_robot_link_with_the_mjcf_masses():
  light = envs.make("humanoid").mj_model
  unit = envs.make("humanoid", inertia="published").mj_model
  robot = np.flatnonzero(unit.body_rootid == unit.body("torso").id)
  assert len(robot) == 11  # the fused links, torso to left_lower_arm
  np.testing.assert_array_equal(unit.body_inertia[robot], 1.0)
  assert not np.allclose(light.body_inertia[robot], 1.0)
  target = unit.body("target").id
  np.testing.assert_array_equal(unit.body_inertia[target], light.body_inertia[target])
  for attr in ("body_mass", "body_ipos", "actuator_gear", "dof_armature"):
    np.testing.assert_array_equal(getattr(unit, attr), getattr(light, attr), err_msg=attr)
  assert not np.allclose(unit.dof_invweight0, light.dof_invweight0)  # constants recomputed


def test_unknown_inertia_is_named_by_the_validator():
  problems = config_lib.validation_problems(
      config_lib.paper_task_config("humanoid", "env.kwargs.inertia=heavy"))
  assert any("unknown humanoid inertia 'heavy'" in p for p in problems), problems
