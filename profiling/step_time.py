"""Cost of depth: compile time, step time, memory and FLOPs of deep CRL versus depth.

For each (depth, width, batch, kernel impl) on the current backend this measures

* the jitted CRL gradient step (actor + alpha, then critic, one minibatch): compile time,
  steady-state time (median of ``--repeats`` >= 20 synchronised calls after warm-up), XLA's
  memory of the compiled step, parameter count, FLOPs, achieved FLOP/s and its fraction of the
  device's peak where that peak is known;
* the env unroll (the stochastic actor stepping ``num_envs`` envs ``unroll_length`` times, as
  in training): compile time and time per (batched) env step -- only for registered envs;
* one whole training step (unroll + replay insert + ``sgd_steps`` gradient steps with
  sampling), measured (``--train_step=measure``, default on GPU) or estimated as
  ``unroll_length * unroll_ms + sgd_steps * step_ms`` (``estimate``, default on CPU);
* peak memory: ``device.memory_stats()["peak_bytes_in_use"]`` where the backend reports it,
  else the process's peak RSS (CPU).

Every row runs in a fresh subprocess, so compile times are cold (no compilation cache), peak
memory belongs to that row alone and an out-of-memory kills only its row (recorded as ``oom``).

FLOPs are model FLOPs from XLA's cost analysis of the lowered (pre-optimisation) HLO of the
XLA-impl step: platform-independent, and a lowering takes ~1 s where a compile takes ~10 s
(the optimised HLO of a compiled step counts ~1-2% more at width 256, batch 512: fusions
duplicate some elementwise work). XLA counts a loop body once whatever its trip count, and
the residual trunks are a ``lax.scan`` over blocks, so the step is lowered with the trunks'
scans unrolled (``deepcrl_kernels.residual_stack_xla.scan_unroll(True)``) at actor/critic depths
(4, 4) and (8, 8) (or (8, 4) and (4, 8) when they differ) and the count is extrapolated (FLOPs are
affine in the number of blocks of each trunk; this matches a fully unrolled depth-16 lowering to
1e-6). The count is of the step as the XLA path computes it, LayerNorm/Swish recomputed in the
backward pass included (+0.7% at width 256). The same count is used for the Pallas rows (XLA
cannot see inside a Pallas kernel) and the ``xla_unrolled`` rows.

``--impls`` takes ``xla``, ``xla_unrolled`` (the XLA path with every residual block unrolled
instead of a loop: compile time grows with depth; the loop-vs-unrolled comparison), ``pallas``,
``interpret`` and ``auto``.

A name that is not a registered env but a robot family (``ant``, ``humanoid``, ``arm``) gets the
gradient step at the published network input sizes (:data:`PUBLISHED_SIZES`), with no unroll.
``pallas`` rows are skipped on CPU (interpret mode is an emulator, not worth timing).

  python profiling/step_time.py --out=/tmp/st                           # CPU, a few minutes
  python profiling/step_time.py --config=configs/humanoid.py --depths=4,16,64,256,1024 \\
      --impls=xla,pallas --out=$OUT/depth                               # GPU
  python profiling/step_time.py --depths=4 --widths=256,512,1024 --batches=256,512 --out=...

Writes ``OUT/step_time.csv``, ``OUT/step_time.png`` (step time and peak memory vs depth, log-log,
one line per impl/shape), ``OUT/step_time.md``, and prints the markdown table last.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

from profiling_common import ints_problem, names_problem  # noqa: E402  (this folder)

# The script is split in three: measuring a row (step_time_measure, each row in its own
# subprocess), reporting (step_time_report), and the sweep driver below. Their public names are
# re-exported here, so `import step_time` gives the whole tool.
from step_time_measure import (CPU_SHAPE, PEAK_TFLOPS, cost_flops, flops_key,  # noqa: E402,F401
                               make_agent, measure_row, model_flops, network_sizes,
                               peak_tflops, probe, random_batch)
from step_time_report import (CSV_COLUMNS, _fmt, depth_fits, fit_linear, markdown,  # noqa: E402,F401
                              plot, write_csv)


# ---------------------------------------------------------------------------------------------
# Driver (no jax in this process: each row gets a fresh one).

def _subprocess(mode: str, payload: dict, timeout: float, env_extra: Optional[dict] = None):
  """Runs this file with ``--_mode``; returns (result dict or None, why-not string)."""
  env = dict(os.environ)
  from deepcrl_core import _xla_flags  # pylint: disable=g-import-not-at-top (no jax import)
  _xla_flags.configure_cpu_xla_flags(environ=env)
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  env.update(env_extra or {})
  cmd = [sys.executable, os.path.abspath(__file__), f"--_mode={mode}"]
  try:
    proc = subprocess.run(cmd, input=json.dumps(payload), capture_output=True, text=True,
                          timeout=timeout, env=env)
  except subprocess.TimeoutExpired:
    return None, f"timeout after {timeout:.0f}s"
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("@@RESULT "):
      return json.loads(line[len("@@RESULT "):]), ""
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  if proc.returncode < 0:
    return None, f"killed by signal {-proc.returncode} (likely out of host memory)"
  text = " | ".join(tail)
  if "resource_exhausted" in text.lower() or "out of memory" in text.lower():
    return None, "oom: " + text[-200:]
  return None, f"exit {proc.returncode}: {text[-300:]}"


def _child_main(mode: str) -> int:
  import deepcrl_core  # pylint: disable=g-import-not-at-top
  deepcrl_core.configure_cpu_xla_flags()  # the parent set it; this keeps the user's flags
  payload = json.loads(sys.stdin.read())
  if mode == "probe":
    result = probe(payload["shapes"], payload["config"])
  elif payload.get("scan_unroll"):
    from deepcrl_kernels import residual_stack_xla  # pylint: disable=g-import-not-at-top
    with residual_stack_xla.scan_unroll(True):  # every block unrolled in every trace of the row
      result = measure_row(payload)
  else:
    result = measure_row(payload)
  print("@@RESULT " + json.dumps(result), flush=True)
  return 0


def _ints(text: str) -> List[int]:
  return [int(v) for v in str(text).split(",") if v.strip()]


def run_sweep(config, *, depths, widths, batches, impls, out: str, repeats: int = 20,
              unroll_repeats: int = 5, train_repeats: int = 3, train_step: str = "auto",
              num_envs: int = -1, unroll_length: int = -1, sgd_steps: int = -1,
              row_timeout: float = 600.0, unroll: bool = True, budget_s: float = 0.0,
              command: str = "", agents=None,
              log=print) -> dict:
  """Runs the sweep and writes the CSV, the PNG and the markdown; returns what it wrote."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if repeats < 20:
    raise ValueError(f"--repeats must be >= 20 (median of >= 20 steps), got {repeats}")
  os.makedirs(out, exist_ok=True)
  base = config.to_dict()
  configured = {"num_envs": config.train.num_envs, "unroll_length": config.train.unroll_length,
                "sgd_steps": config.train.sgd_steps}
  widths = widths or [config.network.width]
  batches = batches or [config.train.batch_size]
  fixed_actor, fixed_critic = config.network.actor_depth, config.network.critic_depth

  def row_config(depth, width, batch, impl, shape):
    c = ml_collections.ConfigDict(base)
    c.network.depth, c.network.width, c.train.batch_size = depth, width, batch
    c.network.kernel_impl = "xla" if impl == "xla_unrolled" else impl
    c.train.num_envs, c.train.unroll_length = shape["num_envs"], shape["unroll_length"]
    c.train.sgd_steps = shape["sgd_steps"]
    return c

  grid = [(d, w, b) for w in widths for b in batches for d in depths]
  # --agents: each row's config.agent (deepcrl_core.agents); FLOPs are counted for the config's
  # own agent only (the probe's), so other agents' rows have none.
  agents = list(agents or [config.get("agent", "crl")])
  flops_agent = config.get("agent", "crl")
  flops_shapes = []
  for d, w, b in grid:
    s = {"width": w, "batch": b, "actor_depth": fixed_actor or d, "critic_depth": fixed_critic or d}
    if s not in flops_shapes:
      flops_shapes.append(s)
  log(f"probing the device and counting FLOPs of {len(flops_shapes)} shapes ...")
  info, why = _subprocess("probe", {"shapes": flops_shapes, "config": json.dumps(base)},
                          timeout=max(row_timeout, 300))
  if info is None:
    raise RuntimeError(f"device probe failed: {why}")
  backend = info["backend"]
  on_cpu = backend == "cpu"
  if train_step == "auto":
    train_step = "estimate" if on_cpu else "measure"
  shape = {}
  for k, v in (("num_envs", num_envs), ("unroll_length", unroll_length), ("sgd_steps", sgd_steps)):
    shape[k] = v if v > 0 else (min(configured[k], CPU_SHAPE[k]) if on_cpu else configured[k])
  peak = peak_tflops(info["device_kind"])

  def write_outputs():
    """Writes every output from the rows so far (after each row: a killed sweep keeps them)."""
    fits = depth_fits(rows)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = info["device_kind"] + (f" ({info['gpu']})" if info.get("gpu") else "")
    header = [
        f"### Step time vs depth: {config.env.name} on {device}",
        "",
        f"- date {date}; backend {backend}, {info['device_count']} device(s), host "
        f"{info['cpu_count']} CPUs, 1-min load at the end {load:.2f}",
        f"- jax {info['jax']}, jaxlib {info['jaxlib']}, dm-haiku {info['haiku']}, "
        f"python {info['python']}; XLA_FLAGS={info['xla_flags']!r}",
        f"- command: `{command}`" if command else "- command: (library call)",
        f"- gradient step: median of {repeats} synchronised calls after 2 warm-up calls; "
        f"compile = cold `lower().compile()`; peak memory = "
        f"{'device peak_bytes_in_use' if not on_cpu else 'process peak RSS'} of the row's own "
        f"process; FLOPs = XLA model FLOPs of the XLA-impl step"
        + (f"; fraction of the {peak:.0f} TFLOP/s dense TF32 peak" if peak else ""),
        f"- unroll/training shape: num_envs {shape['num_envs']}, unroll_length "
        f"{shape['unroll_length']}, sgd_steps {shape['sgd_steps']} (configured "
        f"{configured['num_envs']}/{configured['unroll_length']}/{configured['sgd_steps']}); "
        f"training step {train_step}d; sgd_h_100M = hours of gradient steps for 100M env steps "
        f"at the configured ratio; total_h_100M only when measured at the configured shape",
    ]
    text = markdown(rows, fits, header)
    write_csv(os.path.join(out, "step_time.csv"), rows)
    backend_plot = plot(os.path.join(out, "step_time.png"), rows,
                        f"{config.env.name} on {info['device_kind']}, width/batch "
                        f"{'/'.join(map(str, widths))}/{'/'.join(map(str, batches))}")
    with open(os.path.join(out, "step_time.md"), "w") as f:
      f.write(text + "\n")
    with open(os.path.join(out, "step_time.json"), "w") as f:
      json.dump({"info": info, "rows": rows, "fits": fits, "command": command}, f, indent=1,
                default=str)
    return {"rows": rows, "fits": fits, "markdown": text, "info": info, "plot": backend_plot}

  rows = []
  t_sweep = time.time()
  for d, w, b in grid:
    for agent, impl in [(a, i) for a in agents for i in impls]:
      r = {"depth": d, "width": w, "batch": b, "impl": impl, "agent": agent, "notes": [], **shape}
      left = budget_s - (time.time() - t_sweep) if budget_s > 0 else float("inf")
      if left < 10:
        r.update(status="not run", notes=[f"--budget_s={budget_s:.0f} spent before this row"])
        rows.append(r)
        write_outputs()
        continue
      if impl in ("pallas",) and backend != "gpu":
        r.update(status="skipped", notes=[f"{impl} needs a GPU (backend here: {backend})"])
        rows.append(r)
        write_outputs()
        log(f"depth {d} width {w} batch {b} {impl}: skipped ({backend})")
        continue
      c = row_config(d, w, b, impl, shape)
      c.agent = agent
      t0 = time.time()
      res, why = _subprocess("row", {"config": json.dumps(c.to_dict()), "repeats": repeats,
                                     "unroll_repeats": unroll_repeats,
                                     "train_repeats": train_repeats, "train_step": train_step,
                                     "unroll": unroll,
                                     "scan_unroll": impl == "xla_unrolled"},
                             timeout=min(row_timeout, left))
      if res is None:
        status = "oom" if why.startswith(("oom", "killed")) else (
            "timeout" if why.startswith("timeout") else "error")
        r.update(status=status, notes=[why])
      else:
        r.update({k: v for k, v in res.items() if k != "notes"})
        r["notes"] = res.get("notes", [])
      s = {"width": w, "batch": b, "actor_depth": fixed_actor or d,
           "critic_depth": fixed_critic or d}
      flops = info["flops"].get(flops_key(s)) if agent == flops_agent else None
      if flops:
        r["gflops_per_step"] = flops / 1e9
        if isinstance(r.get("step_ms"), float):
          r["tflops"] = flops / (r["step_ms"] * 1e-3) / 1e12
          if peak:
            r["frac_peak"] = r["tflops"] / peak
      if isinstance(r.get("step_ms"), float):
        # SGD cost of 100M env steps at the configured ratio of gradient to env steps.
        grad_steps_100m = 1e8 * configured["sgd_steps"] / (configured["num_envs"]
                                                           * configured["unroll_length"])
        r["sgd_h_100M"] = grad_steps_100m * r["step_ms"] / 3.6e6
        if r.get("train_ms") is None and isinstance(r.get("unroll_ms"), float):
          r["train_ms"] = shape["unroll_length"] * r["unroll_ms"] + shape["sgd_steps"] * r["step_ms"]
          r["train_ms_kind"] = "estimated"
        if isinstance(r.get("train_ms"), float) and shape == configured:
          r["total_h_100M"] = 1e8 / (shape["num_envs"] * shape["unroll_length"]) * r["train_ms"] / 3.6e6
      rows.append(r)
      write_outputs()
      log(f"depth {d} width {w} batch {b} {impl} {agent}: {r['status']} step {_fmt(r.get('step_ms'))} ms,"
          f" compile {_fmt(r.get('compile_s'))} s, peak {_fmt(r.get('peak_mem_mb'))} MB "
          f"({time.time() - t0:.0f}s)" + (f" [{'; '.join(r['notes'])}]" if r["notes"] else ""))

  return write_outputs()



