"""Whole training step per task with XLA CPU's fusion emitters off and on (one process each).

For each task, one child process builds the task's run at a reduced CPU shape with the paper's
ratio of env steps to gradient steps (``--num_envs`` x ``--unroll_length`` env steps and
``--sgd_steps`` gradient steps per training step; defaults 32 x 10 and 8, about 40 env steps per
gradient step as 512 x 62 / 800), prefills the replay buffer, compiles one training step
(``train.make_epoch_fn(steps=1)``: unroll + replay insert + sampling + SGD) twice, with
``compiler_options={"xla_cpu_use_fusion_emitters": False}`` and ``True``, and times the two
interleaved (``--rounds`` rounds; minimum and median). A compile that exceeds
``--compile_timeout_s`` (the arm's MJX model compiles pathologically with the emitters on) is
recorded as such. This is the measurement behind ``deepcrl_core._xla_flags.EMITTERS_ON_TASKS``.

  python profiling/emitters_ab.py --tasks=ant_u5_maze,ant_big_maze --out=DIR

Writes ``DIR/emitters_ab.csv`` and ``DIR/emitters_ab.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COLUMNS = ("task", "shape", "off_ms", "off_ms_median", "off_compile_s", "on_ms", "on_ms_median",
           "on_compile_s", "on_vs_off", "status")
OPTION = "xla_cpu_use_fusion_emitters"


def measure_task(task: str, num_envs: int, unroll_length: int, sgd_steps: int, depth: int,
                 rounds: int, timeout_s: float) -> dict:
  """Runs in the child: both compiles and the interleaved timing of one task."""
  import signal  # pylint: disable=g-import-not-at-top
  import deepcrl_core  # pylint: disable=g-import-not-at-top
  deepcrl_core.configure_cpu_xla_flags()
  import jax  # pylint: disable=g-import-not-at-top
  from deepcrl_core import config as config_lib  # pylint: disable=g-import-not-at-top
  from deepcrl_core import train  # pylint: disable=g-import-not-at-top

  config = config_lib.load_config_file(
      f"configs/{task}.py:train.num_envs={num_envs},train.unroll_length={unroll_length},"
      f"train.sgd_steps={sgd_steps},network.actor_depth={depth},network.critic_depth={depth},"
      f"replay.sampling=transitions,replay.window_length={unroll_length},"
      f"train.prefill_steps={2 * unroll_length},log.progress_every_s=0")
  c = train.build(config)
  runs = {}
  base = train.prefill(c, train.init_run_state(c, 0))
  fn = train.make_epoch_fn(c, steps=1)
  row = {"task": task, "shape": f"{num_envs} x {unroll_length}, {sgd_steps} SGD",
         "status": "ok"}
  compiled = {}

  def on_alarm(signum, frame):
    raise TimeoutError

  signal.signal(signal.SIGALRM, on_alarm)
  for name, value in (("off", False), ("on", True)):
    t0 = time.perf_counter()
    signal.alarm(int(timeout_s))
    try:
      compiled[name] = fn.lower(base).compile(compiler_options={OPTION: value})
    except TimeoutError:
      row["status"] = f"{name}: compile > {timeout_s:.0f} s"
      return row
    finally:
      signal.alarm(0)
    row[f"{name}_compile_s"] = round(time.perf_counter() - t0, 1)
    runs[name] = jax.tree.map(jax.numpy.copy, base)
  samples = {"off": [], "on": []}
  for name in samples:  # warm-up
    runs[name], m = compiled[name](runs[name])
    jax.block_until_ready(m)
  for _ in range(rounds):
    for name in samples:
      t0 = time.perf_counter()
      runs[name], m = compiled[name](runs[name])
      jax.block_until_ready(m)
      samples[name].append(time.perf_counter() - t0)
  for name, s in samples.items():
    row[f"{name}_ms"] = round(1e3 * min(s), 1)
    row[f"{name}_ms_median"] = round(1e3 * statistics.median(s), 1)
  row["on_vs_off"] = f"{row['on_ms'] / row['off_ms'] - 1:+.0%}"
  return row


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--tasks", required=True, help="comma-separated config names (configs/X.py)")
  ap.add_argument("--num_envs", type=int, default=32)
  ap.add_argument("--unroll_length", type=int, default=10)
  ap.add_argument("--sgd_steps", type=int, default=8)
  ap.add_argument("--depth", type=int, default=4)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--compile_timeout_s", type=float, default=300.0)
  ap.add_argument("--out", default="emitters_ab_out")
  ap.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child:
    print("ROW " + json.dumps(measure_task(args.child, args.num_envs, args.unroll_length,
                                           args.sgd_steps, args.depth, args.rounds,
                                           args.compile_timeout_s)), flush=True)
    return 0
  from profiling_common import device_header, markdown_table, write_csv  # pylint: disable=g-import-not-at-top
  os.makedirs(args.out, exist_ok=True)
  rows = []
  for task in args.tasks.split(","):
    if not os.path.isfile(f"configs/{task}.py"):
      ap.error(f"no config configs/{task}.py")
    cmd = [sys.executable, __file__, f"--child={task}", f"--tasks={task}"] + [
        f"--{k}={getattr(args, k)}" for k in ("num_envs", "unroll_length", "sgd_steps", "depth",
                                              "rounds", "compile_timeout_s")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=3 * args.compile_timeout_s + 600)
    found = [l for l in proc.stdout.splitlines() if l.startswith("ROW ")]
    row = json.loads(found[-1][4:]) if found else {
        "task": task, "status": f"failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    rows.append(row)
    print(row, flush=True)
    write_csv(os.path.join(args.out, "emitters_ab.csv"), rows, COLUMNS)
  table = markdown_table(
      ["task", "shape", "emitters off: ms (median), compile s", "on: ms (median), compile s",
       "on vs off", "status"],
      [[r.get("task"), r.get("shape", ""),
        f"{r.get('off_ms', '')} ({r.get('off_ms_median', '')}), {r.get('off_compile_s', '')}",
        f"{r.get('on_ms', '')} ({r.get('on_ms_median', '')}), {r.get('on_compile_s', '')}",
        r.get("on_vs_off", ""), r.get("status", "")] for r in rows])
  with open(os.path.join(args.out, "emitters_ab.md"), "w") as f:
    f.write(f"{device_header()}\n\ncommand: python {' '.join(sys.argv)}\n\n{table}\n")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
