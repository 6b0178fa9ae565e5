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

import csv
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Network input sizes (state, goal, action) of the published code, by robot (the task catalogue).
from deepcrl_core.tasks import PUBLISHED_SIZES  # noqa: E402

# Dense peak TFLOP/s by device kind (substring match, first hit wins): (tf32, bf16). f32
# matmuls on NVIDIA GPUs run as TF32 by default, so the fraction of peak uses the TF32 figure.
PEAK_TFLOPS = (
    ("H100 PCIe", 378.0, 756.0),
    ("H200", 494.7, 989.4),
    ("H100", 494.7, 989.4),
    ("A100", 156.0, 312.0),
)

CSV_COLUMNS = [
    "depth", "width", "batch", "impl", "status", "actor_depth", "critic_depth", "params",
    "compile_s", "step_ms", "step_ms_min", "step_ms_p90", "repeats", "gflops_per_step",
    "tflops", "frac_peak", "xla_mem_mb", "peak_mem_mb", "mem_source", "num_envs",
    "unroll_length", "sgd_steps", "unroll_compile_s", "unroll_ms", "env_steps_per_s",
    "train_compile_s", "train_ms", "train_ms_kind", "sgd_h_100M", "total_h_100M", "device",
    "note",
]

# What --num_envs/--unroll_length/--sgd_steps default to on CPU (-1): small enough for minutes.
CPU_SHAPE = {"num_envs": 32, "unroll_length": 10, "sgd_steps": 10}


def _is_oom(e: BaseException) -> bool:
  text = f"{type(e).__name__} {e}".lower()
  return "resource_exhausted" in text or "out of memory" in text or isinstance(e, MemoryError)


def _first_line(e: BaseException) -> str:
  lines = [l for l in str(e).strip().splitlines() if l.strip()]
  return f"{type(e).__name__}: {lines[0][:160] if lines else ''}"


def peak_tflops(device_kind: str) -> Optional[float]:
  """Dense TF32 peak of a known device kind, else None."""
  for key, tf32, _ in PEAK_TFLOPS:
    if key.lower() in (device_kind or "").lower():
      return tf32
  return None


def network_sizes(env_name: str):
  """``(state_size, goal_size, action_size, registered)`` of ``env_name``."""
  from deepcrl_core import envs  # pylint: disable=g-import-not-at-top
  if envs.is_registered(env_name):
    env = envs.make(env_name)
    return env.state_size, env.goal_size, env.action_size, True
  for family, sizes in PUBLISHED_SIZES.items():
    if env_name == family or env_name.startswith(family + "_"):
      return sizes + (False,)
  raise ValueError(f"env {env_name!r} is neither registered nor in PUBLISHED_SIZES")


def make_agent(config, sizes):
  """The run's Agent, as training builds it (:func:`deepcrl_core.train.build_agent`), for
  network input ``sizes`` (``(state, goal, action, ...)``) without building envs."""
  from deepcrl_core import train as train_lib  # pylint: disable=g-import-not-at-top
  return train_lib.build_agent(config, train_lib.EnvSizes(*sizes[:3]))


def random_batch(key, batch: int, sizes):
  import jax  # pylint: disable=g-import-not-at-top
  from deepcrl_core import losses as losses_lib
  ks, ka, kg = jax.random.split(key, 3)
  return losses_lib.Transitions(
      state=jax.random.normal(ks, (batch, sizes[0])),
      action=jax.random.uniform(ka, (batch, sizes[2]), minval=-1.0, maxval=1.0),
      goal=jax.random.normal(kg, (batch, sizes[1])))


def cost_flops(stage) -> float:
  """FLOPs of a lowered or compiled jit stage (cost_analysis returns a dict or a list of dicts
  depending on the jax version)."""
  ca = stage.cost_analysis()
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  return float((ca or {}).get("flops", float("nan")))


