"""configure_cpu_xla_flags: explicit, appends to the user's XLA_FLAGS, warns on a conflict."""

import ast
import os
import pathlib
import subprocess
import sys
import warnings

import pytest

from deepcrl_core import configure_cpu_xla_flags
from deepcrl_core import _xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_importing_the_package_sets_nothing():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run(
      [sys.executable, "-c", "import os, deepcrl_core; print(os.environ.get('XLA_FLAGS'))"],
      env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True).stdout
  assert out.strip() == "None"


def test_sets_the_flag_when_there_is_none():
  env = {}
  assert configure_cpu_xla_flags(environ=env) == "--xla_cpu_use_fusion_emitters=false"
  assert env["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=false"
  env = {"XLA_FLAGS": ""}
  configure_cpu_xla_flags(environ=env)
  assert env["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=false"


def test_appends_to_the_users_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    configure_cpu_xla_flags(environ=env)
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=4 "
                              "--xla_cpu_use_fusion_emitters=false")
  configure_cpu_xla_flags(environ=env)  # idempotent: nothing added twice
  assert env["XLA_FLAGS"].count("fusion_emitters") == 1


@pytest.mark.parametrize("theirs", ["--xla_cpu_use_fusion_emitters=true",
                                    "--xla_cpu_use_fusion_emitters",
                                    "--xla_dump_to=/tmp/x --xla_cpu_use_fusion_emitters=True"])
def test_a_conflicting_user_flag_wins_with_a_warning(theirs):
  env = {"XLA_FLAGS": theirs}
  with pytest.warns(UserWarning, match="fusion_emitters=true.*Keeping yours"):
    configure_cpu_xla_flags(environ=env)
  assert env["XLA_FLAGS"] == theirs


def test_an_agreeing_user_flag_is_kept_silently():
  env = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false --xla_dump_to=/tmp/x"}
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    configure_cpu_xla_flags(environ=env)
  assert env["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=false --xla_dump_to=/tmp/x"


def test_the_emitters_can_be_asked_for():
  env = {}
  configure_cpu_xla_flags(True, environ=env)
  assert env["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true"
  assert _xla_flags.FUSION_EMITTERS_OPTION in env["XLA_FLAGS"]


ENTRY_POINTS = ["launch/train.py", "launch/evaluate.py", "profiling/step_time.py",
                "profiling/env_throughput.py", "profiling/arm_physics.py",
                "profiling/mjx_stages.py", "profiling/memory_vs_depth.py",
                "profiling/kernel_bench.py", "tests/conftest.py"]


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_points_configure_the_flag_before_importing_jax(path):
  """Each launcher, profiling script and the test setup calls it before its first jax import
  at module level (or, for step_time.py, in the __main__ block and the row subprocess)."""
  tree = ast.parse((REPO / path).read_text())
  call_line = jax_line = None
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "configure_cpu_xla_flags"):
      call_line = node.lineno if call_line is None else min(call_line, node.lineno)
  for node in tree.body:  # module-level imports only
    names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
             [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
    if any(n == "jax" or n.startswith("jax.") for n in names):
      jax_line = node.lineno if jax_line is None else min(jax_line, node.lineno)
  assert call_line is not None, f"{path} never calls configure_cpu_xla_flags()"
  if jax_line is not None:
    assert call_line < jax_line, (path, call_line, jax_line)


def test_user_choice_is_told_apart_from_ours():
  env = {}
  configure_cpu_xla_flags(environ=env)
  assert not _xla_flags.user_chose_fusion_emitters(env)
  child = dict(env)  # a child process inherits both variables
  configure_cpu_xla_flags(environ=child)
  assert child["XLA_FLAGS"] == env["XLA_FLAGS"]
  assert _xla_flags.user_chose_fusion_emitters({"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"})
  assert not _xla_flags.user_chose_fusion_emitters({"XLA_FLAGS": "--xla_dump_to=/tmp/x"})


def test_epoch_compiler_options_only_for_listed_tasks_on_cpu():
  ours = {}
  configure_cpu_xla_flags(environ=ours)
  on = {_xla_flags.FUSION_EMITTERS_OPTION: True}
  for task in _xla_flags.EMITTERS_ON_TASKS:
    assert _xla_flags.epoch_compiler_options(task, "cpu", environ=ours) == on
    assert _xla_flags.epoch_compiler_options(task, "gpu", environ=ours) is None
    users = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"}  # the user's word wins
    assert _xla_flags.epoch_compiler_options(task, "cpu", environ=users) is None
  for task in ("arm_push_easy", "arm_binpick_hard", "not_a_task"):
    assert _xla_flags.epoch_compiler_options(task, "cpu", environ=ours) is None


def test_compiler_options_take_the_option_per_compilation():
  """jax accepts the option per executable (that it changes the code is measured, not tested:
  RESULTS.md, "The CPU flag per task")."""
  import jax
  import jax.numpy as jnp
  f = jax.jit(lambda x: jnp.tanh(x @ x) + jnp.sin(x))
  x = jnp.ones((8, 8))
  for value in (True, False):
    compiled = f.lower(x).compile(compiler_options={_xla_flags.FUSION_EMITTERS_OPTION: value})
    assert jnp.allclose(compiled(x), f(x))
