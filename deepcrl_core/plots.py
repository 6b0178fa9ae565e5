"""Figures of sweeps and runs (matplotlib, Agg backend; no JAX).

    plot_sweep(DIR)     # DIR/sweep.csv -> DIR/figures/*.png
    plot_run(RUN)       # RUN/metrics.csv (+ RUN/residual_norms.csv) -> RUN/figures/*.png
    plot_path(PATH)     # either, by what PATH holds (``launch/plot.py``)

Statistics. Curves are the mean over a cell's seeds at each evaluation (the seeds of a cell
share their evaluation epochs and env steps); against wall-clock each point sits at the seeds'
mean ``run_wall_s`` (the run's wall-clock across resumes, compilation included). Bands and
error bars are 95% Student-t intervals of the seed mean, ``mean ± t(0.975, n-1) · s / √n``
with ``s`` the sample standard deviation over the ``n`` seeds present at that point; a point
with one seed gets no band. With few seeds the interval is wide (``t(0.975, 1) = 12.7`` for
two) and is clipped to the metric's range (:data:`METRIC_BOUNDS`: success in [0, 1], time at
goal and distances non-negative), so a band never claims impossible values. "Final" values are, per run, the mean of its last
:data:`FINAL_EVALUATIONS` (5) evaluations -- the number summary.json and the paper use -- then
the seed mean and interval of those. Axes named depth, width or batch (``network.depth``,
``network.width``, ``train.batch_size`` and the actor/critic depths) are drawn on a log2 scale.

Residual norms (``residual_norms.csv``: ``epoch,env_steps,network,block,branch_norm,
stream_norm``; ``network`` in actor | sa_encoder | goal_encoder; ``block`` 0-based, -1 for the
stream after the input layer, whose ``branch_norm`` is empty): one panel per network, the
stream norm (solid) and the branch norm (dashed) against the block index for a few evaluation
epochs (the first, the last and evenly spaced ones between), log y -- the layout of the
paper's appendix A.7 figure.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from deepcrl_core import sweep as sweep_lib  # noqa: E402  pylint: disable=g-import-not-at-top

FINAL_EVALUATIONS = 5
EVAL_METRICS = (("eval/success", "eval success (any)"),
                ("eval/time_at_goal", "time at goal (steps)"),
                ("eval/final_dist", "final distance"))
TRAIN_METRICS = (("critic_loss", "critic loss"), ("actor_loss", "actor loss"),
                 ("alpha", "alpha"), ("entropy", "entropy"),
                 ("critic_accuracy", "critic accuracy"), ("logsumexp", "logsumexp"))
LOG2_FIELDS = {"network.depth", "network.actor_depth", "network.critic_depth", "network.width",
               "train.batch_size"}
DEPTH_FIELDS = {"network.depth"}
# Ranges the metrics can take: intervals are clipped to them.
METRIC_BOUNDS = {"eval/success": (0.0, 1.0), "eval/time_at_goal": (0.0, None),
                 "eval/final_dist": (0.0, None), "eval/episode_length": (0.0, None)}
NETWORKS = ("actor", "sa_encoder", "goal_encoder")
NORM_COLUMNS = ("epoch", "env_steps", "network", "block", "branch_norm", "stream_norm")


def t_interval(values: Sequence[float], level: float = 0.95,
               bounds: Optional[Tuple[Optional[float], Optional[float]]] = None
               ) -> Tuple[float, float, float]:
  """``(mean, low, high)``: the Student-t interval of the mean of ``values`` (NaN bounds for
  fewer than two values), clipped to ``bounds = (lo, hi)`` (None: unbounded on that side)."""
  x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if x.size == 0:
    return math.nan, math.nan, math.nan
  mean = float(x.mean())
  if x.size < 2:
    return mean, math.nan, math.nan
  from scipy import stats  # pylint: disable=g-import-not-at-top
  half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  low, high = mean - half, mean + half
  if bounds is not None:
    if bounds[0] is not None:
      low = max(low, bounds[0])
    if bounds[1] is not None:
      high = min(high, bounds[1])
  return mean, low, high


_num = sweep_lib.finite_number


def read_csv(path: str) -> Tuple[List[str], List[Dict[str, str]]]:
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def sweep_axes(columns: Sequence[str]) -> List[str]:
  """The grid axes of a sweep.csv: its columns between ``cell`` and ``seed``."""
  if "cell" not in columns or "seed" not in columns:
    raise ValueError("not a sweep.csv: it needs the columns 'cell' and 'seed'")
  return list(columns[columns.index("cell") + 1:columns.index("seed")])


def _is_log2(axis: str, values: Sequence[str]) -> bool:
  nums = [_num(v) for v in values]
  return (bool(set(sweep_lib.field_path(axis)) & LOG2_FIELDS) and
          all(n is not None and n > 0 for n in nums))


def _sort_values(values):
  nums = [_num(v) for v in values]
  if all(n is not None for n in nums):
    return [v for _, v in sorted(zip(nums, values))]
  return sorted(values)


# --- curves ------------------------------------------------------------------------------------


def seed_curve(rows: Sequence[Dict], metric: str, x: str) -> Dict[str, np.ndarray]:
  """One cell's curve: at each evaluated epoch, the mean ``x`` over seeds and the mean and
  95% interval of ``metric`` over the seeds that have it (``x``, ``mean``, ``low``, ``high``,
  ``n`` arrays, by epoch)."""
  by_epoch: Dict[int, List[Tuple[float, float]]] = {}
  for r in rows:
    y, xv, e = _num(r.get(metric)), _num(r.get(x)), _num(r.get("epoch"))
    if y is None or xv is None or e is None:
      continue
    by_epoch.setdefault(int(e), []).append((xv, y))
  out = {k: [] for k in ("x", "mean", "low", "high", "n")}
  for e in sorted(by_epoch):
    pts = by_epoch[e]
    m, lo, hi = t_interval([y for _, y in pts], bounds=METRIC_BOUNDS.get(metric))
    out["x"].append(float(np.mean([xv for xv, _ in pts])))
    out["mean"].append(m)
    out["low"].append(lo)
    out["high"].append(hi)
    out["n"].append(len(pts))
  return {k: np.asarray(v, np.float64) for k, v in out.items()}


def final_values(rows: Sequence[Dict], metric: str, last: int = FINAL_EVALUATIONS
                 ) -> Dict[Tuple[str, str], float]:
  """``{(cell, seed): mean of the run's last ``last`` values of metric}``."""
  per_run: Dict[Tuple[str, str], List[Tuple[int, float]]] = {}
  for r in rows:
    y, e = _num(r.get(metric)), _num(r.get("epoch"))
    if y is not None and e is not None:
      per_run.setdefault((r["cell"], r["seed"]), []).append((int(e), y))
  return {k: float(np.mean([y for _, y in sorted(v)[-last:]])) for k, v in per_run.items()}


def _colors(n: int):
  if n <= 10:
    return [plt.get_cmap("tab10")(i) for i in range(n)]
  return [plt.get_cmap("viridis")(i / max(1, n - 1)) for i in range(n)]


def _draw_curve(ax, curve, color, label):
  if not curve["x"].size:
    return
  ax.plot(curve["x"], curve["mean"], color=color, label=label, marker="." if
          curve["x"].size < 30 else None)
  band = curve["n"] >= 2
  if band.any():
    ax.fill_between(curve["x"], np.where(band, curve["low"], np.nan),
                    np.where(band, curve["high"], np.nan), color=color, alpha=0.2, linewidth=0)


def _metrics_present(rows, metrics=EVAL_METRICS):
  return [(k, label) for k, label in metrics if any(_num(r.get(k)) is not None for r in rows)]


def _cells(rows) -> List[str]:
  seen: List[str] = []
  for r in rows:
    if r["cell"] not in seen:
      seen.append(r["cell"])
  return seen


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  return path


def _curves_figure(rows, metrics, x: str, xlabel: str, title: str, path: str,
                   group_key: str = "cell", legend_title: str = "cell") -> str:
  groups = _cells(rows) if group_key == "cell" else [""]
  fig, axs = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
  colors = _colors(len(groups))
  for ax, (metric, label) in zip(axs[0], metrics):
    for g, color in zip(groups, colors):
      sub = [r for r in rows if group_key != "cell" or r["cell"] == g]
      n_seeds = len({r.get("seed") for r in sub})
      _draw_curve(ax, seed_curve(sub, metric, x), color,
                  f"{g} (n={n_seeds})" if group_key == "cell" else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  if group_key == "cell":
    axs[0][-1].legend(title=legend_title, fontsize=7, title_fontsize=8, loc="best")
  fig.suptitle(title)
  return _save(fig, path)


# --- sweep figures -----------------------------------------------------------------------------


def plot_sweep(workdir: str, out_dir: Optional[str] = None, last: int = FINAL_EVALUATIONS
               ) -> List[str]:
  """The sweep's figures from ``workdir/sweep.csv`` alone (and residual-norm figures of the
  runs under ``workdir/runs`` that have a residual_norms.csv); returns the paths written:

  * ``curves_env_steps.png`` / ``curves_wall_clock.png``: each eval metric vs env steps / the
    run's wall-clock, one line per cell (seed mean, 95% t band);
  * ``final_vs_<axis>.png``: each eval metric's final value (mean of the last ``last``
    evaluations) vs that grid axis, one line per combination of the other axes;
  * ``wall_clock_vs_depth.png`` (a depth axis only): wall-clock of the run to its last
    evaluation, and seconds per million env steps, vs depth.
  """
  columns, rows = read_csv(os.path.join(workdir, sweep_lib.CSV_NAME))
  axes = sweep_axes(columns)
  out_dir = out_dir or os.path.join(workdir, "figures")
  if not rows:
    raise ValueError(f"{os.path.join(workdir, sweep_lib.CSV_NAME)} has no evaluation rows")
  metrics = _metrics_present(rows)
  n_seeds = len({r["seed"] for r in rows})
  written = []
  title = (f"{os.path.basename(os.path.abspath(workdir))}: mean over seeds (up to {n_seeds}), "
           "95% t interval")
  written.append(_curves_figure(rows, metrics, "env_steps", "env steps", title,
                                os.path.join(out_dir, "curves_env_steps.png")))
  written.append(_curves_figure(rows, metrics, "run_wall_s", "wall-clock (s)", title,
                                os.path.join(out_dir, "curves_wall_clock.png")))
  for axis in axes:
    written.append(_final_vs_axis(rows, axes, axis, metrics, last,
                                  os.path.join(out_dir, f"final_vs_{_file(axis)}.png")))
  depth = [a for a in axes if set(sweep_lib.field_path(a)) & DEPTH_FIELDS]
  if depth:
    written.append(_wall_vs_depth(rows, axes, depth[0],
                                  os.path.join(out_dir, "wall_clock_vs_depth.png")))
  runs_dir = os.path.join(workdir, "runs")
  if os.path.isdir(runs_dir):
    for cell in sorted(os.listdir(runs_dir)):
      for seed in sorted(os.listdir(os.path.join(runs_dir, cell))):
        norms = os.path.join(runs_dir, cell, seed, "residual_norms.csv")
        if os.path.exists(norms):
          written.append(plot_residual_norms(
              norms, os.path.join(out_dir, f"residual_norms__{cell}__{seed}.png"),
              title=f"{cell} {seed}"))
  return written


def _file(axis: str) -> str:
  return axis.replace(".", "_")


def _other_groups(rows, axes, axis):
  others = [a for a in axes if a != axis]
  groups: Dict[Tuple[str, ...], List[Dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r[a] for a in others), []).append(r)
  return others, groups


def _per_value(rows, axis, per_run: Dict[Tuple[str, str], float], bounds=None):
  """``[(value, mean, low, high, n)]`` over the runs of ``rows``, by axis value."""
  by_value: Dict[str, Dict[Tuple[str, str], float]] = {}
  for r in rows:
    key = (r["cell"], r["seed"])
    if key in per_run:
      by_value.setdefault(r[axis], {})[key] = per_run[key]
  out = []
  for v in _sort_values(list(by_value)):
    m, lo, hi = t_interval(list(by_value[v].values()), bounds=bounds)
    out.append((v, m, lo, hi, len(by_value[v])))
  return out


def _axis_positions(ax, axis, values):
  nums = [_num(v) for v in values]
  if all(n is not None for n in nums):
    if _is_log2(axis, values):
      ax.set_xscale("log", base=2)
      ax.set_xticks(nums)
      ax.set_xticklabels(values)
    return nums
  return None


def _errorbar_lines(ax, rows, axes, axis, per_run, all_values, bounds=(0.0, None)):
  others, groups = _other_groups(rows, axes, axis)
  positions = _axis_positions(ax, axis, all_values)
  index = {v: i for i, v in enumerate(all_values)}
  colors = _colors(len(groups))
  for (key, sub), color in zip(sorted(groups.items()), colors):
    pts = _per_value(sub, axis, per_run, bounds)
    if not pts:
      continue
    xs = [positions[index[v]] if positions else index[v] for v, *_ in pts]
    m = np.array([p[1] for p in pts])
    err = np.array([[p[1] - p[2], p[3] - p[1]] for p in pts]).T
    err = np.where(np.isfinite(err), err, 0.0)
    label = ", ".join(f"{a}={v}" for a, v in zip(others, key)) or None
    ax.errorbar(xs, m, yerr=err, color=color, marker="o", capsize=3, label=label)
  if positions is None:
    ax.set_xticks(range(len(all_values)))
    ax.set_xticklabels(all_values)
  ax.set_xlabel(axis)
  ax.grid(alpha=0.3)
  return bool(others)


def _final_vs_axis(rows, axes, axis, metrics, last, path) -> str:
  values = _sort_values(list({r[axis] for r in rows}))
  fig, axs = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
  legend = False
  for ax, (metric, label) in zip(axs[0], metrics):
    legend = _errorbar_lines(ax, rows, axes, axis, final_values(rows, metric, last), values,
                             METRIC_BOUNDS.get(metric))
    ax.set_ylabel(f"{label}, last {last} evals")
  if legend:
    axs[0][-1].legend(fontsize=7)
  fig.suptitle(f"final metrics vs {axis}: mean over seeds of each run's last {last} "
               "evaluations, 95% t interval")
  return _save(fig, path)


def _wall_vs_depth(rows, axes, axis, path) -> str:
  last_row: Dict[Tuple[str, str], Dict] = {}
  for r in rows:
    key = (r["cell"], r["seed"])
    if _num(r.get("epoch")) is not None and (
        key not in last_row or _num(r["epoch"]) > _num(last_row[key]["epoch"])):
      last_row[key] = r
  wall = {k: _num(r.get("run_wall_s")) for k, r in last_row.items()}
  per_m = {k: w / _num(r["env_steps"]) * 1e6 for (k, r), w in zip(last_row.items(),
                                                                   wall.values())
           if w is not None and _num(r.get("env_steps"))}
  wall = {k: w for k, w in wall.items() if w is not None}
  values = _sort_values(list({r[axis] for r in rows}))
  fig, axs = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
  legend = _errorbar_lines(axs[0][0], rows, axes, axis, wall, values)
  axs[0][0].set_ylabel("wall-clock to the last evaluation (s)")
  _errorbar_lines(axs[0][1], rows, axes, axis, per_m, values)
  axs[0][1].set_ylabel("seconds per 1M env steps")
  if legend:
    axs[0][1].legend(fontsize=7)
  fig.suptitle("wall-clock vs depth (compilation included; mean over seeds, 95% t interval)")
  return _save(fig, path)


# --- single runs -------------------------------------------------------------------------------


def plot_run(run_dir: str, out_dir: Optional[str] = None) -> List[str]:
  """A run's learning curves from ``run_dir/metrics.csv`` (eval metrics vs env steps and vs
  the run's wall-clock across resumes, the training metrics vs env steps) and, when the run
  has one, its residual_norms.csv figure; returns the paths written (``run_dir/figures``)."""
  _, rows = read_csv(os.path.join(run_dir, "metrics.csv"))
  if not rows:
    raise ValueError(f"{os.path.join(run_dir, 'metrics.csv')} has no rows")
  for r, w in zip(rows, sweep_lib.cumulative_wall_s(rows)):
    r["run_wall_s"] = str(w)
    r["cell"], r["seed"] = "run", "0"
  out_dir = out_dir or os.path.join(run_dir, "figures")
  name = os.path.basename(os.path.abspath(run_dir))
  written = []
  evals = [r for r in rows if any(_num(r.get(k)) is not None for k, _ in EVAL_METRICS)]
  metrics = _metrics_present(evals)
  if metrics:
    written.append(_curves_figure(evals, metrics, "env_steps", "env steps", name,
                                  os.path.join(out_dir, "curves_env_steps.png"), group_key=""))
    written.append(_curves_figure(evals, metrics, "run_wall_s", "wall-clock (s)", name,
                                  os.path.join(out_dir, "curves_wall_clock.png"), group_key=""))
  train = _metrics_present(rows, TRAIN_METRICS)
  if train:
    written.append(_curves_figure(rows, train, "env_steps", "env steps", f"{name}: training",
                                  os.path.join(out_dir, "training.png"), group_key=""))
  norms = os.path.join(run_dir, "residual_norms.csv")
  if os.path.exists(norms):
    written.append(plot_residual_norms(norms, os.path.join(out_dir, "residual_norms.png"),
                                       title=name))
  return written


def _run_labels(run_dirs: Sequence[str], labels: Optional[Sequence[str]]) -> List[str]:
  labels = list(labels) if labels else [str(d).rstrip("/") for d in run_dirs]
  if len(labels) != len(run_dirs):
    raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
  if any(not str(label).strip() for label in labels):
    raise ValueError(f"labels must not be empty, got {labels}")
  real = [os.path.realpath(d) for d in run_dirs]
  twice = sorted({d for d, r in zip(run_dirs, real) if real.count(r) > 1})
  if twice:
    raise ValueError(f"run directory given more than once: {', '.join(map(str, twice))}")
  return labels


def _run_names(labels: Sequence[str]) -> List[str]:
  """One name per run: its label, or ``label (i/n)`` where n runs share the label."""
  count = {label: labels.count(label) for label in labels}
  seen: Dict[str, int] = {}
  names = []
  for label in labels:
    seen[label] = seen.get(label, 0) + 1
    names.append(label if count[label] == 1 else f"{label} ({seen[label]}/{count[label]})")
  return names


def _check_schedules(label: str, runs: Sequence[Tuple[str, List[Dict[str, str]]]]) -> None:
  """Runs sharing a label are averaged per evaluation epoch, so each epoch must be the same
  number of env steps in all of them; ValueError naming the first epoch that is not."""
  steps: Dict[int, Tuple[str, float]] = {}
  for run_dir, rows in runs:
    for r in rows:
      e, x = _num(r.get("epoch")), _num(r["env_steps"])
      if e is None:
        raise ValueError(f"{run_dir}: an evaluated row without an epoch; runs sharing the "
                         f"label {label!r} are averaged per epoch")
      other = steps.setdefault(int(e), (run_dir, x))
      if other[1] != x:
        raise ValueError(
            f"runs labelled {label!r} are averaged as seeds of one setting, but their "
            f"evaluations differ: epoch {int(e)} is {_steps(other[1])} env steps in "
            f"{other[0]} and {_steps(x)} in {run_dir}; give them different labels")


def _eval_rows(run_dir: str) -> List[Dict[str, str]]:
  path = os.path.join(run_dir, "metrics.csv")
  if not os.path.exists(path):
    runs = os.path.join(run_dir, "runs", "*", "seed_*")
    hint = (f"; it is a sweep directory: pass its runs, e.g. {runs}"
            if os.path.exists(os.path.join(run_dir, "sweep.csv")) else "")
    raise ValueError(f"{run_dir!r} is not a run directory (no metrics.csv){hint}")
  _, rows = read_csv(path)
  evals = [r for r in rows if _num(r.get("env_steps")) is not None
           and any(_num(r.get(k)) is not None for k, _ in EVAL_METRICS)]
  if not evals:
    raise ValueError(f"{path} has no evaluated rows")
  return sorted(evals, key=lambda r: _num(r["env_steps"]))


def plot_runs(run_dirs: Sequence[str], labels: Optional[Sequence[str]] = None,
              out_dir: Optional[str] = None) -> List[str]:
  """Several runs on one figure: each run's evaluation metrics (``run_dir/metrics.csv``)
  against env steps, one curve per label (default: the run directories as given); written to
  ``out_dir/compare_env_steps.png`` (default: the current directory). Runs sharing a label
  are seeds of one setting: their curve is the mean per evaluation epoch with a 95% t
  interval over the runs (the legend gives n), and their evaluations must fall at the same
  env steps. Env steps, not wall-clock, because runs compared this way rarely had the machine
  to themselves. ValueError naming the problem when a directory holds no metrics.csv rows,
  the labels do not match the runs, or runs sharing a label evaluated at different env
  steps."""
  if len(run_dirs) < 2:
    raise ValueError(f"comparing runs needs at least two run directories, got {len(run_dirs)}")
  labels = _run_labels(run_dirs, labels)
  runs = [(d, label, _eval_rows(d)) for d, label in zip(run_dirs, labels)]
  rows = []
  for label in dict.fromkeys(labels):
    group = [(d, evals) for d, lab, evals in runs if lab == label]
    _check_schedules(label, group)
    for i, (_, evals) in enumerate(group):
      for r in evals:
        r["cell"], r["seed"] = label, str(i)
      rows += evals
  metrics = _metrics_present(rows)
  path = os.path.join(out_dir or ".", "compare_env_steps.png")
  return [_curves_figure(rows, metrics, "env_steps", "env steps", "", path,
                         legend_title="run")]


# Columns of window_table: (metrics.csv column, header, statistics, digits).
WINDOW_COLUMNS = (("eval/success", "success (mean / max)", ("mean", "max"), 3),
                  ("eval/time_at_goal", "time at goal (mean)", ("mean",), 1),
                  ("eval/final_dist", "final distance (mean)", ("mean",), 2),
                  ("eval/episode_length", "eval episode length", ("mean",), 0),
                  ("eval/terminated", "ended early", ("mean",), 2),
                  ("critic_accuracy", "critic accuracy", ("mean",), 2))
FIRST_SUCCESS = (0.1, 0.5)


def _steps(n: float) -> str:
  """Env steps for a table: 0, 620, 39.7k, 1M, 1.5M, 3.004M."""
  if n < 1e3:
    return f"{n:g}"
  if n >= 1e6:
    return f"{round(n / 1e6, 3):g}M"
  return f"{round(n / 1e3, 1):g}k"


def _windows(rows: Sequence[Dict[str, str]], window: int
             ) -> List[Tuple[int, float, List[Dict[str, str]]]]:
  """A run's evaluations by window: ``(k, end, rows)`` for each window ``[k·window,
  (k+1)·window)`` holding evaluations, the last one ending at the last evaluation."""
  by_window: Dict[int, List[Dict[str, str]]] = {}
  for r in rows:
    by_window.setdefault(int(_num(r["env_steps"]) // window), []).append(r)
  last, end = max(by_window), _num(rows[-1]["env_steps"])
  return [(k, min((k + 1) * window, end) if k == last else (k + 1) * window, by_window[k])
          for k in sorted(by_window)]


def _mean_of(rows: Sequence[Dict[str, str]], key: str) -> Optional[float]:
  values = [v for v in (_num(r.get(key)) for r in rows) if v is not None]
  return float(np.mean(values)) if values else None


def _fmt(v: float, digits: int) -> str:
  return f"{v:.{digits}f}" if digits else f"{v:.0f}"


def window_table(run_dirs: Sequence[str], window: int, labels: Optional[Sequence[str]] = None,
                 last: int = FINAL_EVALUATIONS) -> str:
  """The evaluations of one or more runs averaged over windows of ``window`` env steps, as
  markdown: per run and window ``[k·window, (k+1)·window)`` the number of evaluations, mean and
  max success, and the means of time at goal, final distance, evaluation episode length, the
  share of evaluation episodes that ended early and critic accuracy (columns a run lacks are
  left out; a window without evaluations is skipped; the last window ends at the last
  evaluation). A second table gives per run the env steps of its first evaluation reaching
  each success level of :data:`FIRST_SUCCESS` ("-" when none did) and the mean of its last
  ``last`` evaluations. Runs sharing a label are seeds of one setting (named ``label (i/n)``
  in those tables); a third table then gives per setting and window the mean over its runs of
  their window means of success, time at goal and final distance, with the smallest and
  largest run, and the same for the means of their last ``last`` evaluations. These are the
  numbers profiling/RESULTS.md quotes for learning runs, so they come from one command
  (``launch/plot.py RUN ... --windows=1000000``). ValueError naming the problem for a bad
  window, bad labels or a directory without evaluations."""
  if window <= 0:
    raise ValueError(f"the window must be a positive number of env steps, got {window}")
  if last < 1:
    raise ValueError(f"last must be at least 1, got {last}")
  labels = _run_labels(run_dirs, labels)
  runs = [(name, _eval_rows(d)) for d, name in zip(run_dirs, _run_names(labels))]
  columns = [c for c in WINDOW_COLUMNS
             if any(_num(r.get(c[0])) is not None for _, rows in runs for r in rows)]
  head = ["run", "env steps", "evaluations"] + [c[1] for c in columns]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, rows in runs:
    for k, hi, group in _windows(rows, window):
      cells = [name, f"{_steps(k * window)}-{_steps(hi)}", str(len(group))]
      for key, _, stats, digits in columns:
        values = [v for v in (_num(r.get(key)) for r in group) if v is not None]
        if not values:
          cells.append("-")
          continue
        parts = [float(np.mean(values)) if s == "mean" else max(values) for s in stats]
        cells.append(" / ".join(_fmt(v, digits) for v in parts))
      lines.append("| " + " | ".join(cells) + " |")
  head = (["run", "env steps", "evaluations"]
          + [f"first success >= {lvl:g}" for lvl in FIRST_SUCCESS]
          + [f"last {last}: success", f"last {last}: time at goal"])
  lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, rows in runs:
    cells = [name, _steps(_num(rows[-1]["env_steps"])), str(len(rows))]
    for lvl in FIRST_SUCCESS:
      hit = next((r for r in rows if (_num(r.get("eval/success")) or 0.0) >= lvl), None)
      cells.append(_steps(_num(hit["env_steps"])) if hit else "-")
    for key, digits in (("eval/success", 3), ("eval/time_at_goal", 1)):
      value = _mean_of(rows[-last:], key)
      cells.append("-" if value is None else f"{value:.{digits}f}")
    lines.append("| " + " | ".join(cells) + " |")
  if len(set(labels)) < len(labels):
    lines += ["", _settings_table(labels, [rows for _, rows in runs], window, last)]
  return "\n".join(lines) + "\n"


# Columns of the per-setting table: (metrics.csv column, header, digits).
SETTING_COLUMNS = (("eval/success", "success", 3), ("eval/time_at_goal", "time at goal", 1),
                   ("eval/final_dist", "final distance", 2))


def _settings_table(labels: Sequence[str], runs: Sequence[List[Dict[str, str]]], window: int,
                    last: int) -> str:
  """window_table's third table: per label, each run's window means (and the means of its
  last ``last`` evaluations) averaged over the label's runs, as ``mean (min-max)`` (the
  value alone for one run)."""
  columns = [c for c in SETTING_COLUMNS
             if any(_num(r.get(c[0])) is not None for rows in runs for r in rows)]
  head = (["setting", "env steps", "runs"]
          + [f"{header}: mean over runs (min-max)" for _, header, _ in columns])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

  def row(label, span, groups):
    cells = [label, span, str(len(groups))]
    for key, _, digits in columns:
      values = [v for v in (_mean_of(g, key) for g in groups) if v is not None]
      spread = (f" ({_fmt(min(values), digits)}-{_fmt(max(values), digits)})"
                if len(values) > 1 else "")
      cells.append(f"{_fmt(float(np.mean(values)), digits)}{spread}" if values else "-")
    return "| " + " | ".join(cells) + " |"

  for label in dict.fromkeys(labels):
    members = [rows for lab, rows in zip(labels, runs) if lab == label]
    by_k: Dict[int, List[Tuple[float, List[Dict[str, str]]]]] = {}
    for rows in members:
      for k, hi, group in _windows(rows, window):
        by_k.setdefault(k, []).append((hi, group))
    for k in sorted(by_k):
      hi = max(h for h, _ in by_k[k])
      lines.append(row(label, f"{_steps(k * window)}-{_steps(hi)}", [g for _, g in by_k[k]]))
    lines.append(row(label, f"last {last} evaluations", [rows[-last:] for rows in members]))
  return "\n".join(lines)


def pick_epochs(epochs: Sequence[int], k: int = 4) -> List[int]:
  """Up to ``k`` of the sorted distinct ``epochs``: the first, the last and evenly spaced ones
  between."""
  e = sorted(set(epochs))
  if len(e) <= k:
    return e
  idx = sorted({round(i * (len(e) - 1) / (k - 1)) for i in range(k)})
  return [e[i] for i in idx]


def read_residual_norms(path: str) -> List[Dict]:
  columns, rows = read_csv(path)
  if tuple(columns) != NORM_COLUMNS:
    raise ValueError(f"{path}: expected the columns {','.join(NORM_COLUMNS)}, got "
                     f"{','.join(columns)}")
  bad = sorted({r["network"] for r in rows} - set(NETWORKS))
  if bad:
    raise ValueError(f"{path}: unknown network(s) {bad}; expected one of {NETWORKS}")
  return [{"epoch": int(float(r["epoch"])), "env_steps": int(float(r["env_steps"])),
           "network": r["network"], "block": int(r["block"]),
           "branch_norm": _num(r["branch_norm"]), "stream_norm": _num(r["stream_norm"])}
          for r in rows]


def plot_residual_norms(path: str, out_path: str, max_epochs: int = 4, title: str = "") -> str:
  """Norm vs block index, one panel per network (see the module docstring)."""
  rows = read_residual_norms(path)
  networks = [n for n in NETWORKS if any(r["network"] == n for r in rows)]
  epochs = pick_epochs([r["epoch"] for r in rows], max_epochs)
  colors = [plt.get_cmap("viridis")(i / max(1, len(epochs) - 1)) for i in range(len(epochs))]
  fig, axs = plt.subplots(1, len(networks), figsize=(4.5 * len(networks), 3.6), squeeze=False)
  for ax, net in zip(axs[0], networks):
    for epoch, color in zip(epochs, colors):
      sub = sorted((r for r in rows if r["network"] == net and r["epoch"] == epoch),
                   key=lambda r: r["block"])
      if not sub:
        continue
      steps = sub[0]["env_steps"]
      blocks = [r["block"] for r in sub]
      ax.plot(blocks, [r["stream_norm"] if r["stream_norm"] else np.nan for r in sub],
              color=color, marker="o", ms=3, label=f"epoch {epoch} ({steps:,} steps)")
      br = [(r["block"], r["branch_norm"]) for r in sub if r["branch_norm"]]
      if br:
        ax.plot(*zip(*br), color=color, linestyle="--", marker="x", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("residual block (-1: after the input layer)")
    ax.set_ylabel("mean L2 norm")
    ax.set_title(net)
    ax.grid(alpha=0.3, which="both")
  axs[0][0].plot([], [], color="gray", label="stream (solid)")
  axs[0][0].plot([], [], color="gray", linestyle="--", label="branch (dashed)")
  handles, labels = axs[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(6, len(labels)),
             frameon=False)
  fig.suptitle(f"{title + ': ' if title else ''}residual stream and branch norms by block")
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  return _save(fig, out_path)


def plot_path(path: str, out_dir: Optional[str] = None) -> List[str]:
  """A sweep directory (sweep.csv) or a run directory (metrics.csv)."""
  if os.path.exists(os.path.join(path, sweep_lib.CSV_NAME)):
    return plot_sweep(path, out_dir)
  if os.path.exists(os.path.join(path, "metrics.csv")):
    return plot_run(path, out_dir)
  raise FileNotFoundError(f"{path!r} holds neither {sweep_lib.CSV_NAME} (a sweep directory) nor "
                          "metrics.csv (a run directory)")
