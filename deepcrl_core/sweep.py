"""Sweeps: a grid of config overrides x seeds, each run a ``launch/train.py`` child process.

    axes = parse_grid("depth=4,8,16;width=256")         # [Axis("depth", ...), Axis("width", ...)]
    cells = grid_cells(axes)                              # the cross product, first axis slowest
    runs = plan_runs(cells, seeds=[0, 1, 2], workdir=DIR) # DIR/runs/<cell>/seed_<k>
    configs = validate_cells("configs/ant.py", "", cells) # every cell's problems at once
    status = run_status(run.workdir, num_epochs, budget_s)

A grid is ``;``-separated axes, each ``key=v1,v2,...`` with ``key`` as in config override
strings (a shortcut such as ``depth``/``width``/``batch``, or a dotted field such as
``optim.actor_lr`` or ``env.kwargs.physics``); values are written as in override strings and
passed to the children as written. Cell names (run directory names) are ``key-value`` pairs
joined by ``__`` (``depth-4__width-256``; characters other than letters, digits and ``.+-``
become ``_``); the empty grid is one cell, ``base``.

What a run directory says (:func:`run_status`), read from ``metrics.csv`` and the checkpoints:

* ``finished``: its last row reached the run's final epoch (``train.num_epochs`` or what
  ``train.total_env_steps`` implies);
* ``budget``: its wall-clock across resumes (``run_wall_s``, see below) reached ``budget_s``;
* ``diverged``: its last row holds a non-finite loss (the NaN guard's row, written after the
  last good checkpoint);
* ``partial``: rows or a complete checkpoint, but not finished: the next call resumes it from
  its newest complete checkpoint (rows after that epoch are dropped by the resumed run);
* ``new``: nothing trained yet.

The budget is total over the run, not per call: a child gets ``train.max_seconds = budget_s -
run_wall_s`` of its newest checkpointed epoch. ``run_wall_s`` is metrics.csv's wall-clock of
the whole run across resumes (``wall_s`` restarts at 0 in every training call and includes
that call's build and compile); for runs logged before that column existed it is rebuilt from
``wall_s`` (:func:`cumulative_wall_s`). Time a killed call spent after its last checkpoint is
lost with the epochs it trained and not counted. ``train.max_seconds`` is checked after each
epoch, so a run ends up to one epoch (and evaluation) past its budget.

``sweep.csv`` (:func:`aggregate`): one row per run x evaluation. Its columns are ``cell``, one
per grid axis (the cell's value as written in the grid), ``seed``, then the run's metrics.csv
columns (``epoch``, ``env_steps``, ``wall_s``, ``run_wall_s``, every ``eval/...`` metric and
the training metrics of that epoch), in that order: :mod:`deepcrl_core.plots` finds the axes
as the columns between ``cell`` and ``seed``.

This module starts no JAX backend (the parent of a GPU sweep must not take device memory);
children get their GPU through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from deepcrl_core import config as config_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(REPO_ROOT, "launch", "train.py")
MANIFEST = "sweep.json"
CSV_NAME = "sweep.csv"
RUN_LOG = "train.log"
LOSS_COLUMNS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "logsumexp")
# Keys the sweep sets itself, so they cannot be grid axes.
RESERVED = {"seed": "use --seeds or --seed_list", "train.max_seconds": "use --budget_s"}
# train.py's exit codes (launch/train.py, deepcrl_core.cli)
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class SweepError(Exception):
  """A sweep cannot start; the message lists every problem."""

  def __init__(self, problems: Sequence[str]):
    self.problems = list(problems)
    super().__init__(format_problems(self.problems))


def format_problems(problems: Sequence[str]) -> str:
  if len(problems) == 1:
    return f"invalid sweep: {problems[0]}"
  return "invalid sweep:\n" + "\n".join(f"  - {p}" for p in problems)


# --- grid --------------------------------------------------------------------------------------


class Axis(NamedTuple):
  key: str                  # as written: a shortcut or a dotted field
  values: Tuple[str, ...]   # each value's text, as written


class Cell(NamedTuple):
  name: str
  items: Tuple[Tuple[str, str], ...]   # (key, value text), in axis order

  @property
  def overrides(self) -> str:
    return ",".join(f"{k}={v}" for k, v in self.items)

  def value(self, key: str) -> str:
    return dict(self.items)[key]


def field_path(key: str) -> Tuple[str, ...]:
  """The config fields an override key sets (a shortcut's, or the dotted key itself)."""
  return tuple(config_lib.SHORTCUTS.get(key, (key,)))


def parse_grid(text: str) -> List[Axis]:
  """``"depth=4,8,16;width=256"`` -> axes; raises SweepError listing every malformed axis
  (no ``=``, a bad key, no or empty or repeated values, a key given twice, directly or through
  a shortcut, and the keys the sweep sets itself: seed, train.max_seconds)."""
  axes, problems, seen = [], [], {}
  text = (text or "").strip()
  if not text:
    return axes
  for part in text.split(";"):
    part = part.strip()
    if not part:
      problems.append(f"malformed grid {text!r}: empty axis (two ';' in a row, or a trailing ';')")
      continue
    if "=" not in part:
      problems.append(f"malformed axis {part!r}: expected key=value,value,...")
      continue
    key, _, rest = part.partition("=")
    key = key.strip()
    if not key or not all(p.isidentifier() for p in key.split(".")):
      problems.append(f"malformed axis {part!r}: bad key {key!r}")
      continue
    values = [v.strip() for v in config_lib._split_top_level(rest)]  # pylint: disable=protected-access
    if not rest.strip() or any(not v for v in values):
      problems.append(f"malformed axis {part!r}: empty value")
      continue
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
      problems.append(f"axis {key!r} repeats the value(s) {', '.join(dupes)}")
      continue
    fields = field_path(key)
    reserved = [RESERVED[f] for f in fields if f in RESERVED]
    if reserved:
      problems.append(f"axis {key!r} cannot be swept by the grid: {reserved[0]}")
      continue
    clash = [seen[f] for f in fields if f in seen]
    if clash:
      problems.append(f"axis {key!r} sets the same field as axis {clash[0]!r}")
      continue
    for f in fields:
      seen[f] = key
    axes.append(Axis(key, tuple(values)))
  if problems:
    raise SweepError(problems)
  return axes


def _safe(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9.+-]", "_", text)


def cell_name(items: Sequence[Tuple[str, str]]) -> str:
  return "__".join(f"{_safe(k)}-{_safe(v)}" for k, v in items) or "base"


def grid_cells(axes: Sequence[Axis]) -> List[Cell]:
  """The cross product of the axes, the first axis varying slowest."""
  cells = []
  for combo in itertools.product(*[a.values for a in axes]):
    items = tuple(zip([a.key for a in axes], combo))
    cells.append(Cell(cell_name(items), items))
  names = [c.name for c in cells]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise SweepError([f"cells {', '.join(dupes)} would share a run directory (values that "
                      "differ only in characters other than letters, digits and .+-)"])
  return cells


class Run(NamedTuple):
  cell: Cell
  seed: int
  workdir: str

  @property
  def label(self) -> str:
    return f"{self.cell.name} seed {self.seed}"


def run_dir(workdir: str, cell: Cell, seed: int) -> str:
  return os.path.join(workdir, "runs", cell.name, f"seed_{seed}")


def plan_runs(cells: Sequence[Cell], seeds: Sequence[int], workdir: str) -> List[Run]:
  """Every cell x seed, cell-major (all seeds of the first cell first)."""
  return [Run(c, s, run_dir(workdir, c, s)) for c in cells for s in seeds]


def join_overrides(*parts: str) -> str:
  return ",".join(p for p in parts if p)


def run_overrides(base: str, cell: Cell, seed: int, max_seconds: Optional[float] = None) -> str:
  """The child's override string: the config's own overrides, the cell's, the seed and the
  call's wall-clock cap (later keys win)."""
  extra = "" if max_seconds is None else f"train.max_seconds={max_seconds:.1f}"
  return join_overrides(base, cell.overrides, f"seed={seed}", extra)


def split_config_spec(spec: str) -> Tuple[str, str]:
  """``"configs/ant.py:depth=8"`` -> (absolute file path, ``"depth=8"``)."""
  path, _, overrides = spec.partition(":")
  return os.path.abspath(path), overrides.strip()


def validate_cells(config_file: str, base_overrides: str, cells: Sequence[Cell],
                   budget_s: float = 0.0) -> Dict[str, object]:
  """Each cell's config (``{cell name: ConfigDict}``), built as ``launch/train.py`` builds it
  (``config_lib.load_config_file``) and validated; raises SweepError listing every problem of
  every cell, each prefixed by its cell, before anything runs. Starts no JAX backend."""
  problems = []
  if not os.path.isfile(config_file):
    raise SweepError([f"config file {config_file!r} does not exist"])
  try:
    base_keys = {f for k, _ in config_lib.parse_overrides(base_overrides) for f in field_path(k)}
  except config_lib.ConfigError as e:
    raise SweepError([f"the --config overrides: {p}" for p in e.problems]) from None
  for cell in cells:
    for key, _ in cell.items:
      both = base_keys.intersection(field_path(key))
      if both:
        problems.append(f"axis {key!r} is also set in the --config overrides "
                        f"({', '.join(sorted(both))}); set it in one place")
  if budget_s and "train.max_seconds" in base_keys:
    problems.append("train.max_seconds is set in the --config overrides and --budget_s is "
                    "given; use --budget_s alone (it is the run's total across resumes)")
  if "seed" in base_keys:
    problems.append("seed is set in the --config overrides; use --seeds or --seed_list")
  if problems:
    raise SweepError(sorted(set(problems)))
  configs = {}
  for cell in cells:
    spec = f"{config_file}:{join_overrides(base_overrides, cell.overrides)}"
    try:
      cfg = config_lib.load_config_file(spec)
    except config_lib.ConfigError as e:
      problems += [f"cell {cell.name}: {p}" for p in e.problems]
      continue
    except Exception as e:  # pylint: disable=broad-except  (a config file's own error)
      problems.append(f"cell {cell.name}: {type(e).__name__}: {e}")
      continue
    found = config_lib.validation_problems(cfg)
    if found:
      problems += [f"cell {cell.name}: {p}" for p in found]
    else:
      configs[cell.name] = cfg
  if problems:
    raise SweepError(problems)
  return configs


# --- run directories ---------------------------------------------------------------------------


def _number(v) -> Optional[float]:
  if v is None or v == "":
    return None
  try:
    return float(v)
  except (TypeError, ValueError):
    return None


def finite_number(v) -> Optional[float]:
  """A CSV cell as a float, or None when it is empty, not a number, or not finite."""
  x = _number(v)
  return x if x is not None and math.isfinite(x) else None


def read_rows(path: str) -> List[Dict[str, str]]:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def cumulative_wall_s(rows: Sequence[Mapping]) -> List[float]:
  """Each row's wall-clock since the run began, across resumes: its ``run_wall_s`` where
  logged; otherwise rebuilt from ``wall_s``, which restarts in every training call: a row whose
  ``wall_s`` is below the previous row's starts a new call, offset by the previous call's last
  value (a resumed call whose first row outlasts the previous call's last one is then not
  seen; ``run_wall_s`` has no such gap)."""
  out, offset, prev = [], 0.0, None
  for r in rows:
    logged = _number(r.get("run_wall_s"))
    if logged is not None:
      out.append(logged)
      prev = None
      offset = logged
      continue
    w = _number(r.get("wall_s")) or 0.0
    if prev is not None and w < prev:
      offset = out[-1]
    elif prev is None and out:
      offset = out[-1]
    out.append(offset + w)
    prev = w
  return out


class RunStatus(NamedTuple):
  state: str                 # new | partial | finished | budget | diverged | busy
  epoch: int                 # newest epoch a resume continues from (0: none)
  num_epochs: int
  run_wall_s: float          # wall-clock of the run up to that epoch, across resumes
  last: Dict[str, str]       # the last metrics row ({} without one)
  detail: str = ""

  @property
  def done(self) -> bool:
    return self.state in ("finished", "budget")


def run_status(workdir: str, num_epochs: int, budget_s: float = 0.0,
               check_lock: bool = True) -> RunStatus:
  """What ``workdir`` holds (see the module docstring). ``busy``: another live process holds
  its lock (:mod:`deepcrl_core.rundir`)."""
  from deepcrl_core import checkpoint as ckpt  # pylint: disable=g-import-not-at-top  (imports jax)
  from deepcrl_core import rundir  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    return RunStatus("new", 0, num_epochs, 0.0, {})
  if check_lock:
    try:
      rundir.lock(workdir).release()
    except rundir.RunDirectoryBusy as e:
      return RunStatus("busy", 0, num_epochs, 0.0, {}, str(e))
  rows = read_rows(os.path.join(workdir, "metrics.csv"))
  walls = cumulative_wall_s(rows)
  last = rows[-1] if rows else {}
  if last and any((v := _number(last.get(k))) is not None and not math.isfinite(v)
                  for k in LOSS_COLUMNS):
    return RunStatus("diverged", int(float(last["epoch"])), num_epochs, walls[-1], last,
                     f"non-finite loss at epoch {last['epoch']}")
  step = ckpt.latest_complete_step(os.path.join(workdir, "checkpoints"))
  # Rows after the newest complete checkpoint are dropped by a resumed run; without one the
  # run starts over.
  kept = [(r, w) for r, w in zip(rows, walls)
          if step is not None and int(float(r["epoch"])) <= step]
  if step is None:
    return RunStatus("new", 0, num_epochs, 0.0, last)
  if not kept:  # a checkpoint without its rows: resumable, its time unknown
    return RunStatus("partial", step, num_epochs, 0.0, last)
  row, wall = kept[-1]
  epoch = int(float(row["epoch"]))
  if epoch >= num_epochs:
    return RunStatus("finished", epoch, num_epochs, wall, row)
  if budget_s > 0 and wall >= budget_s:
    return RunStatus("budget", epoch, num_epochs, wall, row,
                     f"budget {budget_s:g}s reached at epoch {epoch}/{num_epochs}")
  return RunStatus("partial", epoch, num_epochs, wall, row)


def stored_config_mismatch(workdir: str, config, seed: Optional[int] = None) -> List[str]:
  """Fields whose value in ``workdir/config.json`` (written when the run began) differs from
  ``config``'s, ``train.max_seconds`` aside (the sweep sets it per call); [] without one.
  ``seed``: the run's own, set on a copy of ``config`` first (a cell's config has the default)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    stored = json.load(f)
  if seed is not None:
    config = copy.deepcopy(config)
    config.seed = seed
  return [f"{name}: run has {a!r}, sweep plans {b!r}" for name, a, b in
          config_lib.stored_differences(stored, config, ignore=("train.max_seconds",))]


# --- manifest ----------------------------------------------------------------------------------


def manifest(config_file: str, base_overrides: str, axes: Sequence[Axis], seeds: Sequence[int],
             budget_s: float) -> Dict:
  return {"config": config_file, "overrides": base_overrides,
          "grid": [[a.key, list(a.values)] for a in axes], "seeds": list(seeds),
          "budget_s": budget_s}


def _plan_keys(m: Mapping) -> set:
  axes = [Axis(k, tuple(v)) for k, v in m["grid"]]
  return {(c.name, s) for c in grid_cells(axes) for s in m["seeds"]}


def load_plan(workdir: str) -> Tuple[List[Axis], List[Run]]:
  """``(axes, runs)`` of the sweep in ``workdir``, from its ``sweep.json`` (every cell x seed
  planned, run or not). SweepError when ``workdir`` holds no sweep."""
  path = os.path.join(workdir, MANIFEST)
  try:
    with open(path) as f:
      m = json.load(f)
    axes = [Axis(k, tuple(v)) for k, v in m["grid"]]
    seeds = [int(s) for s in m["seeds"]]
  except FileNotFoundError:
    raise SweepError([f"{workdir!r} is not a sweep directory: it has no {MANIFEST} (written "
                      "by launch/sweep.py)"]) from None
  except (ValueError, KeyError, TypeError) as e:
    raise SweepError([f"{path} is not a sweep manifest: {type(e).__name__}: {e}"]) from None
  return axes, plan_runs(grid_cells(axes), seeds, workdir)


def check_manifest(workdir: str, new: Dict, extend: bool = False) -> Tuple[Dict, List[str]]:
  """Compares this call's sweep with ``workdir/sweep.json``: returns the manifest to write and
  notes to print; raises SweepError when the config, its overrides, the grid or the seeds
  differ (with ``extend``: unless every earlier cell x seed is still in the new plan). A
  different ``budget_s`` is allowed: runs stopped at a lower budget continue."""
  path = os.path.join(workdir, MANIFEST)
  if not os.path.exists(path):
    return dict(new, calls=[]), []
  with open(path) as f:
    old = json.load(f)
  notes = []
  same_base = old["config"] == new["config"] and old["overrides"] == new["overrides"]
  same_plan = old["grid"] == new["grid"] and old["seeds"] == new["seeds"]
  if not same_base:
    raise SweepError([
        f"{path} holds another sweep (config {old['config']}:{old['overrides']}); this call "
        f"has {new['config']}:{new['overrides']}: choose another --workdir"])
  if not same_plan:
    desc = lambda m: f"grid {grid_text(m['grid'])!r}, seeds {m['seeds']}"
    if not extend:
      raise SweepError([
          f"{path} holds another sweep ({desc(old)}); this call has {desc(new)}: rerun with "
          "the same --grid and seeds, choose another --workdir, or pass --extend to add "
          "cells or seeds to this sweep"])
    missing = _plan_keys(old) - _plan_keys(new)
    if missing:
      raise SweepError([
          f"--extend: the new plan ({desc(new)}) drops {len(missing)} run(s) of the earlier "
          f"one ({desc(old)}), e.g. {sorted(missing)[0][0]} seed {sorted(missing)[0][1]}; "
          "an extension must keep every earlier cell and seed"])
    notes.append(f"extending the sweep: {desc(old)} -> {desc(new)}")
  if old.get("budget_s") != new["budget_s"]:
    notes.append(f"--budget_s changed from {old.get('budget_s')} to {new['budget_s']}: runs "
                 "are judged against the new budget")
  return dict(new, calls=old.get("calls", [])), notes


def grid_text(grid) -> str:
  return ";".join(f"{k}={','.join(v)}" for k, v in grid)


def write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


# --- devices -----------------------------------------------------------------------------------


def detect_devices(env: Optional[Mapping[str, str]] = None) -> List[str]:
  """GPU ids the children may use: ``CUDA_VISIBLE_DEVICES``'s entries when it is set (empty or
  ``-1``: none), else ``nvidia-smi``'s GPU indices, else none (children share the one device
  JAX picks, e.g. the CPU). Starts no JAX backend."""
  env = os.environ if env is None else env
  if "CUDA_VISIBLE_DEVICES" in env:
    ids = [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    return [] if ids in ([], ["-1"]) else ids
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [line.strip() for line in out.splitlines() if line.strip()]


def parse_devices(text: str) -> List[str]:
  """``--devices``: ``"0,1,2"`` -> ids; ``"none"`` -> [] (no assignment)."""
  text = text.strip()
  if text.lower() == "none":
    return []
  ids = [d.strip() for d in text.split(",")]
  if not ids or any(not re.fullmatch(r"[A-Za-z0-9-]+", d) for d in ids):
    raise SweepError([f"--devices={text!r}: expected comma-separated GPU ids (e.g. 0,1) or none"])
  return ids


def device_slots(devices: Sequence[str], parallel: int = 0) -> List[Optional[str]]:
  """One entry per child that may run at once (``parallel``; 0 = one per device, at least
  one), each the device it gets (``None``: no assignment); devices are dealt round-robin."""
  n = parallel if parallel > 0 else max(1, len(devices))
  return [devices[i % len(devices)] if devices else None for i in range(n)]


def cpu_sets(n: int, cpus: Optional[Sequence[int]] = None) -> List[Optional[Tuple[int, ...]]]:
  """CPU children's cores: ``n`` slots' shares of ``cpus`` (default: the CPUs this process may
  run on), contiguous and as equal as the count allows (8 CPUs, 3 slots: 3, 3, 2); with more
  slots than CPUs, one CPU each, dealt round-robin. ``[None] * n`` (no pinning) for one slot or
  where the platform cannot pin (``os.sched_setaffinity`` is Linux-only).

  Two children on two cores then each keep to one instead of contending for both
  (profiling/sweep_parallel_cpu.py measures the difference)."""
  if cpus is None:
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
      return [None] * n
    cpus = os.sched_getaffinity(0)
  cpus = sorted(cpus)
  if n <= 1 or len(cpus) <= 1:
    return [None] * n
  if n >= len(cpus):
    return [(cpus[i % len(cpus)],) for i in range(n)]
  base, extra = divmod(len(cpus), n)
  sets, start = [], 0
  for i in range(n):
    size = base + (1 if i < extra else 0)
    sets.append(tuple(cpus[start:start + size]))
    start += size
  return sets


def format_cpus(cpus: Sequence[int]) -> str:
  """``(0, 1, 2, 5)`` -> ``"0-2,5"``."""
  parts, cpus = [], sorted(cpus)
  i = 0
  while i < len(cpus):
    j = i
    while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
      j += 1
    parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
    i = j + 1
  return ",".join(parts)


def child_env(base: Mapping[str, str], device: Optional[str], shared: bool) -> Dict[str, str]:
  """A child's environment: ``CUDA_VISIBLE_DEVICES=<device>``; when several children share a
  GPU, ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so none takes 75% of its memory up front."""
  env = dict(base)
  env["PYTHONUNBUFFERED"] = "1"
  if device is not None:
    env["CUDA_VISIBLE_DEVICES"] = device
    if shared:
      env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


# --- running -----------------------------------------------------------------------------------


class Outcome(NamedTuple):
  run: Run
  before: str          # status when the call began
  after: str           # status when it ended (or "skipped")
  seconds: float       # this call's wall-clock for the run (0 when skipped)
  returncode: Optional[int]
  status: RunStatus


def _fmt_s(s: float) -> str:
  s = int(round(s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
      f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def _eval_text(row: Mapping) -> str:
  parts = []
  for k, label, fmt in (("eval/success", "success", "{:.2f}"),
                        ("eval/time_at_goal", "time at goal", "{:.1f}"),
                        ("eval/final_dist", "final dist", "{:.3f}")):
    v = _number(row.get(k))
    if v is not None:
      parts.append(f"{label} {fmt.format(v)}")
  return ("eval " + ", ".join(parts)) if parts else "no evaluation yet"


def _set_parent_death_signal():  # in the child, before exec: die with the sweep
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _child_setup(cpus: Optional[Tuple[int, ...]]) -> Callable[[], None]:
  """The child's setup before exec: die with the sweep; keep to ``cpus`` when given."""
  def setup():
    _set_parent_death_signal()
    if cpus:
      try:
        os.sched_setaffinity(0, cpus)
      except OSError:  # a CPU gone offline since the plan: run unpinned rather than not at all
        pass
  return setup