STEP_TIME_IMPLS = ("xla", "xla_unrolled", "pallas", "interpret", "auto")


def flag_problems(f) -> List[str]:
  """What is wrong with the parsed flags ``f`` (an absl ``FlagValues``), every problem at once;
  checked before anything compiles. (``--config`` and its overrides are checked as the flags are
  parsed: ``deepcrl_core.cli.make_flags_parser``.)"""
  from deepcrl_core import agents as agents_lib  # pylint: disable=g-import-not-at-top
  problems = [names_problem("impls", f.impls, STEP_TIME_IMPLS),
              ints_problem("depths", f.depths),
              ints_problem("widths", f.widths, allow_empty=True),
              ints_problem("batches", f.batches, allow_empty=True)]
  problems = [p for p in problems if p]
  unknown = [a for a in f.agents.split(",") if a and a not in agents_lib.REGISTRY]
  if unknown:
    problems.append(f"--agents={f.agents}: unknown {unknown}; agents: "
                    f"{', '.join(agents_lib.REGISTRY)}")
  if f.repeats < 20:
    problems.append(f"--repeats={f.repeats}: expected >= 20 (median of >= 20 steps)")
  for name in ("unroll_repeats", "train_repeats"):
    if f[name].value < 1:
      problems.append(f"--{name}={f[name].value}: expected >= 1")
  if f.row_timeout <= 0 or f.budget_s < 0:
    problems.append("--row_timeout must be > 0 and --budget_s >= 0")
  return problems


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {' '.join(argv[1:])}")
  problems = flag_problems(f)
  if problems:
    print("invalid flags:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 2
  impls = [i for i in f.impls.split(",") if i]
  command = "python profiling/step_time.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  result = run_sweep(
      _CONFIG.value, depths=_ints(f.depths), widths=_ints(f.widths), batches=_ints(f.batches),
      impls=impls, out=f.out, repeats=f.repeats, unroll_repeats=f.unroll_repeats,
      train_repeats=f.train_repeats, train_step=f.train_step, num_envs=f.num_envs,
      unroll_length=f.unroll_length, sgd_steps=f.sgd_steps, row_timeout=f.row_timeout,
      unroll=f.unroll, budget_s=f.budget_s, command=command,
      agents=[a for a in f.agents.split(",") if a] or None, log=lambda s: print(s, file=sys.stderr, flush=True))
  print(result["markdown"], flush=True)
  failed = [r for r in result["rows"] if r["status"].startswith("error")]
  return 1 if failed else 0


