"""Shared pieces of the profiling scripts: the device header every results table starts with,
the machine facts a measurement is quoted with, timing of repeated calls, markdown tables, CSV
files and the constructor arguments a paper task's env is built with.

    from profiling_common import device_header, time_calls, markdown_table   # in profiling/
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence


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


class Timing(NamedTuple):
  """Seconds per call over ``repeats`` timed calls: the best wall-clock (what a quiet machine
  gives), the CPU time of that process in the call with the least CPU time (robust to other
  jobs on shared cores), the median wall-clock and every wall-clock sample."""
  best_s: float
  best_cpu_s: float
  median_s: float
  samples: List[float]


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1,
               block: Optional[Callable[[Any], Any]] = None) -> Timing:
  """Times ``fn()`` ``repeats`` times after ``warmup`` untimed calls, waiting for each result
  with ``block`` (default ``jax.block_until_ready``) inside the timed region."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  if block is None:
    import jax  # pylint: disable=g-import-not-at-top
    block = jax.block_until_ready
  for _ in range(warmup):
    block(fn())
  wall, cpu = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    block(fn())
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  ordered = sorted(wall)
  mid = len(ordered) // 2
  median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
  return Timing(min(wall), min(cpu), median, wall)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A markdown table: ``header`` cells, then one line per row (cells formatted with str)."""
  header = list(header)
  lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    r = list(r)
    if len(r) != len(header):
      raise ValueError(f"row has {len(r)} cells, the header {len(header)}: {r!r}")
    lines.append("| " + " | ".join(str(c) for c in r) + " |")
  return "\n".join(lines)


def names_problem(flag: str, value: str, allowed: Sequence[str]) -> Optional[str]:
  """The error for a comma-separated ``--flag=value`` naming nothing or something outside
  ``allowed``; None when it is fine."""
  names = [v for v in value.split(",") if v]
  if not names or any(v not in allowed for v in names):
    return f"--{flag}={value}: expected a comma-separated subset of {tuple(allowed)}"
  return None


def ints_problem(flag: str, value: str, allow_empty: bool = False) -> Optional[str]:
  """The error for a ``--flag=value`` that is not comma-separated positive integers (or
  empty, where ``allow_empty``); None when it is fine."""
  try:
    values = [int(v) for v in value.split(",") if v.strip()]
  except ValueError:
    values = [0]
  if any(v < 1 for v in values) or not (values or allow_empty):
    return f"--{flag}={value}: expected comma-separated positive integers"
  return None


def write_csv(path: str, rows: Iterable[Dict[str, Any]], columns: Sequence[str]) -> None:
  """Writes dict ``rows`` to ``path`` with ``columns`` (extra keys ignored, missing ones
  empty), creating the parent directory."""
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)


def tiled_prologue_config(width: int, batch: int):
  """The default tiled residual-block config with each layer's activation recomputed in the
  GEMM prologues (``activation_prologue=True``): the alternative the kernel model, profile and
  PTX report put next to the default."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import deepcrl_kernels as kernels  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(kernels.default_config(width, batch), activation_prologue=True)


def task_kwargs(task: str, env_kwargs: Dict[str, Any]) -> Dict[str, Any]:
  """The constructor arguments ``task`` is built with: a paper task's catalogue kwargs (what
  its config passes; also for its ``*_eval`` layout), updated by ``env_kwargs``."""
  from deepcrl_core import tasks  # pylint: disable=g-import-not-at-top
  paper = tasks.find(task)
  return {**(dict(paper.env_kwargs) if paper else {}), **env_kwargs}


def make_task_env(task: str, env_kwargs: Dict[str, Any]):
  """``(env, kwargs)``: ``task`` built with :func:`task_kwargs` (C MuJoCo only, no compilation).
  ValueError naming the task, the arguments and the problem when the task rejects them."""
  from deepcrl_core import envs  # pylint: disable=g-import-not-at-top
  kwargs = task_kwargs(task, env_kwargs)
  try:
    return envs.make(task, **kwargs), kwargs
  except (TypeError, ValueError) as e:
    raise ValueError(f"--env_kwargs: task {task!r} rejects {kwargs}: {e}") from e
