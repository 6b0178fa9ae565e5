"""Config files, override strings and validation."""

import glob
import os

import ml_collections
import pytest
from ml_collections import config_flags  # noqa: F401  (config files are loaded like the launcher)

from deepcrl_core import config as config_lib
from deepcrl_core import tasks as tasks_lib
from tests.conftest import REPO_ROOT, load_config

PAPER_TASKS = sorted(tasks_lib.PAPER_TASKS)


load = load_config  # the shared helper (tests/conftest.py)


def test_override_shortcuts_and_dotted_fields():
  c = load("pointmass", "depth=16,width=128,batch=64,network.repr_dim=32,train.gamma=0.9,"
                        "remat=true,impl=xla")
  assert c.network.depth == 16 and c.network.width == 128 and c.train.batch_size == 64
  assert c.network.repr_dim == 32 and c.train.gamma == 0.9
  assert c.network.remat == "block" and c.network.kernel_impl == "xla"
  assert load("pointmass", "remat=nested").network.remat == "nested"
  assert load("pointmass", "remat=false").network.remat == "none"
  bad = load("pointmass")
  bad.network.remat = "sometimes"
  assert any("network.remat" in p for p in config_lib.validation_problems(bad))
  assert config_lib.actor_depth(c) == 16 and config_lib.critic_depth(c) == 16
  c = load("pointmass", "depth=16,actor_depth=8")
  assert config_lib.actor_depth(c) == 8 and config_lib.critic_depth(c) == 16
  config_lib.validate(c)


def test_override_integers_coerce_and_types_are_checked():
  c = load("pointmass", "train.gamma=1")  # int into float field
  assert isinstance(c.train.gamma, float)
  with pytest.raises(config_lib.ConfigError, match="expected an integer"):
    load("pointmass", "depth=abc")


@pytest.mark.parametrize("text, fragment", [
    ("depth8", "malformed override 'depth8'"),
    ("depth=8,,width=4", "empty item"),
    ("=3", "bad key"),
    ("nosuchkey=3", "unknown override key 'nosuchkey'"),
    ("network=3", "names a group"),
])
def test_malformed_and_unknown_overrides(text, fragment):
  with pytest.raises(config_lib.ConfigError, match=fragment):
    load("pointmass", text)


def test_all_problems_reported_at_once():
  with pytest.raises(config_lib.ConfigError) as e:
    load("pointmass", "foo=1,depth=6,width=0,batch=10000000,env=nope")
  problems = e.value.problems
  assert len(problems) == 5, problems
  text = str(e.value)
  for fragment in ("unknown override key 'foo'", "network.depth must be a positive multiple of 4", "network.width must be",
                   "larger than the replay buffer can hold", "unknown env 'nope'"):
    assert fragment in text


def test_validation_of_every_field_group():
  c = load("pointmass")
  c.network.critic_depth = 10
  c.train.unroll_length = 0
  c.train.gamma = 1.0
  c.loss.energy = "manhattan"
  c.replay.window_length = c.replay.capacity + 1
  c.replay.sampling = "bogus"
  c.network.kernel_impl = "cuda"
  problems = config_lib.validation_problems(c)
  joined = "\n".join(problems)
  for fragment in ("network.critic_depth", "train.unroll_length", "train.gamma",
                   "loss.energy", "exceeds replay.capacity", "replay.sampling",
                   "network.kernel_impl"):
    assert fragment in joined, (fragment, joined)


def test_every_config_file_loads():
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO_ROOT, "configs", "*.py")))
  assert set(PAPER_TASKS) | {"pointmass"} <= set(names)
  for name in names:
    c = load(name)
    assert c.env.name == name


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_hyperparameters(task):
  c = load(task)
  assert (c.network.width, c.network.depth, c.network.repr_dim) == (256, 4, 64)
  assert (c.train.num_envs, c.train.unroll_length, c.train.batch_size) == (512, 62, 512)
  assert c.train.sgd_steps == 800 and c.train.gamma == 0.99
  assert c.optim.actor_lr == c.optim.critic_lr == c.optim.alpha_lr == 3e-4
  assert c.loss.energy == "l2" and c.loss.logsumexp_penalty == 0.1
  assert c.loss.target_entropy_scale == 0.5
  assert c.replay.capacity == 10_000 and c.train.prefill_steps == 1000
  assert c.env.episode_length == 1000 and c.eval.num_envs == 128
  assert c.train.total_env_steps == tasks_lib.get(task).env_steps
  if "maze" in task:
    assert config_lib.eval_env_name(c) == f"{task}_eval"
  else:
    assert config_lib.eval_env_name(c) == task


def test_unknown_env_gets_a_clear_message():
  c = load("humanoid")
  c.env.name = "definitely_not_an_env"
  (problem,) = [p for p in config_lib.validation_problems(c) if p.startswith("env.name")]
  assert "unknown env 'definitely_not_an_env'" in problem and "pointmass" in problem


def test_num_epochs_from_env_step_budget():
  c = load("pointmass", "env_steps=1000000")
  per_epoch = config_lib.env_steps_per_epoch(c)
  n = config_lib.num_epochs(c)
  prefill = c.train.prefill_steps * c.train.num_envs
  assert prefill + n * per_epoch >= 1_000_000 > prefill + (n - 1) * per_epoch
  c = load("pointmass", "epochs=3")
  assert config_lib.num_epochs(c) == 3