_CONFIG = None


def _define_flags(flag_values=None):
  """Defines the script's flags on ``flag_values`` (default: absl's global ``FLAGS``)."""
  global _CONFIG
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags
  fv = flags.FLAGS if flag_values is None else flag_values

  default_config = "configs/humanoid.py"
  if not os.path.exists(default_config):
    default_config = os.path.join(REPO, default_config)
  _CONFIG = config_flags.DEFINE_config_file(
      "config", default_config, "Task config, optionally with overrides: file.py:k=v,k=v.",
      lock_config=False, flag_values=fv)
  flags.DEFINE_string("depths", "4,8,16,32,64", "Depths (Dense layers per residual trunk).",
                      flag_values=fv)
  flags.DEFINE_string("widths", "", "Widths (default: the config's network.width).", flag_values=fv)
  flags.DEFINE_string("batches", "", "Batch sizes (default: the config's train.batch_size).",
                      flag_values=fv)
  flags.DEFINE_string("impls", "xla,pallas", "Kernel impls: xla, xla_unrolled (XLA path, "
                      "blocks unrolled instead of looped), pallas, interpret, auto; pallas is "
                      "skipped off GPU.", flag_values=fv)
  flags.DEFINE_string("out", "step_time_out", "Output directory.", flag_values=fv)
  flags.DEFINE_string("agents", "", "Agents to time, e.g. crl,sac,td3,gcbc,gcsl (default: the "
                      "config's agent); one row per agent, impl and shape.", flag_values=fv)
  flags.DEFINE_integer("repeats", 20, "Timed gradient steps per row (>= 20).", flag_values=fv)
  flags.DEFINE_integer("unroll_repeats", 5, "Timed unrolls per row.", flag_values=fv)
  flags.DEFINE_integer("train_repeats", 3, "Timed whole training steps per row.", flag_values=fv)
  flags.DEFINE_enum("train_step", "auto", ["auto", "measure", "estimate"],
                    "Whole training step: measure (GPU default) or estimate from the unroll and "
                    "gradient-step times (CPU default).", flag_values=fv)
  flags.DEFINE_integer("num_envs", -1, "Envs of the unroll/training step (-1: config; CPU: "
                       f"min(config, {CPU_SHAPE['num_envs']})).", flag_values=fv)
  flags.DEFINE_integer("unroll_length", -1, "Unroll length (-1: config; CPU: min(config, "
                       f"{CPU_SHAPE['unroll_length']})).", flag_values=fv)
  flags.DEFINE_integer("sgd_steps", -1, "Gradient steps per training step (-1: config; CPU: "
                       f"min(config, {CPU_SHAPE['sgd_steps']})).", flag_values=fv)
  flags.DEFINE_bool("unroll", True, "Measure the env unroll and the whole training step (for "
                    "registered envs); --nounroll times the gradient step only.", flag_values=fv)
  flags.DEFINE_float("row_timeout", 600.0, "Seconds before a row is recorded as a timeout.",
                     flag_values=fv)
  flags.DEFINE_float("budget_s", 0.0, "Wall-clock budget of the sweep in seconds (0: none); rows "
                     "left when it is spent are recorded as 'not run'. Outputs are rewritten "
                     "after every row either way.", flag_values=fv)


if __name__ == "__main__":
  _mode = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--_mode=")), None)
  if _mode:
    sys.exit(_child_main(_mode))
  import deepcrl_core  # noqa: E402
  deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
  from absl import app  # pylint: disable=g-import-not-at-top
  from deepcrl_core import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main, flags_parser=cli.make_flags_parser(_CONFIG))
