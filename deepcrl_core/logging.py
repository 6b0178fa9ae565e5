"""Run-directory writers: ``metrics.csv`` (one row per epoch), TensorBoard events, console."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from typing import Dict, List, Optional

# Columns always present in metrics.csv, in this order; any further metrics follow. wall_s is
# the wall-clock of this training call (since train() was entered: build and compile included),
# run_wall_s that of the whole run across resumes (deepcrl_core.train: the restored epoch's
# run_wall_s + wall_s).
CORE_COLUMNS = [
    "epoch", "env_steps", "grad_steps", "wall_s", "run_wall_s", "sps", "eval/success",
    "eval/time_at_goal", "eval/final_dist", "critic_loss", "actor_loss", "alpha", "alpha_loss",
    "entropy", "critic_accuracy", "logsumexp", "time/epoch_s", "time/eval_s",
]


class MetricsCSV:
  """Appends one row per epoch. Columns are fixed by the first row written."""

  def __init__(self, path: str):
    self.path = path
    self.columns: Optional[List[str]] = None
    if os.path.exists(path):
      with open(path, newline="") as f:
        header = next(csv.reader(f), None)
      self.columns = header or None

  def truncate_after(self, epoch: int) -> None:
    """Drops rows of epochs later than ``epoch`` (used when resuming from a checkpoint)."""
    if not os.path.exists(self.path):
      return
    with open(self.path, newline="") as f:
      rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(float(r["epoch"])) <= epoch]
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path) or ".", prefix=".tmp_metrics_")
    with os.fdopen(fd, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=self.columns)
      writer.writeheader()
      writer.writerows(keep)
    os.replace(tmp, self.path)

  def write(self, row: Dict[str, float]) -> None:
    new_file = self.columns is None
    if new_file:
      extra = sorted(k for k in row if k not in CORE_COLUMNS)
      self.columns = CORE_COLUMNS + extra
    with open(self.path, "a", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
      if new_file:
        writer.writeheader()
      writer.writerow({k: row.get(k, "") for k in self.columns})


class TensorBoard:
  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._writer = SummaryWriter(logdir)

  def write(self, step: int, row: Dict[str, float]) -> None:
    for k, v in row.items():
      if isinstance(v, (int, float)) and math.isfinite(v):
        self._writer.add_scalar(k, v, step)
    self._writer.flush()

  def close(self):
    self._writer.close()


def format_progress(row: Dict[str, float], num_epochs: int) -> str:
  def g(k, fmt="{:.3f}"):
    v = row.get(k)
    return "-" if v is None or v == "" else fmt.format(v)
  return (f"epoch {int(row['epoch'])}/{num_epochs} | env steps {int(row['env_steps']):,} | "
          f"sps {g('sps', '{:,.0f}')} | critic {g('critic_loss')} acc {g('critic_accuracy', '{:.2f}')}"
          f" | actor {g('actor_loss')} | alpha {g('alpha', '{:.4f}')} | eval success "
          f"{g('eval/success', '{:.2f}')} time@goal {g('eval/time_at_goal', '{:.1f}')} dist "
          f"{g('eval/final_dist')}{_terminated(row)} | {g('wall_s', '{:.0f}')}s")


def _terminated(row: Dict[str, float]) -> str:
  """`` ended early 0.42`` when the env ended some evaluation episodes before the time limit
  (e.g. the ant's torso left its healthy height range), else nothing."""
  v = row.get("eval/terminated")
  return f" ended early {v:.2f}" if isinstance(v, (int, float)) and v > 0 else ""
