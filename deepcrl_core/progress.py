"""Progress lines from inside a running epoch.

At the paper's sizes an epoch (63 training steps of 800 gradient steps) runs for tens of minutes
to hours on one GPU. With ``log.progress_every_s > 0`` the training loop therefore dispatches
an epoch as one compiled call per training step -- asynchronously, so the next step is queued
before the previous one is waited for and the device never idles -- and after each step calls
:meth:`Progress.tick` with the global gradient step count; a line is printed when at least
``interval_s`` seconds have passed since the last one:

    epoch 3/50 | 21,600/50,400 grad steps | env steps 1,361,920 | 812 grad steps/s | ETA epoch 35s, run 41m02s

The rate is measured within the running epoch; the run's ETA adds the remaining epochs at that
rate plus their evaluations at the last evaluation's duration. The alternative, a host
callback inside the compiled epoch's gradient-step loop, reports at finer grain but needs its
tick spacing fixed at compile time, before the step time is known, and adds a side effect to
the hot loop; on the quick start both measured within noise of one call per epoch
(``profiling/progress_cost.py --callback``; numbers in profiling/RESULTS.md).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional


def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f"{h}h{m:02d}m"
  if m:
    return f"{m}m{s:02d}s"
  return f"{s}s"


class Progress:
  """Host side of the in-epoch progress line. Not traced: the jitted epoch calls :meth:`tick`."""

  def __init__(self, log_fn: Callable[[str], None], *, num_epochs: int,
               grad_steps_per_epoch: int, sgd_steps_per_train_step: int,
               env_steps_per_train_step: int, prefill_env_steps: int = 0, interval_s: float = 30.0,
               clock: Callable[[], float] = time.monotonic):
    self.log_fn = log_fn
    self.num_epochs = num_epochs
    self.grad_steps_per_epoch = grad_steps_per_epoch
    self.sgd_steps = sgd_steps_per_train_step
    self.env_steps_per_train_step = env_steps_per_train_step
    self.prefill_env_steps = prefill_env_steps
    self.interval_s = interval_s
    self.clock = clock
    self.eval_s = 0.0            # duration of the last evaluation (ETA of the run)
    self.evals_left = 0          # evaluations still to come after the running epoch
    self._epoch: Optional[int] = None

  def start_epoch(self, epoch: int, grad_steps: int, evals_left: int = 0) -> None:
    self._epoch, self._epoch_start_steps = epoch, int(grad_steps)
    self._epoch_start_t = self._last_print_t = self.clock()
    self._last_step = int(grad_steps)
    self.evals_left = evals_left

  def end_epoch(self) -> None:
    self._epoch = None

  def tick(self, grad_steps) -> None:
    """Called by the training loop after each training step with the global gradient step
    count; prints a line when ``interval_s`` has passed since the last one."""
    step = int(grad_steps)
    if self._epoch is None or step <= self._last_step:
      return
    self._last_step = step
    now = self.clock()
    if now - self._last_print_t < self.interval_s:
      return
    self._last_print_t = now
    self.log_fn(self._line(step, now))

  def _line(self, step: int, now: float) -> str:
    epoch = self._epoch
    done_in_epoch = step - self._epoch_start_steps
    elapsed = now - self._epoch_start_t
    rate = done_in_epoch / elapsed if elapsed > 0 else float("nan")
    in_epoch = step - (epoch - 1) * self.grad_steps_per_epoch
    left_epoch = max(self.grad_steps_per_epoch - in_epoch, 0)
    left_run = left_epoch + (self.num_epochs - epoch) * self.grad_steps_per_epoch
    eta_epoch = left_epoch / rate if rate > 0 else float("nan")
    eta_run = left_run / rate + self.evals_left * self.eval_s if rate > 0 else float("nan")
    # Each training step unrolls (env steps) before its gradient steps.
    env_steps = self.prefill_env_steps + (
        -(-step // self.sgd_steps) * self.env_steps_per_train_step)
    return (f"epoch {epoch}/{self.num_epochs} | {in_epoch:,}/{self.grad_steps_per_epoch:,} "
            f"grad steps | env steps {env_steps:,} | {rate:,.1f} grad steps/s | ETA epoch "
            f"{format_duration(eta_epoch)}, run {format_duration(eta_run)}")


__all__ = ["Progress", "format_duration"]
