"""Humanoid gears: the MJCF's by default, the paper's spring-engine gears on request."""

import numpy as np
import pytest

from deepcrl_core import config as config_lib
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