class _Stop(Exception):
  """The sweep got SIGINT or SIGTERM."""


class Runner:
  """Runs planned runs as child processes, ``len(slots)`` at a time.

  ``configs``: ``{cell name: config}`` (for each run's final epoch); ``budget_s`` (0: none) is
  each run's total wall-clock; ``time_limit_s`` (0: none) is this call's: each child gets
  ``train.max_seconds`` = the smaller of its remaining budget and a fair share of the call's
  remaining time (minus its last epoch's duration, since a run stops at the first epoch end
  past it); at the limit the children still running get SIGINT (they stop keeping their last
  checkpoint) and, ``grace_s`` later, SIGKILL. SIGINT/SIGTERM to the sweep does the same.
  ``cpus`` (one entry per slot, ``None``: unpinned) keeps each slot's children to those CPUs.
  ``train_script`` and ``python`` make the child command (tests substitute a fake trainer).
  """

  def __init__(self, config_file: str, base_overrides: str, configs: Mapping[str, object], *,
               slots: Sequence[Optional[str]], budget_s: float = 0.0, time_limit_s: float = 0.0,
               retry_failed: bool = False, log_fn: Callable[[str], None] = print,
               train_script: str = TRAIN_SCRIPT, python: str = sys.executable,
               env: Optional[Mapping[str, str]] = None, grace_s: float = 30.0,
               poll_s: float = 0.2, cpus: Optional[Sequence[Optional[Tuple[int, ...]]]] = None):
    self.config_file, self.base_overrides, self.configs = config_file, base_overrides, configs
    self.slots = list(slots)
    self.cpus = [None] * len(self.slots) if cpus is None else list(cpus)
    if len(self.cpus) != len(self.slots):
      raise ValueError(f"cpus has {len(self.cpus)} entries for {len(self.slots)} slots")
    self.budget_s, self.time_limit_s = budget_s, time_limit_s
    self.retry_failed, self.log_fn = retry_failed, log_fn
    self.train_script, self.python = train_script, python
    self.env = dict(os.environ if env is None else env)
    self.grace_s, self.poll_s = grace_s, poll_s

  def num_epochs(self, run: Run) -> int:
    return config_lib.num_epochs(self.configs[run.cell.name])

  def status(self, run: Run) -> RunStatus:
    return run_status(run.workdir, self.num_epochs(run), self.budget_s)

  def command(self, run: Run, max_seconds: Optional[float]) -> List[str]:
    spec = f"{self.config_file}:{run_overrides(self.base_overrides, run.cell, run.seed, max_seconds)}"
    return [self.python, self.train_script, f"--config={spec}", f"--workdir={run.workdir}",
            "--resume"]

  def _log(self, msg: str) -> None:
    self.log_fn(f"[sweep {time.strftime('%H:%M:%S')}] {msg}")

  def run(self, runs: Sequence[Run]) -> List[Outcome]:
    t0 = time.time()
    deadline = t0 + self.time_limit_s if self.time_limit_s > 0 else None
    outcomes: Dict[int, Outcome] = {}
    pending: List[Tuple[int, Run, RunStatus]] = []
    total = len(runs)
    for i, r in enumerate(runs):
      st = self.status(r)
      skip = st.done or st.state == "busy" or (st.state == "diverged" and not self.retry_failed)
      if skip:
        why = {"finished": f"finished (epoch {st.epoch}/{st.num_epochs})",
               "budget": st.detail}.get(st.state, st.detail or st.state)
        self._log(f"skip  {r.label} [{i + 1}/{total}]: {st.state}: {why}; {_eval_text(st.last)}")
        outcomes[i] = Outcome(r, st.state, "skipped", 0.0, None, st)
      else:
        pending.append((i, r, st))
    shared = {d: self.slots.count(d) > 1 for d in self.slots}
    active: Dict[int, Tuple[subprocess.Popen, int, Run, RunStatus, float, object]] = {}
    free = list(range(len(self.slots)))
    stopping_since: Optional[float] = None

    def stop(signum, frame):  # pylint: disable=unused-argument
      raise _Stop()

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    try:
      while pending or active:
        now = time.time()
        try:
          if stopping_since is None and deadline is not None and now >= deadline and active:
            self._log(f"time limit {self.time_limit_s:g}s reached: stopping "
                      f"{len(active)} run(s) at their last checkpoint")
            stopping_since = now
            for p, *_ in active.values():
              p.send_signal(signal.SIGINT)
          if stopping_since is not None and now - stopping_since > self.grace_s:
            for p, *_ in active.values():
              p.kill()
          while (free and pending and stopping_since is None and not interrupted and
                 (deadline is None or now < deadline)):
            i, r, st = pending.pop(0)
            slot = free.pop(0)
            max_s = self._max_seconds(st, now, deadline, 1 + len(pending))
            active[slot] = self._start(i, total, r, st, self.slots[slot],
                                       shared[self.slots[slot]], max_s, self.cpus[slot])
          for slot in list(active):
            p, i, r, st, started, log = active[slot]
            if p.poll() is None:
              continue
            log.close()
            del active[slot]
            free.append(slot)
            outcomes[i] = self._finish(i, total, r, st, p.returncode, time.time() - started)
          if not pending and not active:
            break
          if deadline is not None and time.time() >= deadline and not active:
            break
          time.sleep(self.poll_s)
        except _Stop:
          if interrupted:  # a second signal: do not wait for the grace period
            for p, *_ in active.values():
              p.kill()
          interrupted = True
          if stopping_since is None:
            self._log(f"interrupted: stopping {len(active)} run(s) at their last checkpoint; "
                      "rerun the same command to continue")
            stopping_since = time.time()
            for p, *_ in active.values():
              p.send_signal(signal.SIGINT)
          pending = []
    finally:
      for s, h in old.items():
        signal.signal(s, h)
    for i, r, st in pending:
      outcomes[i] = Outcome(r, st.state, "not started", 0.0, None, st)
    if pending:
      self._log(f"time limit: {len(pending)} run(s) not started this call; rerun to continue")
    self.interrupted = interrupted
    return [outcomes[i] for i in sorted(outcomes)]

  def _max_seconds(self, st: RunStatus, now: float, deadline: Optional[float],
                   runs_left: int) -> Optional[float]:
    caps = []
    if self.budget_s > 0:
      caps.append(self.budget_s - st.run_wall_s)
    if deadline is not None:
      rounds = -(-runs_left // len(self.slots))
      epoch_s = sum(_number(st.last.get(k)) or 0.0 for k in ("time/epoch_s", "time/eval_s"))
      caps.append((deadline - now) / rounds - epoch_s)
    return max(1.0, min(caps)) if caps else None

  def _start(self, i, total, run, st, device, shared, max_s, cpus=None):
    os.makedirs(run.workdir, exist_ok=True)
    cmd = self.command(run, max_s)
    log = open(os.path.join(run.workdir, RUN_LOG), "a")
    log.write(f"\n=== sweep call {time.strftime('%Y-%m-%d %H:%M:%S')}"
              f"{'' if device is None else f' CUDA_VISIBLE_DEVICES={device}'}"
              f"{'' if not cpus else f' CPUs {format_cpus(cpus)}'}: {' '.join(cmd)}\n")
    log.flush()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=child_env(self.env, device, shared), start_new_session=True,
                         preexec_fn=_child_setup(cpus))
    where = ("" if device is None else f" on GPU {device}") + (
        "" if not cpus else f" on CPUs {format_cpus(cpus)}")
    resume = (f"resuming at epoch {st.epoch}/{st.num_epochs}, {_fmt_s(st.run_wall_s)} used"
              if st.epoch else "new")
    cap = "" if max_s is None else f", max {_fmt_s(max_s)}"
    self._log(f"start {run.label} [{i + 1}/{total}]{where}: {resume}{cap}")
    return p, i, run, st, time.time(), log

  def _finish(self, i, total, run, before, rc, seconds) -> Outcome:
    st = self.status(run)
    if st.done:
      after = st.state
    elif rc == EXIT_DIVERGED or st.state == "diverged":
      after = "diverged"
    elif rc == 0:
      after = "paused"       # stopped at this call's share of --time_limit_s
    elif rc in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGKILL, -signal.SIGTERM):
      after = "stopped"
    else:
      after = "failed"
    what = {"finished": f"finished (epoch {st.epoch}/{st.num_epochs})",
            "budget": f"budget reached (epoch {st.epoch}/{st.num_epochs})",
            "diverged": "diverged (non-finite loss)",
            "paused": f"paused at epoch {st.epoch}/{st.num_epochs} (time limit share)",
            "stopped": f"stopped at epoch {st.epoch}/{st.num_epochs} (exit {rc})",
            "failed": f"FAILED (exit {rc}; see {os.path.join(run.workdir, RUN_LOG)})"}[after]
    self._log(f"end   {run.label} [{i + 1}/{total}]: {what} in {_fmt_s(seconds)} (run "
              f"{_fmt_s(st.run_wall_s)} in all); {_eval_text(st.last)}")
    return Outcome(run, before.state, after, seconds, rc, st)