def test_env_constructor_arguments_override_and_validate():
  c = load("arm_binpick_hard", "env.kwargs.physics=published,env.kwargs.n_substeps=25")
  assert c.env.kwargs.to_dict() == {"physics": "published", "n_substeps": 25}
  config_lib.validate(c)
  with pytest.raises(config_lib.ConfigError, match="unknown arm physics preset 'slow'"):
    config_lib.validate(load("arm_push_easy", "env.kwargs.physics=slow"))
  with pytest.raises(config_lib.ConfigError, match="unexpected keyword argument 'physics'"):
    config_lib.validate(load("ant", "env.kwargs.physics=fast"))
  with pytest.raises(config_lib.ConfigError, match="unknown override key 'env.kwarg.x'"):
    load("ant", "env.kwarg.x=1")


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_paper_tasks_default_to_the_published_pipeline(task):
  c = load(task)
  assert c.env.reset_mode == "first" and c.replay.sampling == "windows"
  assert c.train.prefill_policy == "actor" and c.loss.tanh_correction == "published"
  assert c.replay.window_length == c.env.episode_length == 1000
  # published prefill: ceil(1000 / 62) = 17 unrolls of 62 steps
  assert config_lib.prefill_steps_per_env(c) == 17 * 62
  config_lib.validate(c)


def test_quick_start_keeps_deepcrls_pipeline():
  c = load("pointmass")
  assert (c.env.reset_mode, c.replay.sampling, c.train.prefill_policy,
          c.loss.tanh_correction) == ("fresh", "transitions", "random", "exact")


def test_unknown_pipeline_choices_are_named_before_compiling():
  c = load("humanoid")
  c.env.reset_mode = "sometimes"
  c.train.prefill_policy = "expert"
  c.loss.tanh_correction = "approx"
  joined = "\n".join(config_lib.validation_problems(c))
  for fragment in ("env.reset_mode must be one of ('first', 'fresh'), got 'sometimes'",
                   "train.prefill_policy must be one of ('actor', 'random'), got 'expert'",
                   "loss.tanh_correction must be one of ('published', 'exact'), got 'approx'"):
    assert fragment in joined, joined
  with pytest.raises(config_lib.ConfigError, match="env.reset_mode"):
    config_lib.validate(load("ant", "env.reset_mode=always"))
  # one window per env must hold a training step's minibatches
  with pytest.raises(config_lib.ConfigError, match="one window per env") as e:
    config_lib.validate(load("ant", "num_envs=256"))
  # 800 x 512 = 409,600 > 256 x 999 = 255,744: each way out, at its exact bound
  assert ("raise train.num_envs to at least 411, lower train.sgd_steps to at most 499, or use "
          "replay.sampling=transitions") in str(e.value)
  for fixed in ("num_envs=411", "num_envs=256,train.sgd_steps=499",
                "num_envs=256,replay.sampling=transitions"):
    assert config_lib.validation_problems(load("ant", fixed)) == [], fixed
  assert config_lib.validation_problems(load("ant", "num_envs=410")) != []
  assert config_lib.validation_problems(load("ant", "num_envs=256,train.sgd_steps=500")) != []


def test_paper_epochs_have_the_published_length():
  """31 training steps per epoch for 100M env steps (62 for 200M, 125 for 400M): evaluation
  every ~1M env steps, and epochs=100 is exactly the published run."""
  for task, steps, epochs in (("humanoid", 31, 102), ("ant_hardest_maze", 62, 102),
                              ("humanoid_u_maze", 125, 101)):
    c = load(task)
    total = c.train.total_env_steps
    # the published formula, by hand: (total - 1000 x 512) // (100 epochs x 512 envs x 62)
    assert c.train.train_steps_per_epoch == steps == (total - 512_000) // (100 * 512 * 62)
    prefill = config_lib.prefill_steps_per_env(c) * c.train.num_envs
    assert prefill == 17 * 62 * 512

    def env_steps(n):
      return prefill + n * config_lib.env_steps_per_epoch(c)

    # by default: the fewest epochs that reach total_env_steps
    assert config_lib.num_epochs(c) == epochs
    assert env_steps(epochs - 1) < total <= env_steps(epochs)
    # epochs=100: the published run's 100 x steps training steps, within its budget
    assert config_lib.num_epochs(load(task, "epochs=100")) == 100
    assert env_steps(100) <= total
  c = load("humanoid")
  assert 0.98e6 < config_lib.env_steps_per_epoch(c) < 1e6


def test_schema_declares_every_field_with_its_bounds():
  fields = config_lib.schema_fields()
  leaves = set()

  def walk(d, prefix=""):
    for k, v in d.items():
      if isinstance(v, dict) and k != "kwargs":
        walk(v, f"{prefix}{k}.")
      else:
        leaves.add(prefix + k)

  walk(config_lib.base_config().to_dict())
  assert leaves == set(fields)
  assert all(f.doc for f in fields.values())
  assert fields["train.gamma"].maximum_exclusive == 1.0 and fields["train.gamma"].positive
  d = load("pointmass").to_dict()
  d["network"]["width"] = 2.5                # wrong type (ml_collections refuses it on a
  c = ml_collections.ConfigDict(d)           # typed config; a stored or hand-made one may have it)
  c.train.prefill_policy = "expert"          # not a choice
  c.log.progress_every_s = -1.0              # below the bound
  c.replay.capacity = 0                      # a field of a cross-field check: reported once
  problems = config_lib.validation_problems(c)
  assert any(p.startswith("network.width must be a int") for p in problems), problems
  assert any("train.prefill_policy must be one of ('actor', 'random')" in p for p in problems)
  assert any("log.progress_every_s must be >= 0" in p for p in problems)
  assert [p for p in problems if "replay.capacity" in p] == [
      "replay.capacity must be positive, got 0"], problems
