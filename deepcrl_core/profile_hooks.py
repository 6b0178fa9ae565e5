"""Profiling hooks of a training run, measured on the side so the run itself is unchanged.

The hot path is one jitted epoch (unroll and SGD fused in a ``lax.scan``), which cannot be
timed piecewise from Python. These hooks compile two more functions next to it and call them
on the current run state without donating it, discarding their results (the run stays
bit-identical; the cost is their compile time, two extra training steps of compute per use and,
while they run, a second copy of the run state's replay buffer):

* ``collect``: one unroll of ``train.unroll_length`` env steps with the stochastic actor;
* ``update``: ``train.sgd_steps`` gradient steps with replay sampling (``TrainFns.update``);
* ``train_step``: one whole training step (collect + replay insert + update), exactly the
  epoch's scan body (for the trace window).

``profile.timing_split_every = N`` (> 0) times collect and update (best of 2 synchronised calls
each) on the first epoch and every N-th, and writes ``time/collect_s`` and ``time/update_s``
(each x ``train_steps_per_epoch``, i.e. per epoch) to that epoch's row of metrics.csv, next to
the fused epoch's ``time/epoch_s`` and ``time/eval_s``; ``time/epoch_s`` minus their sum is
the replay insert plus what fusing saves or costs. ``profile.trace_steps = K`` (> 0) captures a ``jax.profiler`` trace of K
such training steps (instead of the whole epoch) at epoch ``profile.trace_epoch`` into
``WORKDIR/profile`` (TensorBoard's profile plugin, or ``perfetto_trace.json.gz`` in
ui.perfetto.dev).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict

import jax

from deepcrl_core import agents as agents_lib


class SideProfiler:
  """Separately jitted collect and training step of ``c``, compiled on first use.

  ``make_train_fns(c) -> TrainFns`` is :func:`deepcrl_core.train.make_train_fns` (passed in,
  since train imports this module)."""

  def __init__(self, c, make_train_fns: Callable):
    self.c = c
    t = c.config.train
    self._collect = jax.jit(lambda run: agents_lib.collect(
        c.agent, c.train_env, c.agent.policy_params(run.training), run.env_state,
        run.training.key,
        t.unroll_length))
    fns = make_train_fns(c)
    self._train_step = jax.jit(fns.train_step)
    self._update = jax.jit(lambda run: fns.update(run.training, run.replay, run.training.key))
    self._compiled: Dict[str, Callable] = {}

  def _get(self, name: str, run):
    if name not in self._compiled:
      fn = {"collect": self._collect, "update": self._update, "train_step": self._train_step}[name]
      self._compiled[name] = fn.lower(run).compile()
    return self._compiled[name]

  def timing_split(self, run, repeats: int = 2) -> Dict[str, float]:
    """``{"time/collect_s", "time/update_s"}`` per epoch: the best of ``repeats`` synchronised
    calls of each piece, times ``train.train_steps_per_epoch``."""
    n = self.c.config.train.train_steps_per_epoch
    jax.block_until_ready(run)
    out = {}
    for name in ("collect", "update"):
      fn = self._get(name, run)
      best = float("inf")
      for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(run))
        best = min(best, time.perf_counter() - t0)
      out[f"time/{name}_s"] = n * best
    return out

  def trace(self, run, num_steps: int, logdir: str) -> None:
    """Traces ``num_steps`` chained training steps starting from ``run`` (results discarded)."""
    step = self._get("train_step", run)
    jax.block_until_ready(step(run))  # warm up outside the trace
    os.makedirs(logdir, exist_ok=True)
    _start_trace(logdir)
    try:
      state = run
      for i in range(num_steps):
        with jax.profiler.StepTraceAnnotation("train_step", step_num=i):
          state, _ = step(state)
          jax.block_until_ready(state)
    finally:
      jax.profiler.stop_trace()


def _start_trace(logdir: str) -> None:
  try:
    jax.profiler.start_trace(logdir, create_perfetto_trace=True)
  except TypeError:  # older/newer signature without the Perfetto option
    jax.profiler.start_trace(logdir)
