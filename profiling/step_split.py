"""Where a deep gradient step's time goes: gradients versus the optimiser update, by depth.

For each (depth, batch) this builds the config's agent (CRL by default) and, in **one
process**, compiles three functions on the same state and minibatch:

* ``step``: the agent's whole ``sgd_step`` (gradients, then the Adam updates), donated state;
* ``grads``: the same losses' gradients only (actor, alpha, critic; what ``step`` computes
  before its updates);
* ``update``: the three Adam updates and ``apply_updates`` alone, given gradients of the right
  shapes (memory-bound: per parameter it reads the parameter, its gradient and two moments and
  writes three arrays).

They are timed interleaved (round-robin, ``--rounds`` rounds of ``--calls`` calls each), so a
change in machine load hits every variant alike; the table gives the minimum per call (median
in brackets). ``--unroll=N`` compiles the timed functions with N residual blocks per scan
iteration (FLOPs are counted fully unrolled either way). FLOPs are XLA's cost analysis of each
lowered function with the residual trunks' scans unrolled (every block counted), so GFLOP/s of ``grads`` is the gradient computation's own
rate; ``update`` is reported in ms and as the bytes it must move per call (a count, 28 bytes per
parameter in float32) over its time.

  python profiling/step_split.py --config=configs/ant.py --depths=4,16,64 --batches=256,512

Writes ``--out/step_split.csv`` and ``--out/step_split.md``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app
from absl import flags

import deepcrl_core  # noqa: F401  (configure_cpu_xla_flags below, before jax starts)

deepcrl_core.configure_cpu_xla_flags()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from deepcrl_core import config as config_lib  # noqa: E402
from deepcrl_kernels import residual_stack_xla  # noqa: E402
import profiling_common as pc  # noqa: E402
import step_time_measure as stm  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags():
  """Flags only when run as a script: importing this module (the tests do) defines none, so it
  never collides with another profiling script's flags in one process."""
  flags.DEFINE_string("config", "configs/ant.py", "Task config (file.py[:k=v,...]).")
  flags.DEFINE_string("depths", "4,16,64", "Depths (Dense layers per trunk).")
  flags.DEFINE_string("batches", "256,512", "Batch sizes.")
  flags.DEFINE_integer("width", 256, "Network width.")
  flags.DEFINE_integer("unroll", 1, "Residual blocks per scan iteration on the XLA path "
                       "(residual_stack_xla.scan_unroll) for the timed functions.")
  flags.DEFINE_integer("rounds", 6, "Interleaved rounds.")
  flags.DEFINE_integer("calls", 5, "Timed calls per variant per round.")
  flags.DEFINE_string("out", "step_split_out", "Output directory.")


COLUMNS = ("batch", "depth", "params", "step_ms", "step_ms_median", "step_gflop",
           "step_gflops", "grads_ms", "grads_ms_median", "grads_gflop", "grads_gflops",
           "update_ms", "update_ms_median", "update_mb", "update_gbps", "update_share")


def _crl_grads(agent):
  """The gradients ``agent.sgd_step`` computes before its updates (``CRLAgent.gradients``)."""
  return lambda ts, batch: agent.gradients(ts, batch)[0]


def _crl_update(agent):
  """The Adam updates of ``agent.sgd_step`` alone, on given gradients
  (``CRLAgent.apply_gradients``; the state's key is kept)."""
  return lambda ts, grads: agent.apply_gradients(ts, grads, ts.key)


def _flops(fn, *args) -> float:
  # A fresh function object: jit's trace cache is keyed on the function, and the unrolled
  # count needs a trace made inside scan_unroll.
  with residual_stack_xla.scan_unroll(True):
    return stm.cost_flops(jax.jit(lambda *a: fn(*a)).lower(*args))


