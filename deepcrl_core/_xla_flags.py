"""CPU speed hygiene applied before JAX initialises its backends.

With jax 0.10 the XLA CPU fusion emitters make MJX kinematics of deep body chains
pathologically slow (seconds per step for a 7-joint arm). Unless the user set ``XLA_FLAGS``
or a CUDA build of jax is installed, ``--xla_cpu_use_fusion_emitters=false`` is set.
"""

import importlib.util
import os

CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _cuda_jax_installed() -> bool:
  for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_cuda12_pjrt", "jax_cuda13_pjrt"):
    try:
      if importlib.util.find_spec(name) is not None:
        return True
    except (ImportError, ValueError):
      pass
  return False


def apply_cpu_xla_flags() -> bool:
  """Sets the CPU flag when appropriate; returns whether it did."""
  if "XLA_FLAGS" in os.environ or _cuda_jax_installed():
    return False
  os.environ["XLA_FLAGS"] = CPU_FLAG
  return True
