"""Run configuration: a schema of every field, override strings and validation.

:func:`_schema` declares each field once -- default, meaning, choices and bounds, side by side
-- and :func:`base_config` is its defaults. Per-task defaults come from the task catalogue
(:mod:`deepcrl_core.tasks`) through :func:`paper_task_config`.

Config files under ``configs/`` define ``get_config(overrides: str = "")`` by calling
:func:`make_config` with their task's settings, so ``configs/humanoid.py:depth=64,width=512``
works with ``ml_collections.config_flags``. Overrides are comma-separated ``key=value`` pairs
where ``key`` is a dotted field (``network.width``) or a shortcut (:data:`SHORTCUTS`).
:func:`validate` reports every problem of a config at once, before anything compiles.
"""

from __future__ import annotations

import ast
import json
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import ml_collections

from deepcrl_core import tasks as tasks_lib

# Shortcut keys accepted in override strings.
SHORTCUTS: Dict[str, Sequence[str]] = {
    "depth": ("network.depth",),
    "actor_depth": ("network.actor_depth",),
    "critic_depth": ("network.critic_depth",),
    "width": ("network.width",),
    "batch": ("train.batch_size",),
    "batch_size": ("train.batch_size",),
    "env": ("env.name",),
    "eval_env": ("env.eval_name",),
    "seed": ("seed",),
    "num_envs": ("train.num_envs",),
    "impl": ("network.kernel_impl",),
    "remat": ("network.remat",),
    "env_steps": ("train.total_env_steps",),
    "epochs": ("train.num_epochs",),
    "her": ("her.enabled",),
}

LEARNING_RATE = 3e-4
SAMPLERS = ("transitions", "windows")
REMAT_POLICIES = ("none", "block", "nested")
PREFILL_POLICIES = ("actor", "random")

# The paper's tasks and their per-task defaults live in the task catalogue (deepcrl_core/tasks.py).
PAPER_ENV_STEPS = {name: t.env_steps for name, t in tasks_lib.TASKS.items()}


class ConfigError(Exception):
  """A config (or an override string) is invalid; the message lists every problem.

  Deliberately not a ValueError: ``ml_collections.config_flags`` rewraps ValueErrors raised by
  ``get_config`` into a traceback dump, while this one reaches the launcher intact.
  """

  def __init__(self, problems: Sequence[str]):
    self.problems = list(problems)
    super().__init__(format_problems(self.problems))


def format_problems(problems: Sequence[str]) -> str:
  if len(problems) == 1:
    return f"invalid config: {problems[0]}"
  return "invalid config:\n" + "\n".join(f"  - {p}" for p in problems)


class Field(NamedTuple):
  """One config field: its default, what it means, and what values it takes."""
  default: Any
  doc: str
  choices: Optional[Tuple[Any, ...]] = None
  minimum: Optional[float] = None          # inclusive
  positive: bool = False                   # > 0
  maximum_exclusive: Optional[float] = None