# --- aggregation -------------------------------------------------------------------------------


def aggregate(runs: Sequence[Run], axes: Sequence[Axis]) -> Tuple[List[str], List[Dict]]:
  """``(columns, rows)`` of sweep.csv: one row per run x evaluated epoch of its metrics.csv
  (every row there, including any after its newest checkpoint), columns as in the module
  docstring; ``run_wall_s`` is filled in for runs logged without it."""
  keys = [a.key for a in axes]
  metric_cols: List[str] = []
  rows: List[Dict] = []
  for r in runs:
    found = read_rows(os.path.join(r.workdir, "metrics.csv"))
    if not found:
      continue
    for c in found[0]:
      if c not in metric_cols:
        metric_cols.append(c)
    for row, wall in zip(found, cumulative_wall_s(found)):
      if not any(k.startswith("eval/") and row.get(k) not in (None, "") for k in row):
        continue
      out = {"cell": r.cell.name, **{k: r.cell.value(k) for k in keys}, "seed": r.seed}
      clash = [k for k in row if k in out]
      if clash:
        raise SweepError([f"grid axis {clash[0]!r} has the name of a metrics.csv column"])
      out.update(row)
      out["run_wall_s"] = f"{wall:.3f}" if row.get("run_wall_s") in (None, "") else row[
          "run_wall_s"]
      rows.append(out)
  if "run_wall_s" in metric_cols:  # next to wall_s, whichever run brought it
    metric_cols.remove("run_wall_s")
  metric_cols.insert(metric_cols.index("wall_s") + 1 if "wall_s" in metric_cols else 0,
                     "run_wall_s")
  return ["cell", *keys, "seed", *metric_cols], rows


