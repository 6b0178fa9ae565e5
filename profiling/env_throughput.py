"""Environment throughput: env-steps/s of every registered paper task under MJX.

Each task is wrapped as for training (episode limit + auto-reset + vmap over ``--num_envs``)
and stepped with uniform random actions inside one jitted ``lax.scan`` of ``--scan_length``
control steps, so the number excludes Python dispatch. The first call (compile) is timed
separately; then ``--repeats`` timed calls are made and the best is reported.

  python profiling/env_throughput.py --num_envs=64
  python profiling/env_throughput.py --num_envs=2048 --tasks=ant,humanoid --out=$OUT/envs.md
  python profiling/env_throughput.py --tasks=ant,humanoid,arm_push_easy --reset_mode=first,fresh

Paper tasks are built as their configs build them (the task catalogue's constructor
arguments: the ant's published links, the humanoid's published observation);
``--env_kwargs=KEY=VALUE,...`` adds or replaces constructor arguments of every task (as
``env.kwargs.KEY``), e.g. ``--tasks=humanoid --env_kwargs=observation=mujoco``.

``--reset_mode`` (comma-separated: ``first``, ``fresh``) picks the auto-reset of
:func:`deepcrl_core.envs.wrap_for_training`; with several, each task is measured in each mode
and the table adds the cost of ``fresh`` relative to ``first`` and the CPU time of the
``env.reset`` alone that ``fresh`` computes for every env on every step.

Prints a markdown table (also written to ``--out`` when given). "CPU us / env-step" is process
CPU time (all threads) per env-step: on a shared machine it is less sensitive to other load
than the wall-clock rate.
"""

from __future__ import annotations

import argparse
import sys
import time

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
import jax
import jax.numpy as jnp

from deepcrl_core import envs
from deepcrl_core import tasks
from deepcrl_core.envs import mjcf
from deepcrl_core import config as config_lib
from profiling_common import (device_header, make_task_env, names_problem,  # noqa: E402
                              task_kwargs)  # (this folder)

DEFAULT_TASKS = tasks.PAPER_TASKS


def measure(name: str, num_envs: int, scan_length: int, repeats: int,
            env_kwargs: dict = None, reset_mode: str = "fresh",
            measure_reset: bool = False) -> dict:
  env = envs.make(name, **(env_kwargs or {}))
  train_env = envs.wrap_for_training(env, env.episode_length, reset_mode=reset_mode)

  def rollout(state, key):
    def body(carry, k):
      action = jax.random.uniform(k, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
      return train_env.step(carry, action), None
    state, _ = jax.lax.scan(body, state, jax.random.split(key, scan_length))
    return state

  reset = jax.jit(train_env.reset)
  rollout = jax.jit(rollout)
  state = reset(jax.random.split(jax.random.PRNGKey(0), num_envs))
  t0 = time.perf_counter()
  state = jax.block_until_ready(rollout(state, jax.random.PRNGKey(1)))
  compile_s = time.perf_counter() - t0
  best = best_cpu = float("inf")
  for r in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    state = jax.block_until_ready(rollout(state, jax.random.PRNGKey(2 + r)))
    best = min(best, time.perf_counter() - t0)
    best_cpu = min(best_cpu, time.process_time() - c0)
  finite = bool(jnp.all(jnp.isfinite(state.obs)))
  reset_cpu = None
  if measure_reset:  # what ``fresh`` adds per env-step: one env.reset per env, measured alone
    def resets(key):
      def body(acc, k):
        s = train_env.reset(jax.random.split(k, num_envs))
        # consume every leaf, so XLA computes all of the state as a fresh-mode step must
        return acc + sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(s)), None
      return jax.lax.scan(body, jnp.zeros(()), jax.random.split(key, scan_length))[0]
    resets = jax.jit(resets)
    jax.block_until_ready(resets(jax.random.PRNGKey(0)))
    reset_cpu = float("inf")
    for r in range(repeats):
      c0 = time.process_time()
      jax.block_until_ready(resets(jax.random.PRNGKey(10 + r)))
      reset_cpu = min(reset_cpu, time.process_time() - c0)
    reset_cpu = 1e6 * reset_cpu / (num_envs * scan_length)
  return {
      "reset_cpu_us": reset_cpu,
      "task": name, "reset_mode": reset_mode, "steps_per_s": num_envs * scan_length / best,
      "cpu_us_per_step": 1e6 * best_cpu / (num_envs * scan_length),
      "compile_s": compile_s, "dt": env.dt, "slots": mjcf.count_contact_slots(env.mj_model),
      "finite": finite,
  }


