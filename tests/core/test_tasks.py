"""The task catalogue: one place for every paper task's defaults, used by configs and envs."""

import os

import pytest

from deepcrl_core import config as config_lib
from deepcrl_core import envs
from deepcrl_core import tasks
from tests.conftest import REPO_ROOT
from tests.conftest import load_config as load


def test_catalogue_covers_the_papers_ten_tasks_plus_open_ant():
  assert len(tasks.PAPER_TASKS) == 11 and tasks.PAPER_TASKS[0] == "ant"
  with_numbers = [n for n, t in tasks.TASKS.items() if t.published_time_at_goal]
  assert len(with_numbers) == 10 and "ant" not in with_numbers
  assert tasks.get("humanoid").published_time_at_goal == {4: 13, 64: 649}
  assert tasks.of_family("arm") == ("arm_push_easy", "arm_push_hard", "arm_binpick_hard")
  assert envs.PAPER_TASKS is tasks.PAPER_TASKS
  with pytest.raises(KeyError, match="not one of the paper's tasks"):
    tasks.get("cheetah")


@pytest.mark.parametrize("name", tasks.PAPER_TASKS)
def test_each_task_is_registered_with_a_thin_config(name):
  t = tasks.get(name)
  assert envs.is_registered(name)
  if t.eval_env:
    assert envs.is_registered(t.eval_env) and tasks.find(t.eval_env) is t
  # The config file adds nothing to the catalogue's defaults.
  assert load(name).to_dict() == config_lib.paper_task_config(name).to_dict()
  with open(os.path.join(REPO_ROOT, "configs", f"{name}.py")) as f:
    code = [l for l in f.read().splitlines() if l.strip() and not l.lstrip().startswith("#")]
  assert any(f'paper_task_config("{name}"' in l for l in code)
  c = load(name)
  assert c.train.total_env_steps == t.env_steps and c.env.eval_name == t.eval_env
  assert c.env.episode_length == t.episode_length


@pytest.mark.parametrize("name", tasks.PAPER_TASKS)
def test_ant_and_humanoid_tasks_default_to_published_physics_and_observation(name):
  c = load(name)
  family = tasks.get(name).family
  if family == "ant":
    assert c.env.kwargs.to_dict() == {"mass": "published"}
    env = envs.make(c.env.name, **c.env.kwargs.to_dict())
    assert env.mj_model.body_subtreemass[env.mj_model.body("torso").id] == pytest.approx(9.0)
  elif family == "humanoid":
    assert c.env.kwargs.to_dict() == {"observation": "published"}
    assert envs.make(c.env.name, **c.env.kwargs.to_dict()).observation == "published"
  else:
    assert c.env.kwargs.to_dict() == {}
  # an override replaces the catalogue's value; the others stay
  if tasks.get(name).family == "ant":
    c = load(name, "env.kwargs.mass=mjcf,env.kwargs.goal_distance=3")
    assert c.env.kwargs.to_dict() == {"mass": "mjcf", "goal_distance": 3}
    assert config_lib.validation_problems(c) == []


def test_an_ant_built_without_the_catalogue_keeps_the_mjcf_masses():
  """Runs begun before the catalogue named the published masses stored no ``mass`` in their
  config.json; they resume and evaluate on the MJCF masses they trained on."""
  stored = config_lib.from_resolved_dict(
      {**config_lib.resolved_dict(load("ant")), "env": {
          **config_lib.resolved_dict(load("ant"))["env"], "kwargs": {"goal_distance": 3}}})
  env = envs.make(stored.env.name, **stored.env.kwargs.to_dict())
  assert env.mass == "mjcf"


def test_a_humanoid_built_without_the_catalogue_keeps_the_mujoco_observation():
  assert envs.make("humanoid").observation == "mujoco"
  assert envs.make("humanoid_u_maze").observation == "mujoco"
