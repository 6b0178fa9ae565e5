"""The paper's headline numbers of a run, under the published metric names: ``summary.json``.

The paper reports "time at goal" -- steps of a 1000-step evaluation episode spent within the
success radius -- averaged over the last 5 evaluations of a run; its code logs that as
``eval/episode_success`` and the fraction of episodes that ever reach the goal as
``eval/episode_success_any`` (github.com/wang-kevin3290/scaling-crl, ``evaluator.py``).
deepcrl's per-epoch columns are ``eval/time_at_goal`` and ``eval/success`` respectively
(:data:`PUBLISHED_NAMES` maps one onto the other): do not compare deepcrl's ``eval/success``
with the published ``eval/episode_success``.

    write_summary(workdir)          # reads workdir/metrics.csv, writes workdir/summary.json
    headline_metrics(rows)          # the same dict from metrics rows (dicts)
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

from deepcrl_core import sweep

# published name -> deepcrl's metrics.csv column
PUBLISHED_NAMES = {
    "eval/episode_success": "eval/time_at_goal",
    "eval/episode_success_any": "eval/success",
}
LAST_EVALUATIONS = 5
FILENAME = "summary.json"


def published_eval_metrics(metrics: Mapping[str, float]) -> Dict[str, float]:
  """``agent.evaluate``'s dict (``success``, ``time_at_goal``, ...) under the published names
  (``eval/episode_success`` = time at goal, ``eval/episode_success_any`` = success), followed by
  the other metrics with an ``eval/`` prefix."""
  out = {}
  for published, ours in PUBLISHED_NAMES.items():
    key = ours.split("/", 1)[1]
    if key in metrics:
      out[published] = float(metrics[key])
  for k, v in metrics.items():
    if f"eval/{k}" not in PUBLISHED_NAMES.values():
      out[f"eval/{k}"] = float(v)
  return out


def headline_metrics(rows: Sequence[Mapping], last: int = LAST_EVALUATIONS) -> Dict:
  """Means over the last ``last`` evaluated rows (fewer if the run has fewer), the env steps
  and epochs those evaluations were made at, and each evaluation's values."""
  key = PUBLISHED_NAMES["eval/episode_success"]
  evaluated = [r for r in rows if sweep.finite_number(r.get(key)) is not None]
  used = evaluated[-last:] if last > 0 else []
  out: Dict = {"num_evaluations": len(used), "of_last": last,
               "env_steps": [int(float(r["env_steps"])) for r in used],
               "epochs": [int(float(r["epoch"])) for r in used]}
  for published, ours in PUBLISHED_NAMES.items():
    values = [sweep.finite_number(r.get(ours)) for r in used]
    values = [v for v in values if v is not None]
    out[published] = sum(values) / len(values) if values else None
    out[f"{published}/per_evaluation"] = values
  out["definition"] = (
      f"mean over the last {last} evaluations: eval/episode_success = steps of an evaluation "
      "episode within the success radius (the paper's 'time at goal'; deepcrl's "
      "eval/time_at_goal), eval/episode_success_any = fraction of evaluation episodes that "
      "reach the goal at least once (deepcrl's eval/success)")
  return out


def read_metrics(path: str) -> List[Dict[str, str]]:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def write_summary(workdir: str, rows: Optional[Sequence[Mapping]] = None,
                  **extra) -> Dict:
  """Writes ``workdir/summary.json`` (atomically) and returns its dict. ``rows`` defaults to
  ``workdir/metrics.csv`` -- every epoch of the run, across resumes; ``extra`` items (e.g.
  ``env=...``) are added as they are."""
  if rows is None:
    rows = read_metrics(os.path.join(workdir, "metrics.csv"))
  summary = {**headline_metrics(rows), **extra}
  if rows:
    summary["final_env_steps"] = int(float(rows[-1]["env_steps"]))
    summary["final_epoch"] = int(float(rows[-1]["epoch"]))
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".tmp_summary_")
  with os.fdopen(fd, "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, FILENAME))
  return summary


def _callback_base():
  from deepcrl_core import callbacks  # pylint: disable=g-import-not-at-top
  return callbacks.Callback


class SummaryCallback(_callback_base()):
  """Writes ``summary.json`` when a run call ends without an error (process 0), from the run
  directory's ``metrics.csv`` so resumed runs summarise all their epochs."""

  def __init__(self, workdir: str):
    self.workdir = workdir

  def on_train_end(self, ctx, rows):
    if not ctx.main_process or ctx.error is not None:
      return
    cfg = ctx.config
    from deepcrl_core import tasks  # pylint: disable=g-import-not-at-top
    task = tasks.TASKS.get(cfg.env.name)
    extra = {}
    if task is not None and task.published_time_at_goal:
      # The paper's time at goal for this task (width 256, batch 512), to compare against.
      extra["paper_time_at_goal_by_depth"] = {
          str(d): v for d, v in task.published_time_at_goal.items()}
    write_summary(self.workdir, env=cfg.env.name, eval_env=cfg.env.eval_name or cfg.env.name,
                  seed=int(cfg.seed), depth=int(cfg.network.depth), **extra)