def _timed_calls(fn, args_fn, repeats: int, warmup: int = 2) -> List[float]:
  """Seconds of ``repeats`` synchronised calls ``fn(*args_fn())`` after ``warmup`` calls."""
  import jax  # pylint: disable=g-import-not-at-top
  for _ in range(warmup):
    jax.block_until_ready(fn(*args_fn()))
  times = []
  for _ in range(repeats):
    args = args_fn()
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return times


def _percentile(xs: Sequence[float], q: float) -> float:
  xs = sorted(xs)
  return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


# ---------------------------------------------------------------------------------------------
# Subprocess work: one probe (device, versions, FLOPs per shape) and one process per row.

def probe(shapes: Sequence[dict], config_json: str) -> dict:
  """Device facts, versions and model FLOPs per gradient step for each shape."""
  import jax  # pylint: disable=g-import-not-at-top
  import haiku as hk
  dev = jax.devices()[0]
  info = {"backend": jax.default_backend(), "device_kind": dev.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__,
          "jaxlib": getattr(jax.lib, "__version__", None) or _pkg_version("jaxlib"),
          "haiku": hk.__version__, "python": platform.python_version(),
          "host": platform.node(), "cpu_count": os.cpu_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "flops": {}}
  if info["backend"] == "gpu":
    info["gpu"] = _nvidia_smi()
  for shape in shapes:
    key = flops_key(shape)
    try:
      info["flops"][key] = model_flops(config_json, **shape)
    except Exception as e:  # pylint: disable=broad-except
      info["flops"][key] = None
      info.setdefault("notes", []).append(f"FLOPs of {key}: {_first_line(e)}")
  return info


def _pkg_version(name: str) -> str:
  try:
    from importlib.metadata import version  # pylint: disable=g-import-not-at-top
    return version(name)
  except Exception:  # pylint: disable=broad-except
    return "?"


def _nvidia_smi() -> str:
  try:
    return subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20).stdout.strip()
  except Exception:  # pylint: disable=broad-except
    return ""


def flops_key(shape: dict) -> str:
  return "w{width}_b{batch}_a{actor_depth}_c{critic_depth}".format(**shape)