def parse_args(argv=None):
  """(parser, args): the command line parsed and checked, every problem named at once (exit
  2), before any env is built or compiled."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_envs", type=int, default=64)
  parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
  parser.add_argument("--scan_length", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--reset_mode", default="fresh",
                      help="comma-separated auto-reset modes to measure: first, fresh")
  parser.add_argument("--env_kwargs", default="",
                      help="constructor arguments of every task, KEY=VALUE,... (as env.kwargs.KEY)")
  parser.add_argument("--out", default=None, help="also write the table to this file")
  args = parser.parse_args(argv)
  problems = []
  try:
    args.env_kwargs = dict(config_lib.parse_overrides(args.env_kwargs))
  except config_lib.ConfigError as e:
    problems.append(f"--env_kwargs: {'; '.join(e.problems)}")
  names = [t for t in args.tasks.split(",") if t]
  if not names:
    problems.append("--tasks: no task named")
  problems += [f"--tasks: {envs.unknown_env_message(t)}" for t in names
               if not envs.is_registered(t)]
  problems.append(names_problem("reset_mode", args.reset_mode, envs.wrappers.RESET_MODES))
  problems += [f"--{flag}={getattr(args, flag)}: expected >= 1"
               for flag in ("num_envs", "scan_length", "repeats") if getattr(args, flag) < 1]
  if isinstance(args.env_kwargs, dict) and args.env_kwargs and not any(problems):
    for name in names:  # a task that rejects them is named before anything compiles
      try:
        make_task_env(name, args.env_kwargs)
      except ValueError as e:
        problems.append(str(e))
  problems = [p for p in problems if p]
  if problems:
    parser.error("; ".join(problems))
  return parser, args


def main(argv=None) -> int:
  _, args = parse_args(argv)
  tasks = [t for t in args.tasks.split(",") if t]
  modes = [m for m in args.reset_mode.split(",") if m]
  rows = []
  table = ""
  for name in tasks:
    for mode in modes:
      r = measure(name, args.num_envs, args.scan_length, args.repeats, reset_mode=mode,
                  env_kwargs=task_kwargs(name, args.env_kwargs),
                  measure_reset=len(modes) > 1 and mode == "fresh")
      rows.append(r)
      print(f"# {name} ({mode}): {r['steps_per_s']:.0f} env-steps/s "
            f"(compile {r['compile_s']:.1f} s)", file=sys.stderr, flush=True)
    table = format_table(rows, args)
    if args.out:  # rewritten after every task, so a timeout keeps the finished rows
      with open(args.out, "w") as f:
        f.write(table + "\n")
  print(table)
  return 0


def kwargs_line(args) -> str:
  extra = ",".join(f"{k}={v}" for k, v in args.env_kwargs.items())
  return ("paper tasks built with their configs' env kwargs"
          + (f", and env kwargs {extra}" if extra else ""))


def format_table(rows, args) -> str:
  modes = sorted({r["reset_mode"] for r in rows})
  if len(modes) > 1:
    return format_reset_table(rows, args)
  ref = {r["task"]: r["steps_per_s"] for r in rows}
  lines = [
      device_header(),
      f"num_envs {args.num_envs}, scan of {args.scan_length} control steps, best of "
      f"{args.repeats}; training wrappers (episode limit + auto-reset "
      f"{rows[0]['reset_mode'] if rows else ''}), random actions; {kwargs_line(args)}",
      "",
      "| task | env-steps/s | cost vs open robot | CPU us / env-step | control dt (s) "
      "| contact slots | compile (s) |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    base = "ant" if r["task"].startswith(("ant", "arm")) else "humanoid"
    rel = (f"{ref[base] / r['steps_per_s']:.2f}x {base}" if base in ref and r["task"] != base
           else "-")
    lines.append(f"| {r['task']} | {r['steps_per_s']:,.0f} | {rel} | {r['cpu_us_per_step']:.1f} "
                 f"| {r['dt']:.3f} | {r['slots']} | {r['compile_s']:.1f} |"
                 + ("" if r["finite"] else " NaN!"))
  return "\n".join(lines)


def format_reset_table(rows, args) -> str:
  """One row per (task, reset mode), with each mode's CPU cost relative to ``first``."""
  first = {r["task"]: r for r in rows if r["reset_mode"] == "first"}
  lines = [
      device_header(),
      f"num_envs {args.num_envs}, scan of {args.scan_length} control steps, best of "
      f"{args.repeats}; training wrappers, random actions; {kwargs_line(args)}",
      "",
      "| task | reset mode | env-steps/s | CPU us / env-step | CPU cost vs first "
      "| env.reset alone, CPU us / env | compile (s) |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    f = first.get(r["task"])
    rel = f"{r['cpu_us_per_step'] / f['cpu_us_per_step']:.2f}x" if f else "-"
    reset = f"{r['reset_cpu_us']:.1f}" if r.get("reset_cpu_us") is not None else "-"
    lines.append(f"| {r['task']} | {r['reset_mode']} | {r['steps_per_s']:,.0f} "
                 f"| {r['cpu_us_per_step']:.1f} | {rel} | {reset} | {r['compile_s']:.1f} |"
                 + ("" if r["finite"] else " NaN!"))
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