def measure(config, batch: int, depth: int, rounds: int, calls: int, unroll: int = 1,
            width: int = 256) -> dict:
  config = config_lib.apply_overrides(
      ml_collections.ConfigDict(config.to_dict()),
      f"network.actor_depth={depth},network.critic_depth={depth},network.width={width},"
      f"train.batch_size={batch},network.kernel_impl=xla")
  if config.agent != "crl":
    raise ValueError(f"step_split splits CRL's step; got agent={config.agent!r}")
  sizes = stm.network_sizes(config.env.name)
  agent = stm.make_agent(config, sizes)
  ts = agent.init(jax.random.PRNGKey(0))
  b = stm.random_batch(jax.random.PRNGKey(1), batch, sizes, agent, config)
  grads_fn, update_fn = _crl_grads(agent), _crl_update(agent)
  g0 = jax.jit(grads_fn)(ts, b)

  with residual_stack_xla.scan_unroll(unroll):
    step = jax.jit(agent.sgd_step, donate_argnums=0).lower(ts, b).compile()
    grads = jax.jit(lambda *a: grads_fn(*a)).lower(ts, b).compile()
    update = jax.jit(update_fn, donate_argnums=0).lower(ts, g0).compile()
  flops = {"step": _flops(agent.sgd_step, ts, b), "grads": _flops(grads_fn, ts, b)}

  holder = {"step": jax.tree.map(jnp.copy, ts), "update": jax.tree.map(jnp.copy, ts)}

  def call(name):
    if name == "step":
      holder["step"], m = step(holder["step"], b)
      return m
    if name == "update":
      holder["update"] = update(holder["update"], g0)
      return holder["update"].log_alpha
    return grads(ts, b)

  samples = {k: [] for k in ("step", "grads", "update")}
  for name in samples:  # warm-up
    jax.block_until_ready(call(name))
  for _ in range(rounds):
    for name in samples:
      for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(call(name))
        samples[name].append(time.perf_counter() - t0)

  params = sum(agent.param_counts(ts).values())
  row = {"batch": batch, "depth": depth, "params": params}
  for name in samples:
    best, med = min(samples[name]), statistics.median(samples[name])
    row[f"{name}_ms"], row[f"{name}_ms_median"] = round(1e3 * best, 2), round(1e3 * med, 2)
    if name in flops:
      row[f"{name}_gflop"] = round(flops[name] / 1e9, 3)
      row[f"{name}_gflops"] = round(flops[name] / best / 1e9, 1)
  update_bytes = 28 * params  # read param, grad, mu, nu; write param, mu, nu (float32)
  row["update_mb"] = round(update_bytes / 2**20, 1)
  row["update_gbps"] = round(update_bytes / (row["update_ms"] / 1e3) / 1e9, 1)
  row["update_share"] = round(row["update_ms"] / row["step_ms"], 3)
  return row


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  config = config_lib.load_config_file(FLAGS.config)
  rows = []
  for batch in [int(x) for x in FLAGS.batches.split(",")]:
    for depth in [int(x) for x in FLAGS.depths.split(",")]:
      row = measure(config, batch, depth, FLAGS.rounds, FLAGS.calls, FLAGS.unroll, FLAGS.width)
      rows.append(row)
      print(row, flush=True)
  pc.write_csv(os.path.join(FLAGS.out, "step_split.csv"), rows, COLUMNS)
  base = {r["batch"]: r for r in rows if r["depth"] == min(x["depth"] for x in rows)}
  table = pc.markdown_table(
      ["batch", "depth", "params", "step: ms (median), GFLOP/s, vs shallowest",
       "grads: ms (median), GFLOP/s, vs shallowest", "update: ms (median), GB/s, share of step"],
      [[r["batch"], r["depth"], f"{r['params'] / 1e6:.2f}M",
        f"{r['step_ms']} ({r['step_ms_median']}), {r['step_gflops']}, "
        f"{r['step_gflops'] / base[r['batch']]['step_gflops']:.0%}",
        f"{r['grads_ms']} ({r['grads_ms_median']}), {r['grads_gflops']}, "
        f"{r['grads_gflops'] / base[r['batch']]['grads_gflops']:.0%}",
        f"{r['update_ms']} ({r['update_ms_median']}), {r['update_gbps']}, "
        f"{r['update_share']:.0%}"] for r in rows])
  text = (pc.device_header(with_mujoco=False) + "\n\n"
          + f"command: python {' '.join(sys.argv)}\n\n" + table + "\n")
  with open(os.path.join(FLAGS.out, "step_split.md"), "w") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
