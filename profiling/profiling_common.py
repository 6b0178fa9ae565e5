"""Shared pieces of the profiling scripts: the device header every results table starts with,
and the machine facts a measurement is quoted with.

    from profiling_common import device_header, machine_facts   # scripts in profiling/
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Dict


def machine_facts() -> Dict[str, object]:
  """Device, versions, host, CPU count, load average and date (imports jax: call after
  ``deepcrl_core.configure_cpu_xla_flags()``)."""
  import jax  # pylint: disable=g-import-not-at-top
  facts: Dict[str, object] = {
      "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
      "device_count": jax.device_count(), "jax": jax.__version__,
      "python": platform.python_version(), "host": platform.node(), "cpus": os.cpu_count(),
      "date": datetime.date.today().isoformat(),
  }
  try:
    import mujoco  # pylint: disable=g-import-not-at-top
    facts["mujoco"] = mujoco.__version__
  except ImportError:
    pass
  try:
    facts["load_avg_1m"] = round(os.getloadavg()[0], 2)
  except OSError:
    pass
  return facts


def device_header(*, with_mujoco: bool = True) -> str:
  """``device: KIND (backend), jax V, mujoco V, python V, DATE`` -- the first line of a table."""
  f = machine_facts()
  parts = [f"device: {f['device']} ({f['backend']})", f"jax {f['jax']}"]
  if with_mujoco and "mujoco" in f:
    parts.append(f"mujoco {f['mujoco']}")
  parts += [f"python {f['python']}", str(f["date"])]
  return ", ".join(parts)
