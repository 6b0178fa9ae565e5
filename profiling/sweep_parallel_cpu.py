"""Training throughput of a CPU sweep: one run at a time, or two side by side, pinned or not.

Runs ``launch/sweep.py`` once per mode on the same config and wall-clock budget, each mode in
its own directory under ``--workdir``:

* ``single``: one run (seed 0) with every CPU;
* ``pinned``: two runs (seeds 0, 1) at once, ``--parallel=2``, each on its own half of the
  CPUs (what ``--parallel=2`` does on a CPU unless ``--nopin_cpus``);
* ``unpinned``: the same two runs with ``--nopin_cpus``: both may use every CPU.

For each run it reads ``metrics.csv`` and measures env steps per second of wall-clock from the
end of its first epoch to the end of its last (training, evaluation and logging included; the
build and the first compile excluded), then prints per mode the throughput of each run, their
sum, and the sum's ratio to ``single``. Modes run one after another, so nothing else should run
on the machine meanwhile.

  python profiling/sweep_parallel_cpu.py --budget_s=300 --workdir=/tmp/sweep_parallel
  python profiling/sweep_parallel_cpu.py --config=configs/pointmass.py --budget_s=120

Bad flags exit with status 2 before anything runs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
from typing import Dict, List, Sequence

from deepcrl_core import sweep  # starts no JAX backend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "launch", "sweep.py")
MODES = ("single", "pinned", "unpinned")
# The CPU-sized ant_hardest_maze runs of profiling/RESULTS.md.
DEFAULT_CONFIG = ("configs/ant_hardest_maze.py:num_envs=64,batch=256,train.sgd_steps=100,"
                  "train.train_steps_per_epoch=10,eval.num_envs=64,env.reset_mode=fresh,"
                  "train.total_env_steps=20000000")


def mode_args(mode: str) -> List[str]:
  if mode == "single":
    return ["--seed_list=0"]
  args = ["--seed_list=0,1", "--parallel=2"]
  return args + (["--nopin_cpus"] if mode == "unpinned" else [])


def steady_throughput(metrics_csv: str) -> Dict[str, float]:
  """Env steps per second from the end of epoch 1 to the last row; raises ValueError when the
  run logged fewer than two epochs (the budget was too short)."""
  rows = sweep.read_rows(metrics_csv)
  if len(rows) < 2:
    raise ValueError(f"{metrics_csv}: {len(rows)} epoch(s) logged; need >= 2 (raise --budget_s)")
  first, last = rows[0], rows[-1]
  steps = float(last["env_steps"]) - float(first["env_steps"])
  seconds = float(last["wall_s"]) - float(first["wall_s"])
  return {"epochs": len(rows), "env_steps": float(last["env_steps"]),
          "sps": steps / seconds}


def run_mode(mode: str, config: str, budget_s: float, workdir: str) -> List[Dict[str, float]]:
  out = os.path.join(workdir, mode)
  shutil.rmtree(out, ignore_errors=True)
  cmd = [sys.executable, SWEEP, f"--config={config}", f"--budget_s={budget_s:g}",
         f"--workdir={out}", "--devices=none", "--nofigures"] + mode_args(mode)
  print(f"[{mode}] {' '.join(cmd[1:])}", flush=True)
  subprocess.run(cmd, check=True, cwd=ROOT)
  _, runs = sweep.load_plan(out)
  return [dict(steady_throughput(os.path.join(r.workdir, "metrics.csv")), run=r.label)
          for r in runs]


def parse(argv: Sequence[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=DEFAULT_CONFIG, help="config spec, as launch/sweep.py's")
  p.add_argument("--budget_s", type=float, default=300.0, help="each run's wall-clock budget")
  p.add_argument("--workdir", default="/tmp/sweep_parallel_cpu", help="sweep directories")
  p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
  args = p.parse_args(argv)
  modes = [m for m in args.modes.split(",") if m]
  bad = [m for m in modes if m not in MODES]
  if bad or not modes:
    p.error(f"--modes: unknown {bad or 'none given'}; choose from {', '.join(MODES)}")
  if args.budget_s <= 0:
    p.error(f"--budget_s must be > 0, got {args.budget_s:g}")
  config_file = args.config.partition(":")[0]
  if not os.path.isfile(os.path.join(ROOT, config_file)) and not os.path.isfile(config_file):
    p.error(f"--config: no such file {config_file!r}")
  args.modes = modes
  return args


def main(argv: Sequence[str]) -> int:
  args = parse(argv)
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  results = {m: run_mode(m, args.config, args.budget_s, args.workdir) for m in args.modes}
  print(f"\n{platform.processor() or platform.machine()}, {cpus} CPUs, python "
        f"{platform.python_version()}, {datetime.date.today().isoformat()}; budget "
        f"{args.budget_s:g} s per run; {args.config}\n")
  print("| mode | runs | epochs per run | env steps/s per run | sum | sum / single |")
  print("|---|---|---|---|---|---|")
  base = sum(r["sps"] for r in results["single"]) if "single" in results else None
  for mode, runs in results.items():
    total = sum(r["sps"] for r in runs)
    ratio = f"{total / base:.2f}" if base else "-"
    epochs = ", ".join(str(int(r["epochs"])) for r in runs)
    each = ", ".join(f"{r['sps']:,.0f}" for r in runs)
    print(f"| {mode} | {len(runs)} | {epochs} | {each} | {total:,.0f} | {ratio} |")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