def _schema() -> Dict[str, Dict[str, Any]]:
  """The config schema, section by section: every field with its default, meaning and bounds.
  The defaults are the paper's CRL hyperparameters and pipeline, as in its code
  (github.com/wang-kevin3290/scaling-crl); FIDELITY.md lists what still differs."""
  from deepcrl_core.agents import AGENT_NAMES  # pylint: disable=g-import-not-at-top
  from deepcrl_core.envs.wrappers import RESET_MODES  # pylint: disable=g-import-not-at-top
  from deepcrl_core.networks import TANH_CORRECTIONS  # pylint: disable=g-import-not-at-top
  from deepcrl_core.energies import ENERGIES  # pylint: disable=g-import-not-at-top
  from deepcrl_core.networks import BLOCKS  # pylint: disable=g-import-not-at-top
  from deepcrl_kernels import IMPLS, VARIANTS  # pylint: disable=g-import-not-at-top
  F = Field
  return {
      "seed": F(0, "PRNG seed of the run"),
      "agent": F("crl", "learning algorithm (deepcrl_core.agents): crl (the paper's) | sac | "
                 "td3 | gcbc | gcsl; each reads its own section below", choices=AGENT_NAMES),
      "env": {
          "name": F("pointmass", "registered env to train on (deepcrl_core.envs)"),
          "eval_name": F("", "env to evaluate on ('' = env.name; the mazes' far-goal layouts)"),
          "episode_length": F(1000, "episode limit in control steps", positive=True),
          "kwargs": F({}, "env constructor arguments, checked by building the env model"),
          "reset_mode": F("first", "first: each env slot returns to its first start and goal "
                          "(published) | fresh: a new start and goal every episode",
                          choices=RESET_MODES),
      },
      "network": {
          "depth": F(4, "Dense layers inside residual blocks (a positive multiple of 4)"),
          "actor_depth": F(0, "actor depth (0 = network.depth)"),
          "critic_depth": F(0, "critic encoders' depth (0 = network.depth)"),
          "width": F(256, "hidden width", positive=True),
          "repr_dim": F(64, "size of phi(s, a) and psi(g)", positive=True),
          "remat": F("none", "none | block (each block) | nested (~sqrt(n) groups of blocks)",
                     choices=REMAT_POLICIES),
          "kernel_impl": F("auto", "auto | pallas | interpret | xla", choices=IMPLS),
          "matmul_dtype": F("float32", "float32 | bfloat16 (bf16 block matmuls, f32 master "
                            "weights and LayerNorm)", choices=("float32", "bfloat16")),
          "block": F("residual", "residual (published: Dense-LayerNorm-Swish blocks) | simba "
                     "(SimbaV2-style hyperspherical stream and weights, LERP; XLA only)",
                     choices=BLOCKS),
      },
      "loss": {
          "energy": F("l2", "critic energy: l2 | l2_sq | dot | cosine (fused kernel) | mrn | "
                      "iqe (quasimetrics -d(phi -> psi), XLA; deepcrl_core.energies)",
                      choices=ENERGIES),
          "mrn_components": F(1, "energy=mrn: groups of phi/psi averaged (1: Liu et al. 2023; "
                              "16: CMD-1's and the paper's mrn.py)", positive=True),
          "iqe_component_dim": F(16, "energy=iqe: entries per IQE component (torchqmet's "
                                 "default)", positive=True),
          "variant": F("forward", "InfoNCE direction", choices=VARIANTS),
          "logsumexp_penalty": F(0.1, "weight of the logsumexp^2 penalty", minimum=0),
          "target_entropy_scale": F(0.5, "target entropy = -scale * action_size"),
          "tanh_correction": F("published", "published: -log(1 - tanh(u)^2 + 1e-6) | exact",
                               choices=TANH_CORRECTIONS),
      },
      "optim": {
          "actor_lr": F(LEARNING_RATE, "Adam learning rate of the actor", positive=True),
          "critic_lr": F(LEARNING_RATE, "Adam learning rate of the critic", positive=True),
          "alpha_lr": F(LEARNING_RATE, "Adam learning rate of the entropy temperature",
                        positive=True),
      },
      "train": {
          "num_envs": F(512, "parallel training envs", positive=True),
          "unroll_length": F(62, "env steps per env per training step", positive=True),
          "sgd_steps": F(800, "gradient steps per training step (after each unroll)",
                         positive=True),
          "batch_size": F(512, "minibatch size", positive=True),
          "gamma": F(0.99, "discount of the goal-offset distribution, in (0, 1)",
                     positive=True, maximum_exclusive=1.0),
          "prefill_steps": F(1000, "env steps per env before training, rounded up to whole "
                             "unrolls (published: ceil(1000 / 62) = 17 unrolls)", minimum=0),
          "prefill_policy": F("actor", "actor (published: the initial stochastic actor) | "
                              "random", choices=PREFILL_POLICIES),
          "train_steps_per_epoch": F(10, "training steps per epoch (evaluation, logging and "
                                     "checkpoints happen between epochs)", positive=True),
          "total_env_steps": F(100_000_000, "env steps of the run", minimum=0),
          "num_epochs": F(0, "epochs of the run (0 = derive from total_env_steps)", minimum=0),
          "max_seconds": F(0.0, "stop after this wall-clock budget (0 = no limit)", minimum=0),
      },
      "replay": {
          "capacity": F(10_000, "time steps kept per env", positive=True),
          "sampling": F("windows", "windows (the published scheme) | transitions (i.i.d.)",
                        choices=SAMPLERS),
          "window_length": F(1000, "window length for sampling=windows", positive=True),
      },
      "eval": {
          "num_envs": F(128, "evaluation episodes", positive=True),
          "every": F(1, "evaluate every N epochs and after the last (0 = never)", minimum=0),
          "residual_norms": F(True, "at each evaluation, append the per-block residual branch "
                              "and stream norms of the actor and critic encoders to "
                              "RUN/residual_norms.csv (deepcrl_core.analysis)"),
      },
      "checkpoint": {
          "every": F(1, "epochs between checkpoints (0 = only at the end)", minimum=0),
          "keep": F(2, "complete checkpoints kept", positive=True),
          "include_replay": F(True, "exact resume needs the replay buffer and env states"),
      },
      "log": {
          "tensorboard": F(True, "write TensorBoard events to RUN/tb"),
          "print_every": F(1, "print an epoch line every N epochs", positive=True),
          "progress_every_s": F(30.0, "in-epoch progress line (with ETAs) at most this often; "
                                "0 = off (each epoch runs as one call)", minimum=0),
      },
      "distributed": {
          "num_devices": F(0, "devices in the 'data' mesh axis (0 = all)", minimum=0),
          "coordinator_address": F("", "'host:port' of process 0 for multi-host runs"),
          "num_processes": F(1, "processes of a multi-host run", positive=True),
          "process_id": F(0, "this process's index", minimum=0),
      },
      # Baselines (deepcrl_core.agents). Sources: JaxGCRL = github.com/MichalBortkiewicz/JaxGCRL
      # (jaxgcrl/agents/{sac,td3}; scripts/train.sh runs them with --discounting 0.99), SAC =
      # Haarnoja et al. 2018 (arXiv:1812.05905), TD3 = Fujimoto et al. 2018 (arXiv:1802.09477),
      # HER = Andrychowicz et al. 2017, GCSL = Ghosh et al. 2021.
      "her": {
          "enabled": F(True, "sac/td3: hindsight experience replay (relabelled future goals "
                       "mixed with the env's goals; reward = the env's success test on the next "
                       "state); shortcut her=false"),
          "ratio": F(0.8, "fraction of rows given a relabelled future goal (HER's 'future' "
                     "strategy with k = 4 -> 4/5); the rest keep the env's goal", minimum=0),
          "offsets": F("uniform", "future-goal offsets: uniform in 1..L (HER's 'future') | "
                       "geometric (P(d) ∝ train.gamma^d, CRL's)", choices=("uniform", "geometric")),
      },
      "sac": {
          "actor_lr": F(1e-4, "Adam lr of the actor (JaxGCRL 1e-4; SAC paper 3e-4)",
                        positive=True),
          "critic_lr": F(1e-4, "Adam lr of the twin critics (JaxGCRL 1e-4; SAC paper 3e-4)",
                         positive=True),
          "alpha_lr": F(3e-4, "Adam lr of log(alpha) (JaxGCRL and SAC paper 3e-4)",
                        positive=True),
          "discount": F(0.99, "TD discount (JaxGCRL's train.sh and SAC paper 0.99)",
                        positive=True, maximum_exclusive=1.0),
          "tau": F(0.005, "Polyak rate of the target critics (JaxGCRL and SAC paper)",
                   positive=True),
          "target_entropy_scale": F(0.5, "target entropy = -scale * action_size (JaxGCRL/brax "
                                    "0.5; SAC paper 1.0)"),
      },
      "td3": {
          "actor_lr": F(3e-4, "Adam lr of the actor (JaxGCRL 3e-4)", positive=True),
          "critic_lr": F(3e-4, "Adam lr of the twin critics (JaxGCRL 3e-4)", positive=True),
          "discount": F(0.99, "TD discount (JaxGCRL's train.sh and TD3 paper 0.99)",
                        positive=True, maximum_exclusive=1.0),
          "tau": F(0.005, "Polyak rate of the target actor and critics (JaxGCRL, TD3 paper)",
                   positive=True),
          "policy_delay": F(2, "gradient steps per actor and target update (JaxGCRL, TD3 "
                            "paper)", positive=True),
          "smoothing_noise": F(0.2, "std of the target policy smoothing noise (JaxGCRL, TD3 "
                               "paper)", minimum=0),
          "smoothing_clip": F(0.5, "clip of the smoothing noise (JaxGCRL, TD3 paper)",
                              minimum=0),
          "exploration_noise": F(0.4, "std of the Gaussian exploration noise (JaxGCRL 0.4; TD3 "
                                 "paper 0.1)", minimum=0),
          "exploration_clip": F(0.5, "clip of the exploration noise (JaxGCRL clips it at its "
                                "noise_clip 0.5)", minimum=0),
      },
      "gcbc": {
          "lr": F(LEARNING_RATE, "Adam lr of the policy (CRL's 3e-4)", positive=True),
      },
      "gcsl": {
          "lr": F(LEARNING_RATE, "Adam lr of the policy (CRL's 3e-4)", positive=True),
      },
      "profile": {
          "trace_epoch": F(-1, "capture a jax.profiler trace of this epoch (-1 = off)"),
          "trace_steps": F(0, ">0: trace only this many training steps (on the side) at "
                           "trace_epoch (or the first epoch when it is -1)", minimum=0),
          "timing_split_every": F(0, ">0: time collect / update on the side every N epochs "
                                  "-> time/collect_s, time/update_s in metrics.csv", minimum=0),
      },
  }


