"""Measuring one row of profiling/step_time.py (run in a fresh subprocess per row): the jitted
CRL gradient step, the env unroll and a whole training step at one (depth, width, batch, impl),
FLOPs from XLA's cost analysis, peak memory; and the probe of the device and versions. See
step_time.py for what is measured and how.
"""

from __future__ import annotations

import json
import os
import platform
import resource
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


class _SizesEnv:
  """What an agent's sampler reads of an env (sizes, goal indices, success test), for network
  input ``sizes`` without building the env."""

  success_radius = 0.5

  def __init__(self, sizes):
    from deepcrl_core.envs.base import Env  # pylint: disable=g-import-not-at-top
    self.state_size, goal_size, self.action_size = sizes[:3]
    self.goal_indices = tuple(range(goal_size))
    self.goal_metrics = lambda achieved, goal: Env.goal_metrics(self, achieved, goal)


def random_batch(key, batch: int, sizes, agent=None, config=None):
  """A random minibatch of ``batch`` rows: CRL's ``Transitions``, or with ``agent`` (and its
  ``config``) whatever that agent's sampler yields, drawn from a random replay buffer (content
  does not change timing)."""
  import jax  # pylint: disable=g-import-not-at-top
  from deepcrl_core import losses as losses_lib
  if agent is not None:
    import ml_collections  # pylint: disable=g-import-not-at-top
    from deepcrl_core import replay  # pylint: disable=g-import-not-at-top
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.train.batch_size, cfg.train.sgd_steps, cfg.replay.sampling = batch, 1, "transitions"
    obs_size = sizes[0] + sizes[1]
    k_obs, k_act, k_draw = jax.random.split(key, 3)
    buf = replay.insert(replay.init(16, 8, obs_size, sizes[2]), replay.Unroll(
        obs=jax.random.normal(k_obs, (16, 8, obs_size)),
        action=jax.random.uniform(k_act, (16, 8, sizes[2]), minval=-1.0, maxval=1.0),
        traj_id=jax.numpy.zeros((16, 8), jax.numpy.int32)))
    sampler = agent.make_sampler(cfg, _SizesEnv(sizes))
    drawn = sampler.draw(buf, k_draw)
    return sampler.batch(buf, jax.tree.map(lambda x: x[0], drawn))
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
    b = random_batch(jax.random.PRNGKey(1), batch, sizes, agent, cfg)
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
  from deepcrl_core import agents as agents_lib
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
    r["params"] = sum(agent.param_counts(ts).values())
    r["agent"] = agent.name
    batch = random_batch(jax.random.PRNGKey(1), config.train.batch_size, sizes, agent, config)
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

      def unroll(policy_params, env_state, key):
        return agents_lib.collect(agent, train_env, policy_params, env_state, key,
                                  t.unroll_length)

      policy_params = agent.policy_params(ts)
      t0 = time.perf_counter()
      unroll_c = jax.jit(unroll).lower(policy_params, env_state, jax.random.PRNGKey(3)).compile()
      r["unroll_compile_s"] = time.perf_counter() - t0
      keys = iter(jax.random.split(jax.random.PRNGKey(4), 10_000))
      times = _timed_calls(lambda k: unroll_c(policy_params, env_state, k),
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
          env_state, data = unroll_c(policy_params, env_state, next(keys))
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
