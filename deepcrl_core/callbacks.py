"""What a training run does with its results, as a list of callbacks.

:func:`deepcrl_core.train.train` is restore-or-init, an evaluator and a loop; everything that
writes, prints, guards or profiles is a :class:`Callback` here, called in list order with the
run's :class:`RunContext` and each epoch's metrics row:

* ``on_train_start(ctx)`` once, after compilation;
* ``on_epoch_start(ctx, epoch) -> dict`` before each epoch; returned entries join its row
  (e.g. the side profiler's ``time/collect_s``);
* ``on_epoch_end(ctx, row)`` after each epoch, with ``ctx.run`` the new run state and
  ``ctx.stopping`` true on the last epoch of this call;
* ``on_train_end(ctx, rows)`` once, also when the run stops on an error (``ctx.error``).

:func:`default_callbacks` is the standard set, in the order that matters: the NaN guard runs
before the checkpoint (a diverged state is never saved), the checkpoint before the metrics row
(a row is never ahead of the newest checkpoint by more than the epochs since it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax

from deepcrl_core import checkpoint as ckpt
from deepcrl_core import config as config_lib
from deepcrl_core import distributed
from deepcrl_core import logging as log_lib

LOSS_KEYS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "logsumexp")


class TrainingDiverged(RuntimeError):
  """A loss became NaN/inf; the run stopped keeping its last good checkpoint."""


@dataclasses.dataclass
class RunContext:
  """What callbacks may read about the running training call (the loop owns it)."""
  config: Any
  workdir: str
  components: Any                 # deepcrl_core.train.Components
  num_epochs: int
  start_epoch: int
  main_process: bool
  log_fn: Callable[[str], None]
  run: Any = None                 # RunState after the latest epoch
  epoch: int = 0
  stopping: bool = False
  error: Optional[BaseException] = None


class Callback:
  """Base class: every hook is optional."""

  def on_train_start(self, ctx: RunContext) -> None:
    pass

  def on_epoch_start(self, ctx: RunContext, epoch: int) -> Optional[Dict[str, float]]:
    return None

  def on_epoch_end(self, ctx: RunContext, row: Dict[str, float]) -> None:
    pass

  def on_train_end(self, ctx: RunContext, rows: List[Dict[str, float]]) -> None:
    pass


class CSVLogger(Callback):
  """``metrics.csv``: one row per epoch; on resume, rows after the restored epoch are dropped
  (a crash after a row was written but before its checkpoint leaves such rows)."""

  def __init__(self, path: str):
    self.writer = log_lib.MetricsCSV(path)

  def on_train_start(self, ctx):
    if ctx.main_process and ctx.start_epoch >= 0:
      self.writer.truncate_after(ctx.start_epoch)

  def on_epoch_end(self, ctx, row):
    if ctx.main_process:
      self.writer.write(row)


class TensorBoardLogger(Callback):
  def __init__(self, logdir: str):
    self.logdir = logdir
    self.writer = None

  def on_train_start(self, ctx):
    if ctx.main_process:
      self.writer = log_lib.TensorBoard(self.logdir)

  def on_epoch_end(self, ctx, row):
    if self.writer is not None:
      self.writer.write(int(row["env_steps"]), row)

  def on_train_end(self, ctx, rows):
    if self.writer is not None:
      self.writer.close()
      self.writer = None


class ConsoleLogger(Callback):
  """The per-epoch progress line, every ``print_every`` epochs and on the last one."""

  def __init__(self, print_every: int = 1):
    self.print_every = max(1, print_every)

  def on_epoch_end(self, ctx, row):
    if row["epoch"] % self.print_every == 0 or ctx.stopping:
      ctx.log_fn(log_lib.format_progress(row, ctx.num_epochs))


class NaNGuard(Callback):
  """Stops the run on a non-finite loss, before the state is checkpointed; the offending row
  still reaches ``record`` (the CSV logger) so the divergence is visible in metrics.csv."""

  def __init__(self, keys=LOSS_KEYS, record: Optional[CSVLogger] = None):
    self.keys = keys
    self.record = record

  def on_epoch_end(self, ctx, row):
    bad = [k for k in self.keys if k in row and not math.isfinite(row[k])]
    if not bad:
      return
    if self.record is not None:
      self.record.on_epoch_end(ctx, row)
    ckpt_dir = os.path.join(ctx.workdir, "checkpoints")
    good = ckpt.latest_complete_step(ckpt_dir)
    where = (f"last good checkpoint: {ckpt.step_dir(ckpt_dir, good)}" if good is not None
             else "no checkpoint was written before this")
    raise TrainingDiverged(
        f"non-finite {', '.join(bad)} at epoch {row['epoch']} (env step "
        f"{int(row['env_steps']):,}); stopped without checkpointing this state; {where}")


class CheckpointPolicy(Callback):
  """Checkpoints every ``every`` epochs (0: only when stopping) and when the call stops.

  The replay buffer is written as per-process shards on a background thread
  (:class:`deepcrl_core.checkpoint.RunCheckpointer`); the next save, and the end of training,
  wait for the previous one. ``row['time/ckpt_block_s']`` is how long the loop was held up.
  """

  def __init__(self, directory: str, *, every: int, keep: int, include_replay: bool,
               asynchronous: bool = True):
    self.every = every
    self.include_replay = include_replay
    self.checkpointer = ckpt.RunCheckpointer(directory, keep=keep, asynchronous=asynchronous)

  def on_epoch_end(self, ctx, row):
    epoch = row["epoch"]
    if not ((self.every and epoch % self.every == 0) or ctx.stopping):
      return
    t0 = time.perf_counter()
    run = ctx.run
    # The replay's [time, env, ...] arrays are written per process; its counters with the state
    # (the layout deepcrl_core.train.checkpoint_templates restores).
    replay_arrays, replay_pos = ckpt.split_sharded(run.replay)
    state = {"training": run.training, "env_state": run.env_state, "replay_pos": replay_pos}
    if not self.include_replay:
      replay_arrays = None
    self.checkpointer.save(
        epoch, state, replay_arrays,
        {"epoch": epoch, "env_steps": row["env_steps"],
         "config": config_lib.resolved_dict(ctx.config)},
        gather=distributed.to_host)
    row["time/ckpt_block_s"] = time.perf_counter() - t0

  def on_train_end(self, ctx, rows):
    self.checkpointer.wait()


class SideProfiling(Callback):
  """``profile.timing_split_every`` and ``profile.trace_steps`` (see profile_hooks.py)."""

  def __init__(self, profiler, *, timing_split_every: int, trace_steps: int, trace_epoch: int,
               logdir: str):
    self.profiler = profiler
    self.every = timing_split_every
    self.trace_steps = trace_steps
    self.trace_epoch = trace_epoch
    self.logdir = logdir

  def on_epoch_start(self, ctx, epoch):
    # trace_epoch <= 0: the first epoch of this call.
    target = self.trace_epoch if self.trace_epoch > 0 else ctx.start_epoch + 1
    if self.trace_steps > 0 and epoch == target:
      self.profiler.trace(ctx.run, self.trace_steps, self.logdir)
    if self.every > 0 and (epoch - ctx.start_epoch - 1) % self.every == 0:
      return self.profiler.timing_split(ctx.run)
    return None


class EpochTrace(Callback):
  """``profile.trace_epoch``: a ``jax.profiler`` trace of that whole epoch."""

  def __init__(self, epoch: int, logdir: str):
    self.epoch = epoch
    self.logdir = logdir
    self.active = False

  def on_epoch_start(self, ctx, epoch):
    if epoch == self.epoch:
      jax.profiler.start_trace(self.logdir)
      self.active = True

  def on_epoch_end(self, ctx, row):
    if self.active:
      jax.profiler.stop_trace()
      self.active = False

  def on_train_end(self, ctx, rows):
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
