"""Shared pytest setup.

The CPU XLA fusion emitters make MJX kinematics and Pallas interpret mode pathologically slow
under jax 0.10.2; they are turned off before jax initialises unless the user chose XLA_FLAGS.
A persistent compilation cache lets repeated identical compiles (e.g. a resumed run) hit disk.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DEEPCRL_TEST_JAX_CACHE", "/tmp/deepcrl_test_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def enable_x64():
  """Context manager turning on 64-bit types (the API moved between jax releases)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64 as ctx  # pylint: disable=g-import-not-at-top
  return ctx()
