"""The XLA:CPU flag deepcrl runs with, set explicitly by whoever starts a process.

With jax 0.10 the XLA CPU fusion emitters make MJX kinematics of deep body chains
pathologically slow (seconds per step and minutes of compile for the 7-joint arm), so CPU
processes run with ``--xla_cpu_use_fusion_emitters=false``. It is an XLA flag, read once when
jax starts its CPU backend, so :func:`configure_cpu_xla_flags` must run before the first jax
computation; the launchers (``launch/train.py``, ``launch/evaluate.py``), the profiling scripts
and ``tests/conftest.py`` call it first thing. Importing ``deepcrl_core`` changes nothing.

The flag is appended to whatever ``XLA_FLAGS`` the user set. A user flag that already sets it
wins, with a warning when it disagrees; nothing is added when a CUDA build of jax is installed
(the flag only concerns the CPU backend).

The same option can also be given per compilation (``jitted.lower(...).compile(
compiler_options={FUSION_EMITTERS_OPTION: True})``); jax 0.10.2 honours it per executable (a
compile with it set to ``False`` is fast for the arm while the process default is on, and
``True`` brings back the slow compile where the process default is off).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import warnings
from typing import Optional

FUSION_EMITTERS_OPTION = "xla_cpu_use_fusion_emitters"
CPU_FLAG = f"--{FUSION_EMITTERS_OPTION}=false"


def _cuda_jax_installed() -> bool:
  for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_cuda12_pjrt", "jax_cuda13_pjrt"):
    try:
      if importlib.util.find_spec(name) is not None:
        return True
    except (ImportError, ValueError):
      pass
  return False


def _backends_started() -> bool:
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return bool(xla_bridge.backends_are_initialized())
  except Exception:  # pylint: disable=broad-except  (private API; unknown means: do not warn)
    return False


def _flag_values(flags: str, name: str) -> list:
  """Values the flags string gives ``--name`` (``--name`` alone counts as ``true``)."""
  values = []
  for token in shlex.split(flags):
    key, sep, value = token.lstrip("-").partition("=")
    if key == name:
      values.append(value.lower() if sep else "true")
  return values


# Tasks whose whole training step (env unroll + gradient steps, one compiled epoch) measured
# faster on CPU with the fusion emitters on (profiling/RESULTS.md, "The CPU flag per task";
# profiling/emitters_ab.py):
# their epoch computation is compiled with the emitters on; every other computation (prefill,
# evaluation, every other task) keeps the process-wide off.
EMITTERS_ON_TASKS = frozenset({
    "ant", "ant_u4_maze", "ant_u5_maze", "ant_big_maze", "ant_hardest_maze", "humanoid",
    "humanoid_u_maze", "humanoid_big_maze", "pointmass", "pointmass_u_maze",
    "pointmass_big_maze"})

# Set by configure_cpu_xla_flags to the flag it appended (children inherit it), so that a value
# in XLA_FLAGS can be told apart from the user's own choice.
ADDED_ENV = "DEEPCRL_ADDED_XLA_FLAG"


def user_chose_fusion_emitters(environ: Optional[dict] = None) -> bool:
  """Whether XLA_FLAGS sets the fusion-emitters option other than by configure_cpu_xla_flags."""
  env = os.environ if environ is None else environ
  values = _flag_values(env.get("XLA_FLAGS", ""), FUSION_EMITTERS_OPTION)
  return bool(values) and env.get(ADDED_ENV) != f"--{FUSION_EMITTERS_OPTION}={values[-1]}"


def epoch_compiler_options(env_name: str, backend: str,
                           environ: Optional[dict] = None) -> Optional[dict]:
  """Compiler options for the training epoch of ``env_name`` on ``backend`` (None: defaults).

  Used as ``epoch_fn.lower(run).compile(compiler_options=...)``. None off CPU, for tasks not in
  :data:`EMITTERS_ON_TASKS`, and when the user's XLA_FLAGS chose the option themselves.
  """
  if (backend != "cpu" or env_name not in EMITTERS_ON_TASKS
      or user_chose_fusion_emitters(environ)):
    return None
  return {FUSION_EMITTERS_OPTION: True}


def configure_cpu_xla_flags(fusion_emitters: bool = False, *,
                            environ: Optional[dict] = None) -> str:
  """Appends ``--xla_cpu_use_fusion_emitters=<fusion_emitters>`` to ``XLA_FLAGS``.

  Call before jax runs anything (XLA reads the flags when it starts a backend). The user's own
  flags are kept; one that already sets the option wins and, if it disagrees, a warning says
  so. Skipped where a CUDA build of jax is installed. ``environ``: the mapping to edit
  (default ``os.environ``; tests pass a dict).

  Returns the resulting ``XLA_FLAGS`` value.
  """
  env = os.environ if environ is None else environ
  current = env.get("XLA_FLAGS", "")
  if environ is None and _cuda_jax_installed():
    return current
  want = "true" if fusion_emitters else "false"
  theirs = _flag_values(current, FUSION_EMITTERS_OPTION)
  if theirs:
    if theirs[-1] != want and user_chose_fusion_emitters(env):
      warnings.warn(
          f"XLA_FLAGS sets --{FUSION_EMITTERS_OPTION}={theirs[-1]}; deepcrl would set {want} "
          f"(with the fusion emitters on, MJX physics of jointed bodies compiles and runs "
          f"pathologically slowly on CPU under jax 0.10). Keeping yours.", stacklevel=2)
    return current
  if environ is None and _backends_started():
    warnings.warn(
        "configure_cpu_xla_flags() was called after jax started its backends; XLA_FLAGS is "
        "read only at start-up, so it has no effect in this process (call it before any jax "
        "computation).", stacklevel=2)
  flag = f"--{FUSION_EMITTERS_OPTION}={want}"
  env["XLA_FLAGS"] = f"{current} {flag}".strip()
  env[ADDED_ENV] = flag
  return env["XLA_FLAGS"]