def _fields(schema, prefix=""):
  for k, v in schema.items():
    if isinstance(v, dict):
      yield from _fields(v, f"{prefix}{k}.")
    else:
      yield prefix + k, v


def schema_fields() -> Dict[str, Field]:
  """``{"train.batch_size": Field(...), ...}``: every config field, in declaration order."""
  return dict(_fields(_schema()))


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every task (the schema's defaults)."""
  def build(schema):
    c = ml_collections.ConfigDict()
    for k, v in schema.items():
      c[k] = build(v) if isinstance(v, dict) else (
          ml_collections.ConfigDict(v.default) if isinstance(v.default, dict) else v.default)
    return c
  return build(_schema())


def _field_problems(name: str, field: Field, value) -> List[str]:
  """What is wrong with ``value`` for ``field`` (type, choices, bounds)."""
  default = field.default
  if isinstance(default, dict):
    return []
  if isinstance(default, bool):
    ok_type = isinstance(value, bool)
  elif isinstance(default, int):
    ok_type = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(default, float):
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
  else:
    ok_type = isinstance(value, type(default))
  if not ok_type:
    return [f"{name} must be a {type(default).__name__} ({field.doc}), got {value!r}"]
  if field.choices is not None and value not in field.choices:
    return [f"{name} must be one of {tuple(field.choices)}, got {value!r}"]
  if field.positive and not value > 0:
    if field.maximum_exclusive is not None:
      return [f"{name} must be in (0, {field.maximum_exclusive:g}), got {value!r}"]
    return [f"{name} must be positive, got {value!r}"]
  if field.maximum_exclusive is not None and not value < field.maximum_exclusive:
    return [f"{name} must be in (0, {field.maximum_exclusive:g}), got {value!r}"]
  if field.minimum is not None and value < field.minimum:
    return [f"{name} must be >= {field.minimum:g}, got {value!r}"]
  return []


def parse_overrides(overrides: str) -> List[tuple]:
  """``"a=1,b.c=x"`` -> ``[("a", 1), ("b.c", "x")]``; raises ConfigError listing bad items."""
  pairs, problems = [], []
  text = (overrides or "").strip()
  if not text:
    return pairs
  for item in _split_top_level(text):
    item = item.strip()
    if not item:
      problems.append(f"malformed override string {overrides!r}: empty item")
      continue
    if "=" not in item:
      problems.append(f"malformed override {item!r}: expected key=value")
      continue
    key, value = item.split("=", 1)
    key = key.strip()
    if not key or not all(part.isidentifier() for part in key.split(".")):
      problems.append(f"malformed override {item!r}: bad key {key!r}")
      continue
    pairs.append((key, _parse_value(value.strip())))
  if problems:
    raise ConfigError(problems)
  return pairs


def _split_top_level(text: str) -> List[str]:
  """Splits on commas that are not inside brackets or quotes."""
  items, depth, quote, start = [], 0, "", 0
  for i, ch in enumerate(text):
    if quote:
      if ch == quote:
        quote = ""
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  items.append(text[start:])
  return items


def _parse_value(value: str) -> Any:
  lowered = value.lower()
  if lowered in ("true", "false"):
    return lowered == "true"
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def _lookup(config: ml_collections.ConfigDict, path: str):
  parent = config
  parts = path.split(".")
  for part in parts[:-1]:
    if not isinstance(parent, ml_collections.ConfigDict) or part not in parent:
      return None, parts[-1]
    parent = parent[part]
  if not isinstance(parent, ml_collections.ConfigDict) or parts[-1] not in parent:
    return None, parts[-1]
  return parent, parts[-1]


def apply_overrides(config: ml_collections.ConfigDict, overrides: str) -> ml_collections.ConfigDict:
  """Applies an override string in place; raises ConfigError listing every bad key/value."""
  problems = []
  for key, value in parse_overrides(overrides):
    paths = SHORTCUTS.get(key, (key,))
    for path in paths:
      parent, leaf = _lookup(config, path)
      if parent is None and path.startswith("env.kwargs.") and path.count(".") == 2:
        # env constructor arguments are open-ended (checked by validation_problems)
        config.env.kwargs[leaf] = value
        continue
      if parent is None:
        problems.append(f"unknown override key {key!r} (shortcuts: {', '.join(sorted(SHORTCUTS))}; "
                        "or a dotted field such as network.width)")
        continue
      if isinstance(parent[leaf], ml_collections.ConfigDict):
        problems.append(f"override key {key!r} names a group, not a field")
        continue
      if path == "network.remat" and isinstance(value, bool):  # remat=true -> per block
        value = "block" if value else "none"
      try:
        parent[leaf] = _coerce(parent[leaf], value)
      except (TypeError, ValueError) as e:
        problems.append(f"bad value for {key!r}: {value!r} ({e})")
  if problems:
    raise ConfigError(problems)
  return config


def _coerce(current: Any, value: Any) -> Any:
  if isinstance(current, bool):
    if isinstance(value, bool):
      return value
    if value in (0, 1):
      return bool(value)
    raise TypeError("expected true/false")
  if isinstance(current, int) and not isinstance(current, bool):
    if isinstance(value, bool) or not (isinstance(value, int) or
                                       (isinstance(value, float) and value.is_integer())):
      raise TypeError("expected an integer")
    return int(value)
  if isinstance(current, float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError("expected a number")
    return float(value)
  if isinstance(current, str):
    return str(value)
  return value


def make_config(overrides: str = "", **task_settings) -> ml_collections.ConfigDict:
  """Base config + a task's settings (``network__width=...`` for ``network.width``) + user
  overrides. Raises ConfigError when an override is malformed or unknown (listing the config's
  other problems too); otherwise returns the config unvalidated: call :func:`validate` once all
  overrides (including ``--config.x=y`` flags) are in.
  """
  config = base_config()
  for key, value in task_settings.items():
    path = key.replace("__", ".")
    if path.startswith("env.kwargs.") and path.count(".") == 2:
      config.env.kwargs[path.rsplit(".", 1)[1]] = value  # open-ended, as in overrides
      continue
    parent, leaf = _lookup(config, path)
    if parent is None:
      raise KeyError(f"task setting {key!r} is not a config field")
    parent[leaf] = value
  try:
    apply_overrides(config, overrides)
  except ConfigError as e:
    # Report the config's other problems in the same message, so one run shows them all.
    raise ConfigError(e.problems + validation_problems(config)) from None
  return config


def actor_depth(config) -> int:
  return config.network.actor_depth or config.network.depth


def critic_depth(config) -> int:
  return config.network.critic_depth or config.network.depth


def eval_env_name(config) -> str:
  return config.env.eval_name or config.env.name


def num_epochs(config) -> int:
  """Epochs to run: ``train.num_epochs`` or enough to reach ``train.total_env_steps``."""
  if config.train.num_epochs > 0:
    return int(config.train.num_epochs)
  per_epoch = env_steps_per_epoch(config)
  prefill = prefill_steps_per_env(config) * config.train.num_envs
  return max(1, -(-(config.train.total_env_steps - prefill) // per_epoch))


def prefill_steps_per_env(config) -> int:
  """Env steps per env collected before training: ``train.prefill_steps`` rounded up to whole
  unrolls of ``train.unroll_length``, as the published code does (1000 -> 17 x 62 = 1054)."""
  t = config.train
  if t.prefill_steps <= 0 or t.unroll_length <= 0:
    return max(0, t.prefill_steps)
  return -(-t.prefill_steps // t.unroll_length) * t.unroll_length


def env_steps_per_epoch(config) -> int:
  t = config.train
  return t.num_envs * t.unroll_length * t.train_steps_per_epoch


def validation_problems(config) -> List[str]:
  """Every problem with ``config`` (empty when valid): each field against the schema, then
  the checks across fields. Compiles nothing and starts no JAX backend (env models are built
  in C MuJoCo only), so it may run before ``jax.distributed.initialize``."""
  from deepcrl_core import envs  # pylint: disable=g-import-not-at-top
  problems, bad = [], set()
  for name, field in schema_fields().items():
    section, _, key = name.rpartition(".")
    holder = config
    for part in filter(None, section.split(".")):
      holder = holder[part]
    found = _field_problems(name, field, holder[key])
    if found:
      problems += found
      bad.add(name)

  def fine(*names):  # the checks across fields only look at fields that passed on their own
    return not bad.intersection(names)

  for field in ("name", "eval_name"):
    name = config.env[field]
    if field == "eval_name" and not name:
      continue
    if not envs.is_registered(name):
      problems.append(f"env.{field}: {envs.unknown_env_message(name)}")
    elif len(config.env.kwargs):
      try:  # builds the model only (no compile): bad env arguments are named here
        envs.make(name, **config.env.kwargs.to_dict())
      except (TypeError, ValueError) as e:
        problems.append(f"env.kwargs {config.env.kwargs.to_dict()} for env {name!r}: {e}")
  problems += _agent_problems(config, bad)
  net = config.network
  from deepcrl_core import energies  # pylint: disable=g-import-not-at-top
  if fine("loss.energy", "network.repr_dim", "loss.mrn_components", "loss.iqe_component_dim"):
    why = energies.check_grouping(config.loss.energy, net.repr_dim, config.loss.mrn_components,
                                  config.loss.iqe_component_dim)
    if why:
      problems.append(why)
  if (fine("network.block", "network.kernel_impl") and net.block == "simba" and
      net.kernel_impl in ("pallas", "interpret")):
    problems.append(f"network.block=simba runs on XLA only: network.kernel_impl="
                    f"{net.kernel_impl!r} is not supported (use xla or auto)")
  for key in ("depth", "actor_depth", "critic_depth"):
    d = net[key]
    if not fine(f"network.{key}") or (key != "depth" and d == 0):
      continue
    if d <= 0 or d % 4:
      problems.append(f"network.{key} must be a positive multiple of 4 (depth counts the Dense "
                      f"layers inside residual blocks of 4), got {d!r}")
  d = config.distributed
  if fine("distributed.process_id", "distributed.num_processes") and not (
      d.process_id < d.num_processes):
    problems.append(f"distributed.process_id ({d.process_id}) must be in [0, num_processes = "
                    f"{d.num_processes})")
  if d.num_processes > 1 and not d.coordinator_address:
    problems.append("distributed.coordinator_address is required when num_processes > 1")
  # Replay geometry: windows must fit in what the buffer holds, and a training step's batches
  # must fit in what is sampled.
  rp, tr = config.replay, config.train
  if fine("replay.window_length", "replay.capacity") and rp.window_length > rp.capacity:
    problems.append(f"replay.window_length ({rp.window_length}) exceeds replay.capacity "
                    f"({rp.capacity} steps per env)")
  if (fine("replay.sampling", "replay.window_length", "train.sgd_steps", "train.batch_size",
           "train.num_envs") and rp.sampling == "windows" and rp.window_length > 1 and
      tr.sgd_steps * tr.batch_size > tr.num_envs * (rp.window_length - 1)):
    problems.append(f"replay.sampling=windows draws one window per env: train.sgd_steps x "
                    f"train.batch_size ({tr.sgd_steps * tr.batch_size}) exceeds the "
                    f"train.num_envs x (replay.window_length - 1) = "
                    f"{tr.num_envs * (rp.window_length - 1)} transitions of a training step; "
                    f"raise train.num_envs to at least "
                    f"{-(-tr.sgd_steps * tr.batch_size // (rp.window_length - 1))}, lower "
                    f"train.sgd_steps to at most "
                    f"{tr.num_envs * (rp.window_length - 1) // tr.batch_size}, or use "
                    f"replay.sampling=transitions")
  if (fine("replay.window_length", "train.prefill_steps", "train.unroll_length") and
      rp.window_length > prefill_steps_per_env(config) + tr.unroll_length):
    filled = prefill_steps_per_env(config) + tr.unroll_length
    problems.append(f"replay.window_length ({rp.window_length}) exceeds the steps per env stored "
                    f"before the first update (train.prefill_steps + train.unroll_length = "
                    f"{filled}); raise prefill_steps or shorten the window")
  if (fine("train.batch_size", "train.num_envs", "replay.capacity") and
      tr.batch_size > tr.num_envs * rp.capacity):
    problems.append(f"train.batch_size ({tr.batch_size}) is larger than the replay buffer can hold "
                    f"(train.num_envs x replay.capacity = {tr.num_envs * rp.capacity})")
  return problems


def _agent_problems(config, bad) -> List[str]:
  """What is wrong with the agent's settings: ``her.*`` changed for an agent that does not mix
  hindsight goals (crl, gcbc and gcsl always train on relabelled future goals)."""
  from deepcrl_core.agents import HER_AGENTS  # pylint: disable=g-import-not-at-top
  if "agent" in bad:
    return []
  problems = []
  if config.agent not in HER_AGENTS:
    defaults = _schema()["her"]
    for key, field in defaults.items():
      if config.her[key] != field.default:
        problems.append(f"her.{key}={config.her[key]!r} is set, but agent={config.agent!r} has "
                        f"no hindsight relabelling switch (her.* applies to "
                        f"{', '.join(HER_AGENTS)}; {config.agent} always trains on relabelled "
                        f"future goals)")
  if "her.ratio" not in bad and config.her.ratio > 1:
    problems.append(f"her.ratio must be in [0, 1], got {config.her.ratio!r}")
  return problems


def validate_for_devices(config, num_devices: int) -> None:
  """Raises ConfigError unless the sharded sizes divide evenly over ``num_devices``."""
  problems = []
  for key, value in (("train.num_envs", config.train.num_envs),
                     ("train.batch_size", config.train.batch_size),
                     ("eval.num_envs", config.eval.num_envs)):
    if value % num_devices:
      problems.append(f"{key} ({value}) must be divisible by the {num_devices} devices of the "
                      f"data mesh")
  if problems:
    raise ConfigError(problems)


def validate(config) -> None:
  """Raises ConfigError listing every problem of ``config``."""
  problems = validation_problems(config)
  if problems:
    raise ConfigError(problems)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config of ``"path/to/file.py[:k=v,...]"`` (what ``--config=`` takes): the file's
  ``get_config(overrides)``. Raises ConfigError for a missing file or bad overrides."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path, _, overrides = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError([f"config file {path!r} does not exist"])
  module_spec = importlib.util.spec_from_file_location(
      "deepcrl_config_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(overrides)


def from_resolved_dict(d: Dict[str, Any]) -> ml_collections.ConfigDict:
  """The config a run directory or checkpoint stored (:func:`resolved_dict`), on top of
  :func:`base_config` so fields added since then take their defaults. Raises ConfigError naming
  every stored field this version does not know."""
  config = base_config()
  unknown = []

  def overlay(target, values, prefix):
    for k, v in values.items():
      if k not in target:
        unknown.append(prefix + k)
      elif isinstance(v, dict) and k != "kwargs":
        overlay(target[k], v, f"{prefix}{k}.")
      elif k == "kwargs":
        target[k] = ml_collections.ConfigDict(v)
      else:
        target[k] = v

  overlay(config, d, "")
  if unknown:
    raise ConfigError([f"stored config field {k!r} is unknown to this version" for k in unknown])
  return config


def stored_differences(stored: Dict, config,
                       ignore: Sequence[str] = ()) -> List[Tuple[str, Any, Any]]:
  """``(field, stored value, config's value)`` for every field of ``stored`` (a run's
  ``config.json``: :func:`resolved_dict` when the run began) whose value ``config`` resolves
  differently, dotted field names in ``ignore`` aside. ``env.kwargs`` compares as one value: an
  env argument the run did not set and ``config`` does (e.g. a task default added since) counts."""
  now = json.loads(json.dumps(resolved_dict(config)))
  out = []

  def walk(a, b, prefix):
    for k in sorted(set(a) & set(b)):
      name = prefix + k
      if name in ignore:
        continue
      if isinstance(a[k], dict) and isinstance(b[k], dict) and k != "kwargs":
        walk(a[k], b[k], name + ".")
      elif a[k] != b[k]:
        out.append((name, a[k], b[k]))

  walk(stored, now, "")
  return out


def resolved_dict(config) -> Dict[str, Any]:
  """Plain dict of ``config`` with derived values filled in (for run directories)."""
  d = config.to_dict()
  d["network"]["actor_depth"] = actor_depth(config)
  d["network"]["critic_depth"] = critic_depth(config)
  d["env"]["eval_name"] = eval_env_name(config)
  d["train"]["num_epochs"] = num_epochs(config)
  return d


def paper_task_config(task: str, overrides: str = "", **task_settings):
  """The paper's setup for ``task`` (the paper and github.com/wang-kevin3290/scaling-crl):
  512 envs x 62-step unrolls, 800 SGD steps of batch 512 per unroll (1 gradient step per ~40
  env steps), width 256, depth 4 (``depth=...`` to scale), Adam 3e-4, gamma 0.99, 10k steps per
  env of replay, 17 unrolls of prefill with the initial actor, first-state resets, one window
  per env per training step, the bounded tanh correction, 1000-step episodes, evaluation on 128
  envs (far-goal layout for mazes) after every epoch of the published length (31 training steps,
  ~1M env steps, for the 100M-step tasks); ``epochs=100`` gives the published run length.
  """
  t = tasks_lib.get(task)
  settings = dict(
      env__name=task,
      env__eval_name=t.eval_env,
      env__episode_length=t.episode_length,
      network__depth=4, network__width=256, network__repr_dim=64,
      train__num_envs=512, train__unroll_length=62, train__sgd_steps=800, train__batch_size=512,
      train__prefill_steps=1000,
      train__train_steps_per_epoch=published_train_steps_per_epoch(t.env_steps),
      train__total_env_steps=t.env_steps,
      replay__capacity=10_000, replay__window_length=1000, eval__num_envs=128,
      # the published pipeline (also the base defaults; FIDELITY.md lists the alternatives)
      env__reset_mode="first", replay__sampling="windows", train__prefill_policy="actor",
      loss__tanh_correction="published",
  )
  settings.update({f"env__kwargs__{k}": v for k, v in t.env_kwargs.items()})
  settings.update(task_settings)
  return make_config(overrides, **settings)


# The point-mass configs' settings (configs/pointmass*.py): CPU-sized, and deepcrl's own pipeline
# choices rather than the published ones (a fresh start and goal every episode, i.i.d.
# transitions, random-action prefill, the exact tanh log-density; FIDELITY.md).
POINTMASS_SETTINGS = dict(
    env__name="pointmass", env__episode_length=50,
    network__depth=4, network__width=64,
    train__num_envs=128, train__unroll_length=20, train__sgd_steps=16, train__batch_size=256,
    train__prefill_steps=100, train__train_steps_per_epoch=25,
    train__total_env_steps=1_500_000,
    replay__capacity=1000, replay__window_length=50, eval__num_envs=128, checkpoint__every=5,
    env__reset_mode="fresh", replay__sampling="transitions", train__prefill_policy="random",
    loss__tanh_correction="exact",
)


def pointmass_config(overrides: str = "", **settings):
  """A point-mass config: :data:`POINTMASS_SETTINGS` (the quick start) updated by ``settings``
  (e.g. a maze's env, episode length and budget), then ``overrides``."""
  return make_config(overrides, **{**POINTMASS_SETTINGS, **settings})


def published_train_steps_per_epoch(total_env_steps: int, num_epochs: int = 100,
                                    num_envs: int = 512, unroll_length: int = 62,
                                    min_replay_size: int = 1000) -> int:
  """Training steps per epoch of the published code: ``(total - min_replay_size * num_envs)
  // (num_epochs * num_envs * unroll_length)`` with its 100 epochs (100M -> 31, 400M -> 125)."""
  return max(1, (total_env_steps - min_replay_size * num_envs) //
             (num_epochs * num_envs * unroll_length))


def get_config_for(task_settings: Optional[dict] = None):
  """Returns a ``get_config(overrides)`` for a config file with ``task_settings``."""
  settings = dict(task_settings or {})

  def get_config(overrides: str = ""):
    return make_config(overrides, **settings)

  return get_config