def write_csv(path: str, columns: Sequence[str], rows: Sequence[Mapping]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    w.writeheader()
    for row in rows:
      w.writerow({c: row.get(c, "") for c in columns})
  os.replace(tmp, path)


# --- the whole sweep ---------------------------------------------------------------------------

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_UNFINISHED = 0, 1, 2, 4


def run_sweep(config_spec: str, grid: str, seeds: Sequence[int], workdir: str, *,
              budget_s: float = 0.0, time_limit_s: float = 0.0,
              devices: Optional[Sequence[str]] = None, parallel: int = 0,
              pin_cpus: bool = True, extend: bool = False,
              retry_failed: bool = False, dry_run: bool = False, figures: bool = True,
              log_fn: Callable[[str], None] = print, train_script: str = TRAIN_SCRIPT,
              env: Optional[Mapping[str, str]] = None) -> int:
  """Validates and plans the sweep, runs what is not finished, then writes ``sweep.csv`` and
  the figures. Returns the exit status: 0 every run finished (or reached its budget), 1 a run
  failed or diverged, 4 runs remain (``time_limit_s``, an interrupt, or a run busy in another
  process): rerun the same call to continue; 130 interrupted. Raises SweepError (nothing run or
  written) for a bad grid, invalid cells, a run directory that holds another config, or a
  ``workdir`` that holds another sweep.

  ``pin_cpus``: when the children run on the CPU (no GPU assigned) and several run at once,
  each slot gets its own share of this process's CPUs (:func:`cpu_sets`)."""
  config_file, base = split_config_spec(config_spec)
  seeds = list(seeds)
  problems = []
  if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
    problems.append(f"seeds must be distinct non-negative integers, got {seeds}")
  if budget_s < 0 or time_limit_s < 0:
    problems.append("--budget_s and --time_limit_s must be >= 0")
  if problems:
    raise SweepError(problems)
  axes = parse_grid(grid)
  cells = grid_cells(axes)
  configs = validate_cells(config_file, base, cells, budget_s)
  runs = plan_runs(cells, seeds, workdir)
  mismatched = []
  for r in runs:
    diff = stored_config_mismatch(r.workdir, configs[r.cell.name], r.seed)
    if diff:
      mismatched.append(f"{r.workdir} was started with another config ({'; '.join(diff[:3])}"
                        f"{'; ...' if len(diff) > 3 else ''}): choose another --workdir")
  if mismatched:
    raise SweepError(mismatched)
  new = manifest(config_file, base, axes, seeds, budget_s)
  record, notes = check_manifest(workdir, new, extend)
  for n in notes:
    log_fn(f"[sweep] {n}")
  devices = detect_devices(env) if devices is None else list(devices)
  slots = device_slots(devices, parallel)
  cpus = (cpu_sets(len(slots)) if pin_cpus and not devices else [None] * len(slots))
  runner = Runner(config_file, base, configs, slots=slots, budget_s=budget_s,
                  time_limit_s=time_limit_s, retry_failed=retry_failed, log_fn=log_fn,
                  train_script=train_script, env=env, cpus=cpus)
  where = (f"GPUs {','.join(d for d in slots)}" if devices else
           f"the default device, CPUs {' | '.join(format_cpus(c) for c in cpus)}"
           if any(cpus) else "the default device")
  log_fn(f"[sweep] {len(cells)} cell(s) x {len(seeds)} seed(s) = {len(runs)} run(s) of "
         f"{config_file}{':' + base if base else ''} into {workdir}; {len(slots)} at a time on "
         f"{where}; budget {f'{budget_s:g}s per run' if budget_s else 'none'}"
         f"{f', this call at most {time_limit_s:g}s' if time_limit_s else ''}")
  if dry_run:
    for i, r in enumerate(runs):
      st = runner.status(r)
      log_fn(f"[sweep] plan [{i + 1}/{len(runs)}] {r.label}: {st.state} (epoch "
             f"{st.epoch}/{st.num_epochs}); {' '.join(runner.command(r, None)[1:])}")
    return EXIT_OK
  os.makedirs(workdir, exist_ok=True)
  record["calls"] = record["calls"] + [{
      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget_s,
      "time_limit_s": time_limit_s, "devices": [d for d in slots],
      "cpus": [None if c is None else list(c) for c in cpus]}]
  write_json(os.path.join(workdir, MANIFEST), record)
  outcomes = runner.run(runs)
  code = write_results(workdir, runs, axes, figures=figures, log_fn=log_fn)
  counts: Dict[str, int] = {}
  for o in outcomes:
    state = o.status.state if o.after in ("skipped", "not started") else o.after
    counts[state] = counts.get(state, 0) + 1
  log_fn(f"[sweep] {', '.join(f'{n} {k}' for k, n in sorted(counts.items()))}")
  if runner.interrupted:
    return EXIT_INTERRUPTED
  if code or any(k in counts for k in ("failed", "diverged")):
    return EXIT_FAILED
  if any(k not in ("finished", "budget") for k in counts):
    log_fn("[sweep] unfinished runs remain: rerun the same command to continue")
    return EXIT_UNFINISHED
  return EXIT_OK


def write_results(workdir: str, runs: Sequence[Run], axes: Sequence[Axis], *,
                  figures: bool = True, log_fn: Callable[[str], None] = print) -> int:
  """``workdir/sweep.csv`` and ``workdir/figures/*.png`` (0, or 1 when the figures failed)."""
  columns, rows = aggregate(runs, axes)
  path = os.path.join(workdir, CSV_NAME)
  write_csv(path, columns, rows)
  log_fn(f"[sweep] {path}: {len(rows)} evaluation row(s) of "
         f"{len({(r['cell'], r['seed']) for r in rows})} run(s)")
  if not figures or not rows:
    return 0
  try:
    from deepcrl_core import plots  # pylint: disable=g-import-not-at-top  (matplotlib)
    written = plots.plot_sweep(workdir)
  except Exception as e:  # pylint: disable=broad-except  (the runs and the CSV are kept)
    log_fn(f"[sweep] figures failed: {type(e).__name__}: {e}")
    return 1
  log_fn(f"[sweep] {len(written)} figure(s) in {os.path.join(workdir, 'figures')}")
  return 0
