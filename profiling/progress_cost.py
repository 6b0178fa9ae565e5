"""What in-epoch progress costs: an epoch in one compiled call vs one call per training step.

    python profiling/progress_cost.py --config=configs/pointmass.py --repeats=7

With ``log.progress_every_s > 0`` training dispatches each epoch as ``train_steps_per_epoch``
asynchronous calls of a one-training-step function and prints progress between them
(``deepcrl_core.train.run_epoch``); with 0, one call runs the whole epoch. Both are compiled
from the same config and run alternately on copies of the same run state, so machine load hits
both alike; the reported wall-clock and CPU time (all threads: robust to other processes on a
shared machine) of each is the minimum over ``--repeats`` epochs, and the cost is
``per_step / one_call - 1``. ``--callback`` also measures the alternative this replaced: a
``jax.debug.callback`` inside the compiled epoch's gradient-step loop (``lax.cond`` on the step
counter), ticking ``--ticks`` times an epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import deepcrl_core

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends

from deepcrl_core import config as config_lib  # noqa: E402
from deepcrl_core import progress as progress_lib  # noqa: E402
from deepcrl_core import train as train_lib  # noqa: E402
from profiling_common import machine_facts  # noqa: E402  (this folder)


def _with_callback_epoch(c, ticks: int):
  """The whole epoch in one call with a host callback every ``gpe // ticks`` gradient steps."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  t = c.config.train
  every = max(1, t.train_steps_per_epoch * t.sgd_steps // ticks)
  inner = c.agent.sgd_step

  def sgd_step(ts, batch):
    ts, metrics = inner(ts, batch)
    jax.lax.cond(ts.grad_steps % every == 0,
                 lambda g: jax.debug.callback(lambda v: None, g), lambda g: None, ts.grad_steps)
    return ts, metrics

  class Ticking:  # the agent with a ticking sgd_step, everything else shared
    def __getattr__(self, name):
      return getattr(c.agent, name)
  agent = Ticking()
  agent.sgd_step = sgd_step
  return train_lib.make_epoch_fn(dataclasses.replace(c, agent=agent))


def measure(config, repeats: int, callback_ticks: int = 0) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  c = train_lib.build(config)
  t = config.train
  n = t.train_steps_per_epoch
  progress = progress_lib.Progress(
      lambda s: None, num_epochs=10 ** 6, grad_steps_per_epoch=n * t.sgd_steps,
      sgd_steps_per_train_step=t.sgd_steps, env_steps_per_train_step=t.unroll_length * t.num_envs,
      interval_s=30.0)
  fresh = lambda: train_lib.prefill(c, train_lib.init_run_state(c, config.seed))
  fns = {"one_call": train_lib.make_epoch_fn(c), "per_step": train_lib.make_epoch_fn(c, steps=1)}
  if callback_ticks:
    fns["callback"] = _with_callback_epoch(c, callback_ticks)
  runs, compiled = {}, {}
  for name, fn in fns.items():
    runs[name] = fresh()
    compiled[name] = fn.lower(runs[name]).compile()

  def one_epoch(name):
    if name == "per_step":
      progress.start_epoch(1, 0)
      out = train_lib.run_epoch(compiled[name], runs[name], n,
                                on_step=lambda k: progress.tick(k * t.sgd_steps))
      progress.end_epoch()
      return out
    return train_lib.run_epoch(compiled[name], runs[name])

  for name in fns:  # warm-up epoch each
    runs[name], _ = one_epoch(name)
  wall = {k: float("inf") for k in fns}
  cpu = {k: float("inf") for k in fns}
  order = list(fns)
  for i in range(repeats):
    for name in (order if i % 2 == 0 else order[::-1]):
      t0, c0 = time.perf_counter(), time.process_time()
      runs[name], _ = one_epoch(name)
      jax.block_until_ready(runs[name])
      wall[name] = min(wall[name], time.perf_counter() - t0)
      cpu[name] = min(cpu[name], time.process_time() - c0)
  out = {"env": config.env.name, "train_steps_per_epoch": n,
         "grad_steps_per_epoch": n * t.sgd_steps}
  for name in fns:
    out[f"wall_s_{name}"] = wall[name]
    out[f"cpu_s_{name}"] = cpu[name]
    if name != "one_call":
      out[f"wall_cost_pct_{name}"] = 100.0 * (wall[name] / wall["one_call"] - 1.0)
      out[f"cpu_cost_pct_{name}"] = 100.0 * (cpu[name] / cpu["one_call"] - 1.0)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "pointmass.py"))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--callback", action="store_true",
                      help="also measure a host callback inside the compiled epoch")
  parser.add_argument("--ticks", type=int, default=4, help="callback ticks per epoch")
  args = parser.parse_args()
  config = config_lib.load_config_file(args.config)
  out = measure(config, args.repeats, args.ticks if args.callback else 0)
  out.update(machine_facts(), config=args.config)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  main()