def model_flops(config_json: str, width: int, batch: int, actor_depth: int,
                critic_depth: int) -> float:
  """FLOPs of one gradient step (XLA impl), exact for any depths (see the module doc)."""
  import jax  # pylint: disable=g-import-not-at-top
  from deepcrl_kernels import residual_stack_xla  # pylint: disable=g-import-not-at-top
  config = _config_from_json(config_json)
  sizes = network_sizes(config.env.name)

  def step_flops(a, c):
    cfg = _config_from_json(config_json)
    cfg.network.width, cfg.train.batch_size = width, batch
    cfg.network.actor_depth, cfg.network.critic_depth = a, c
    cfg.network.kernel_impl = "xla"
    agent = make_agent(cfg, sizes)
    ts = agent.init(jax.random.PRNGKey(0))
    b = random_batch(jax.random.PRNGKey(1), batch, sizes)
    with residual_stack_xla.scan_unroll(True):  # the trunks' scans unrolled: every block counted
      return cost_flops(jax.jit(agent.sgd_step).lower(ts, b))

  f44 = step_flops(4, 4)
  if actor_depth == critic_depth:  # one more compile suffices
    return f44 + (actor_depth // 4 - 1) * (step_flops(8, 8) - f44)
  f84, f48 = step_flops(8, 4), step_flops(4, 8)
  return f44 + (actor_depth // 4 - 1) * (f84 - f44) + (critic_depth // 4 - 1) * (f48 - f44)


def _config_from_json(config_json: str):
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(json.loads(config_json))


def _peak_memory_mb(device):
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except
    stats = None
  if stats and "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device"
  # ru_maxrss is in KiB on Linux (bytes on macOS).
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  scale = 2**20 if sys.platform == "darwin" else 2**10
  return rss / scale, "rss"


def measure_row(spec: dict) -> dict:
  """Measures one row; ``spec`` holds the config (json) and the row's settings."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp
  from deepcrl_core import agent as agent_lib
  from deepcrl_core import config as config_lib
  from deepcrl_core import networks as nets

  jax.config.update("jax_enable_compilation_cache", False)  # cold compiles, honestly timed
  config = _config_from_json(spec["config"])
  r: Dict[str, Any] = {"status": "ok", "notes": []}
  device = jax.devices()[0]
  r["device"] = device.device_kind
  sizes = network_sizes(config.env.name)
  registered = sizes[3]
  agent = make_agent(config, sizes)
  r["actor_depth"] = config_lib.actor_depth(config)
  r["critic_depth"] = config_lib.critic_depth(config)
  stage = "gradient step"
  try:
    # --- the gradient step -------------------------------------------------------------------
    ts = agent.init(jax.random.PRNGKey(0))
    r["params"] = nets.param_count(ts.actor_params) + nets.param_count(ts.critic_params)
    batch = random_batch(jax.random.PRNGKey(1), config.train.batch_size, sizes)
    step = jax.jit(agent.sgd_step, donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(ts, batch).compile()
    r["compile_s"] = time.perf_counter() - t0
    try:
      ma = compiled.memory_analysis()
      r["xla_mem_mb"] = (ma.argument_size_in_bytes + ma.output_size_in_bytes
                         + ma.temp_size_in_bytes - ma.alias_size_in_bytes) / 2**20
    except Exception:  # pylint: disable=broad-except
      pass
    state = {"ts": ts}

    def call(b):
      state["ts"], metrics = compiled(state["ts"], b)
      return metrics

    times = _timed_calls(call, lambda: (batch,), spec["repeats"])
    r["step_ms"] = 1e3 * statistics.median(times)
    r["step_ms_min"] = 1e3 * min(times)
    r["step_ms_p90"] = 1e3 * _percentile(times, 0.9)
    r["repeats"] = len(times)
    ts = state.pop("ts")

    # --- the env unroll ----------------------------------------------------------------------
    t = config.train
    if not spec.get("unroll", True):
      r["notes"].append("unroll and training step not measured (--nounroll)")
    elif not registered:
      r["notes"].append(f"env {config.env.name!r} not registered: unroll skipped (published "
                        f"sizes {sizes[:3]})")
    else:
      stage = "unroll"
      from deepcrl_core import envs  # pylint: disable=g-import-not-at-top
      from deepcrl_core import replay
      from deepcrl_core import train as train_lib
      kwargs = config.env.kwargs.to_dict() if hasattr(config.env.kwargs, "to_dict") else {}
      env = envs.make(config.env.name, **kwargs)
      train_env = envs.wrap_for_training(env, config.env.episode_length)
      env_state = jax.jit(train_env.reset)(jax.random.split(jax.random.PRNGKey(2), t.num_envs))

      def unroll(actor_params, env_state, key):
        return agent_lib.collect(agent, train_env, actor_params, env_state, key, t.unroll_length)

      t0 = time.perf_counter()
      unroll_c = jax.jit(unroll).lower(ts.actor_params, env_state, jax.random.PRNGKey(3)).compile()
      r["unroll_compile_s"] = time.perf_counter() - t0
      keys = iter(jax.random.split(jax.random.PRNGKey(4), 10_000))
      times = _timed_calls(lambda k: unroll_c(ts.actor_params, env_state, k),
                           lambda: (next(keys),), spec["unroll_repeats"], warmup=1)
      r["unroll_ms"] = 1e3 * statistics.median(times) / t.unroll_length
      r["env_steps_per_s"] = t.num_envs * t.unroll_length / statistics.median(times)

      if spec["train_step"] == "measure":
        stage = "training step"
        buf = replay.init(config.replay.capacity, t.num_envs, env.observation_size,
                          env.action_size)
        needed = min(config.replay.capacity,
                     max(t.unroll_length, config.replay.window_length
                         if config.replay.sampling == "windows" else 1))
        stored = 0
        while stored < needed:  # enough data for the sampler (content does not change timing)
          env_state, data = unroll_c(ts.actor_params, env_state, next(keys))
          buf = replay.insert(buf, data)
          stored += t.unroll_length
        from deepcrl_core import distributed  # pylint: disable=g-import-not-at-top
        c = train_lib.Components(config=config, env=env, train_env=train_env,
                                 eval_env=train_env, agent=agent,
                                 mesh=distributed.make_mesh(1))
        run = train_lib.RunState(ts, env_state, buf)
        train_step = jax.jit(train_lib.make_train_step(c), donate_argnums=0)
        t0 = time.perf_counter()
        train_c = train_step.lower(run).compile()
        r["train_compile_s"] = time.perf_counter() - t0
        holder = {"run": run}
        del run, buf, ts

        def train_call():
          holder["run"], metrics = train_c(holder["run"])
          return metrics

        times = _timed_calls(train_call, lambda: (), spec["train_repeats"], warmup=1)
        r["train_ms"] = 1e3 * statistics.median(times)
        r["train_ms_kind"] = "measured"
  except Exception as e:  # pylint: disable=broad-except
    if _is_oom(e):
      r["status"] = "oom" if stage == "gradient step" else f"oom ({stage})"
    else:
      r["status"] = "error" if stage == "gradient step" else f"error ({stage})"
    r["notes"].append(f"{stage}: {_first_line(e)}")
  r["peak_mem_mb"], r["mem_source"] = _peak_memory_mb(device)
  return r


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


def _fmt(v, digits=3):
  if v is None or v == "":
    return ""
  if isinstance(v, float):
    if not math.isfinite(v):
      return ""
    if v == 0:
      return "0"
    mag = math.floor(math.log10(abs(v)))
    return f"{v:.{max(0, digits - 1 - mag)}f}" if mag < digits else f"{v:.0f}"
  return str(v)


def fit_linear(xs: Sequence[float], ys: Sequence[float]):
  """Least-squares ``y = a + b x``; returns (intercept a, slope b)."""
  n = len(xs)
  mx, my = sum(xs) / n, sum(ys) / n
  sxx = sum((x - mx) ** 2 for x in xs)
  if sxx == 0:
    return my, float("nan")
  b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
  return my - b * mx, b


def depth_fits(rows: Sequence[dict]) -> List[dict]:
  """Per (impl, width, batch): step time fitted against depth (>= 2 measured depths)."""
  groups: Dict[tuple, List[dict]] = {}
  for r in rows:
    if isinstance(r.get("step_ms"), float):
      groups.setdefault((r["impl"], r["width"], r["batch"]), []).append(r)
  fits = []
  for (impl, width, batch), rs in sorted(groups.items()):
    depths = sorted({r["depth"] for r in rs})
    if len(depths) < 2:
      continue
    xs, ys = [r["depth"] for r in rs], [r["step_ms"] for r in rs]
    a, b = fit_linear(xs, ys)
    big = [r for r in rs if r["depth"] >= 16] or rs
    lo = min(big, key=lambda r: r["depth"]) if len(big) >= 2 else min(rs, key=lambda r: r["depth"])
    hi = max(rs, key=lambda r: r["depth"])
    loglog = (math.log(hi["step_ms"] / lo["step_ms"]) / math.log(hi["depth"] / lo["depth"])
              if hi["depth"] != lo["depth"] else float("nan"))
    fits.append({"impl": impl, "width": width, "batch": batch, "depths": depths,
                 "intercept_ms": a, "slope_ms_per_layer": b, "loglog_slope": loglog})
  return fits


def markdown(rows: Sequence[dict], fits: Sequence[dict], header: Sequence[str]) -> str:
  cols = ["depth", "width", "batch", "impl", "params", "compile_s", "step_ms", "gflops_per_step",
          "tflops", "frac_peak", "peak_mem_mb", "xla_mem_mb", "unroll_compile_s", "unroll_ms",
          "train_ms", "sgd_h_100M", "total_h_100M", "status"]
  lines = list(header) + [""]
  lines.append("| " + " | ".join(cols) + " |")
  lines.append("|" + "---|" * len(cols))
  for r in rows:
    cells = []
    for c in cols:
      v = r.get(c, "")
      if c == "params" and isinstance(v, int):
        v = f"{v / 1e6:.2f}M"
      elif c == "train_ms" and v not in ("", None):
        v = _fmt(v) + (" (est)" if r.get("train_ms_kind") == "estimated" else "")
      elif c == "frac_peak" and isinstance(v, float):
        v = f"{100 * v:.1f}%"
      cells.append(_fmt(v) if not isinstance(v, str) else v)
    lines.append("| " + " | ".join(cells) + " |")
  if fits:
    lines += ["", "Step time against depth, least squares `step_ms = intercept + slope * depth` "
              "(depth = Dense layers per trunk; log-log slope between the deepest row and the "
              "shallowest row of depth >= 16):", "",
              "| impl | width | batch | depths | intercept ms | ms per layer | log-log slope |",
              "|---|---|---|---|---|---|---|"]
    for f in fits:
      lines.append(f"| {f['impl']} | {f['width']} | {f['batch']} | "
                   f"{','.join(map(str, f['depths']))} | {_fmt(f['intercept_ms'])} | "
                   f"{_fmt(f['slope_ms_per_layer'])} | {_fmt(f['loglog_slope'])} |")
  notes = sorted({n for r in rows for n in r.get("notes", [])})
  if notes:
    lines += [""] + [f"- {n}" for n in notes]
  return "\n".join(lines)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      row = {c: r.get(c, "") for c in CSV_COLUMNS}
      row["note"] = "; ".join(r.get("notes", []))
      for c, v in row.items():
        if isinstance(v, float):
          row[c] = "" if not math.isfinite(v) else f"{v:.6g}"
      w.writerow(row)


def plot(path: str, rows: Sequence[dict], title: str) -> str:
  """Step time and peak memory against depth (log-log), one line per impl (and shape)."""
  series: Dict[str, List[dict]] = {}
  shapes = {(r["width"], r["batch"]) for r in rows}
  for r in rows:
    if not isinstance(r.get("step_ms"), float):
      continue
    label = r["impl"] if len(shapes) == 1 else f"{r['impl']} w{r['width']} b{r['batch']}"
    series.setdefault(label, []).append(r)
  panels = [("step ms", "step_ms"), ("peak mem MB", "peak_mem_mb")]
  data = {lab: {key: sorted((r["depth"], r[key]) for r in rs
                            if isinstance(r.get(key), (int, float)) and r[key] > 0)
                for _, key in panels} for lab, rs in series.items()}
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    import png_plot  # pylint: disable=g-import-not-at-top
    png_plot.loglog_panels(path, [(name, {lab: d[key] for lab, d in data.items()})
                                  for name, key in panels], xlabel="depth", title=title)
    return "builtin"
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, (name, key) in zip(axes, panels):
    for lab, d in data.items():
      if d[key]:
        xs, ys = zip(*d[key])
        ax.plot(xs, ys, marker="o", label=lab)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth (Dense layers per trunk)")
    ax.set_ylabel(name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return "matplotlib"


def _ints(text: str) -> List[int]:
  return [int(v) for v in str(text).split(",") if v.strip()]


def run_sweep(config, *, depths, widths, batches, impls, out: str, repeats: int = 20,
              unroll_repeats: int = 5, train_repeats: int = 3, train_step: str = "auto",
              num_envs: int = -1, unroll_length: int = -1, sgd_steps: int = -1,
              row_timeout: float = 600.0, unroll: bool = True, budget_s: float = 0.0,
              command: str = "",
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
    for impl in impls:
      r = {"depth": d, "width": w, "batch": b, "impl": impl, "notes": [], **shape}
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
      flops = info["flops"].get(flops_key(s))
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
      log(f"depth {d} width {w} batch {b} {impl}: {r['status']} step {_fmt(r.get('step_ms'))} ms,"
          f" compile {_fmt(r.get('compile_s'))} s, peak {_fmt(r.get('peak_mem_mb'))} MB "
          f"({time.time() - t0:.0f}s)" + (f" [{'; '.join(r['notes'])}]" if r["notes"] else ""))

  return write_outputs()



def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if len(argv) > 1:
    raise SystemExit(f"unexpected arguments: {' '.join(argv[1:])}")
  impls = [i for i in f.impls.split(",") if i]
  bad = [i for i in impls if i not in ("xla", "xla_unrolled", "pallas", "interpret", "auto")]
  if bad:
    raise SystemExit(f"--impls: unknown {bad}")
  command = "python profiling/step_time.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  result = run_sweep(
      _CONFIG.value, depths=_ints(f.depths), widths=_ints(f.widths), batches=_ints(f.batches),
      impls=impls, out=f.out, repeats=f.repeats, unroll_repeats=f.unroll_repeats,
      train_repeats=f.train_repeats, train_step=f.train_step, num_envs=f.num_envs,
      unroll_length=f.unroll_length, sgd_steps=f.sgd_steps, row_timeout=f.row_timeout,
      unroll=f.unroll, budget_s=f.budget_s, command=command, log=lambda s: print(s, file=sys.stderr, flush=True))
  print(result["markdown"], flush=True)
  failed = [r for r in result["rows"] if r["status"].startswith("error")]
  return 1 if failed else 0


_CONFIG = None


def _define_flags():
  global _CONFIG
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags
  default_config = "configs/humanoid.py"
  if not os.path.exists(default_config):
    default_config = os.path.join(REPO, default_config)
  _CONFIG = config_flags.DEFINE_config_file(
      "config", default_config, "Task config, optionally with overrides: file.py:k=v,k=v.",
      lock_config=False)
  flags.DEFINE_string("depths", "4,8,16,32,64", "Depths (Dense layers per residual trunk).")
  flags.DEFINE_string("widths", "", "Widths (default: the config's network.width).")
  flags.DEFINE_string("batches", "", "Batch sizes (default: the config's train.batch_size).")
  flags.DEFINE_string("impls", "xla,pallas", "Kernel impls: xla, xla_unrolled (XLA path, "
                      "blocks unrolled instead of looped), pallas, interpret, auto; pallas is "
                      "skipped off GPU.")
  flags.DEFINE_string("out", "step_time_out", "Output directory.")
  flags.DEFINE_integer("repeats", 20, "Timed gradient steps per row (>= 20).")
  flags.DEFINE_integer("unroll_repeats", 5, "Timed unrolls per row.")
  flags.DEFINE_integer("train_repeats", 3, "Timed whole training steps per row.")
  flags.DEFINE_enum("train_step", "auto", ["auto", "measure", "estimate"],
                    "Whole training step: measure (GPU default) or estimate from the unroll and "
                    "gradient-step times (CPU default).")
  flags.DEFINE_integer("num_envs", -1, "Envs of the unroll/training step (-1: config; CPU: "
                       f"min(config, {CPU_SHAPE['num_envs']})).")
  flags.DEFINE_integer("unroll_length", -1, "Unroll length (-1: config; CPU: min(config, "
                       f"{CPU_SHAPE['unroll_length']})).")
  flags.DEFINE_integer("sgd_steps", -1, "Gradient steps per training step (-1: config; CPU: "
                       f"min(config, {CPU_SHAPE['sgd_steps']})).")
  flags.DEFINE_bool("unroll", True, "Measure the env unroll and the whole training step (for "
                    "registered envs); --nounroll times the gradient step only.")
  flags.DEFINE_float("row_timeout", 600.0, "Seconds before a row is recorded as a timeout.")
  flags.DEFINE_float("budget_s", 0.0, "Wall-clock budget of the sweep in seconds (0: none); rows "
                     "left when it is spent are recorded as 'not run'. Outputs are rewritten "
                     "after every row either way.")


if __name__ == "__main__":
  _mode = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--_mode=")), None)
  if _mode:
    sys.exit(_child_main(_mode))
  import deepcrl_core  # noqa: E402
  deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
