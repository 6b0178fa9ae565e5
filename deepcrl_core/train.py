"""The training loop: prefill, jitted epochs, evaluation, logging, checkpoints, resume.

One epoch is a single jitted call: ``lax.scan`` over ``train.train_steps_per_epoch`` training
steps, each = unroll ``train.unroll_length`` env steps on every env -> insert into replay ->
``train.sgd_steps`` x (sample + relabel a minibatch -> actor/alpha/critic update). Python only
evaluates, logs and checkpoints between epochs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl_core import agent as agent_lib
from deepcrl_core import checkpoint as ckpt
from deepcrl_core import config as config_lib
from deepcrl_core import distributed
from deepcrl_core import envs
from deepcrl_core import logging as log_lib
from deepcrl_core import losses as losses_lib
from deepcrl_core import networks as nets
from deepcrl_core import profile_hooks
from deepcrl_core import replay


class TrainingDiverged(RuntimeError):
  """A loss became NaN/inf; the run stopped keeping its last good checkpoint."""


class RunState(NamedTuple):
  training: agent_lib.TrainingState
  env_state: envs.State
  replay: replay.ReplayState


@dataclasses.dataclass
class Components:
  config: Any
  env: envs.Env             # raw training env
  train_env: envs.Env       # batched, auto-resetting
  eval_env: envs.Env        # batched, episode-limited
  agent: agent_lib.Agent
  mesh: Any                 # jax.sharding.Mesh with axis "data"
  _memo: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def spec(self) -> nets.NetworkSpec:
    return self.agent.spec


def build(config) -> Components:
  """Validates ``config`` and builds envs, networks, the agent and the device mesh (nothing is
  compiled)."""
  config_lib.validate(config)
  distributed.initialize(config)
  mesh = distributed.make_mesh(config.distributed.num_devices)
  config_lib.validate_for_devices(config, mesh.size)
  kwargs = config.env.kwargs.to_dict() if hasattr(config.env.kwargs, "to_dict") else dict(
      config.env.kwargs)
  env = envs.make(config.env.name, **kwargs)
  eval_env = envs.make(config_lib.eval_env_name(config), **kwargs)
  spec = nets.NetworkSpec(
      state_size=env.state_size, goal_size=env.goal_size, action_size=env.action_size,
      actor_depth=config_lib.actor_depth(config), critic_depth=config_lib.critic_depth(config),
      width=config.network.width, repr_dim=config.network.repr_dim,
      kernel_impl=config.network.kernel_impl, remat=config.network.remat,
      matmul_dtype=config.network.matmul_dtype)
  loss_cfg = losses_lib.LossConfig(
      energy=config.loss.energy, variant=config.loss.variant,
      logsumexp_penalty=config.loss.logsumexp_penalty,
      target_entropy=-config.loss.target_entropy_scale * env.action_size,
      kernel_impl=config.network.kernel_impl)
  agent = agent_lib.Agent(nets.make_networks(spec), loss_cfg, config.optim.actor_lr,
                          config.optim.critic_lr, config.optim.alpha_lr)
  return Components(
      config=config, env=env,
      train_env=envs.wrap_for_training(env, config.env.episode_length),
      eval_env=envs.wrap_for_eval(eval_env, config.env.episode_length), agent=agent, mesh=mesh)


def _to_transitions(batch: replay.Relabelled, state_size: int) -> losses_lib.Transitions:
  return losses_lib.Transitions(state=batch.obs[:, :state_size], action=batch.action,
                                goal=batch.obs[:, state_size:])


def make_train_step(c: Components) -> Callable:
  """``(RunState) -> (RunState, metrics)`` for one training step (unroll + SGD steps)."""
  cfg = c.config
  t = cfg.train
  state_size, goal_idx = c.env.state_size, c.env.goal_indices

  def sgd_steps(ts, buf, key):
    if cfg.replay.sampling == "windows":
      # The published scheme: windows -> relabel within each -> shuffle -> minibatches.
      w = cfg.replay.window_length
      needed = t.sgd_steps * t.batch_size
      k_win, k_rel, k_perm = jax.random.split(key, 3)
      windows = replay.sample_windows(buf, k_win, -(-needed // w), w)
      flat = replay.relabel_windows(windows, k_rel, t.gamma, goal_idx, state_size)
      order = jax.random.permutation(k_perm, flat.obs.shape[0])[:needed]
      batches = jax.tree.map(
          lambda x: x[order].reshape((t.sgd_steps, t.batch_size) + x.shape[1:]), flat)
      return jax.lax.scan(
          lambda ts, b: c.agent.sgd_step(
              ts, distributed.constrain_batch(_to_transitions(b, state_size), c.mesh)),
          ts, batches)

    def one(ts, k):
      batch = replay.sample(buf, k, t.batch_size, t.gamma, goal_idx, state_size)
      return c.agent.sgd_step(ts, distributed.constrain_batch(
          _to_transitions(batch, state_size), c.mesh))
    return jax.lax.scan(one, ts, jax.random.split(key, t.sgd_steps))

  def train_step(run: RunState):
    key, k_collect, k_sample = jax.random.split(run.training.key, 3)
    ts = run.training._replace(key=key)
    env_state, unroll = agent_lib.collect(c.agent, c.train_env, ts.actor_params, run.env_state,
                                          k_collect, t.unroll_length)
    buf = replay.insert(run.replay, unroll)
    ts, metrics = sgd_steps(ts, buf, k_sample)
    return RunState(ts, env_state, buf), jax.tree.map(jnp.mean, metrics)

  train_step.update = sgd_steps  # (ts, replay, key) -> (ts, metrics); timed alone by profile_hooks
  return train_step


def make_epoch_fn(c: Components) -> Callable:
  train_step = make_train_step(c)

  def epoch(run: RunState):
    def body(run, _):
      return train_step(run)
    run, metrics = jax.lax.scan(body, run, None, length=c.config.train.train_steps_per_epoch)
    return run, jax.tree.map(jnp.mean, metrics)

  shardings = run_state_shardings(c)
  return jax.jit(epoch, donate_argnums=0, in_shardings=(shardings,),
                 out_shardings=(shardings, distributed.replicated(c.mesh)))


def _run_state_shapes(c: Components):
  """Shapes/dtypes of the run state (traced once per Components: it traces env and networks)."""
  if "shapes" not in c._memo:
    c._memo["shapes"] = jax.eval_shape(lambda: _init_run_state(c, 0))
  return c._memo["shapes"]


def run_state_shardings(c: Components):
  """Params/optimiser state replicated; env states sharded over envs (axis 0); replay sharded
  over envs (axis 1 of its time-major arrays)."""
  shapes = _run_state_shapes(c)
  rep_ = distributed.replicated(c.mesh)
  return RunState(
      training=jax.tree.map(lambda _: rep_, shapes.training),
      env_state=distributed.env_sharding_tree(shapes.env_state, c.mesh, axis=0),
      replay=replay.ReplayState(
          obs=distributed.batch_sharded(c.mesh, 1), action=distributed.batch_sharded(c.mesh, 1),
          traj_id=distributed.batch_sharded(c.mesh, 1), insert_pos=rep_, size=rep_))


def _init_run_state(c: Components, seed: int) -> RunState:
  cfg = c.config
  key = jax.random.PRNGKey(seed)
  k_agent, k_env = jax.random.split(key)
  training = c.agent.init(k_agent)
  env_state = c.train_env.reset(jax.random.split(k_env, cfg.train.num_envs))
  buf = replay.init(cfg.replay.capacity, cfg.train.num_envs, c.env.observation_size,
                    c.env.action_size)
  return RunState(training, env_state, buf)


def init_run_state(c: Components, seed: int) -> RunState:
  """Fresh parameters, reset envs and an empty replay buffer (no prefill yet), created in
  place with their shardings."""
  return jax.jit(lambda: _init_run_state(c, seed), out_shardings=run_state_shardings(c))()


def prefill(c: Components, run: RunState) -> RunState:
  """Fills replay with ``train.prefill_steps`` random-action steps per env."""
  steps = c.config.train.prefill_steps
  if steps == 0:
    return run

  def fill(run):
    key, k = jax.random.split(run.training.key)
    env_state, unroll = agent_lib.collect(c.agent, c.train_env, None, run.env_state, k, steps,
                                          random_actions=True)
    return RunState(run.training._replace(key=key), env_state, replay.insert(run.replay, unroll))

  shardings = run_state_shardings(c)
  return jax.jit(fill, in_shardings=(shardings,), out_shardings=shardings,
                 donate_argnums=0)(run)


def make_eval_fn(c: Components) -> Callable:
  cfg = c.config

  def run_eval(actor_params, key):
    return agent_lib.evaluate(c.agent, c.eval_env, actor_params, key, cfg.eval.num_envs,
                              cfg.env.episode_length,
                              constrain=lambda t: distributed.constrain_batch(t, c.mesh))

  rep_ = distributed.replicated(c.mesh)
  return jax.jit(run_eval, in_shardings=(rep_, rep_), out_shardings=rep_)


def _finite(row: Dict[str, float], keys) -> List[str]:
  return [k for k in keys if k in row and not math.isfinite(row[k])]


LOSS_KEYS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "logsumexp")


def train(config, workdir: str, *, resume: bool = False,
          log_fn: Callable[[str], None] = print,
          stop_after_epochs: Optional[int] = None) -> List[Dict[str, float]]:
  """Trains per ``config`` writing into ``workdir``; returns the metrics rows of this call.

  ``stop_after_epochs`` ends this call after that many epochs (as if killed), leaving a
  checkpoint to ``resume`` from. Raises TrainingDiverged on NaN/inf losses.
  """
  c = build(config)
  cfg = c.config
  main_process = distributed.is_main_process()
  if not main_process:  # one process writes the run directory and prints
    log_fn = lambda s: None
  n_epochs = config_lib.num_epochs(cfg)
  os.makedirs(workdir, exist_ok=True)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  per_epoch_steps = config_lib.env_steps_per_epoch(cfg)
  prefill_env_steps = cfg.train.prefill_steps * cfg.train.num_envs
  include_replay = cfg.checkpoint.include_replay

  t_start = time.time()
  run = init_run_state(c, cfg.seed)
  start_epoch = 0
  last = ckpt.latest_step(ckpt_dir) if resume else None
  if resume and last is None:
    log_fn(f"--resume: no checkpoint in {ckpt_dir}; starting from scratch")
  if last is not None:
    # Restores host arrays onto this run's mesh, whatever device count wrote them.
    shapes, shardings = _run_state_shapes(c), run_state_shardings(c)
    keys = ("training", "env_state", "replay") if include_replay else ("training", "env_state")
    tree, meta = ckpt.load(ckpt.path_for(ckpt_dir, last),
                           {k: getattr(shapes, k) for k in keys})
    tree = {k: distributed.from_host(tree[k], getattr(shardings, k)) for k in keys}
    run = RunState(tree["training"], tree["env_state"], tree.get("replay", run.replay))
    if not include_replay:
      run = prefill(c, run)
    start_epoch = int(meta["epoch"])
    log_fn(f"resumed from {ckpt.path_for(ckpt_dir, last)} (epoch {start_epoch})")
  else:
    if main_process:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config_lib.resolved_dict(cfg), f, indent=2, sort_keys=True)
    run = prefill(c, run)

  csv_writer = log_lib.MetricsCSV(os.path.join(workdir, "metrics.csv"))
  if start_epoch > 0 and main_process:
    csv_writer.truncate_after(start_epoch)
  tb = (log_lib.TensorBoard(os.path.join(workdir, "tb"))
        if cfg.log.tensorboard and main_process else None)

  epoch_fn = make_epoch_fn(c)
  t0 = time.time()
  compiled = epoch_fn.lower(run).compile()
  epoch_compile_s = time.time() - t0
  eval_key = jax.random.PRNGKey(cfg.seed + 1)
  eval_fn = (make_eval_fn(c).lower(run.training.actor_params, eval_key).compile()
             if cfg.eval.every else None)
  # Processes compile at different speeds; meet before the first collective so none times out.
  distributed.barrier("deepcrl_compiled")
  log_fn(f"{cfg.env.name}: actor depth {c.spec.actor_depth}, critic depth {c.spec.critic_depth},"
         f" width {c.spec.width}, params actor {nets.param_count(run.training.actor_params):,} "
         f"critic {nets.param_count(run.training.critic_params):,}; epoch compiled in "
         f"{epoch_compile_s:.1f}s; {n_epochs} epochs of {per_epoch_steps:,} env steps")
  # Profiling hooks (profile_hooks.py): measured on the side, the run itself is unchanged.
  prof = cfg.profile
  side = (profile_hooks.SideProfiler(c, make_train_step)
          if prof.timing_split_every > 0 or prof.trace_steps > 0 else None)
  trace_epoch = prof.trace_epoch if prof.trace_epoch > 0 or not prof.trace_steps else start_epoch + 1

  rows = []
  epochs_this_call = 0
  try:
    for epoch in range(start_epoch + 1, n_epochs + 1):
      tracing = epoch == trace_epoch and not prof.trace_steps
      if epoch == trace_epoch and prof.trace_steps > 0:
        side.trace(run, prof.trace_steps, os.path.join(workdir, "profile"))
      split = (side.timing_split(run) if prof.timing_split_every > 0 and
               (epoch - start_epoch - 1) % prof.timing_split_every == 0 else {})
      if tracing:
        jax.profiler.start_trace(os.path.join(workdir, "profile"))
      t_epoch = time.time()
      run, metrics = compiled(run)
      metrics = {k: float(v) for k, v in distributed.to_host(metrics).items()}
      epoch_s = time.time() - t_epoch
      if tracing:
        jax.profiler.stop_trace()
      row = {"epoch": epoch, "env_steps": prefill_env_steps + epoch * per_epoch_steps,
             "grad_steps": int(distributed.to_host(run.training.grad_steps)),
             "sps": per_epoch_steps / epoch_s,
             "time/epoch_s": epoch_s, **split, **metrics}
      if cfg.eval.every and (epoch % cfg.eval.every == 0 or epoch == n_epochs):
        t_eval = time.time()
        ev = distributed.to_host(
            eval_fn(run.training.actor_params, jax.random.fold_in(eval_key, epoch)))
        row.update({f"eval/{k}": float(v) for k, v in ev.items()})
        row["time/eval_s"] = time.time() - t_eval
      row["wall_s"] = time.time() - t_start
      bad = _finite(row, LOSS_KEYS)
      if bad:
        if main_process:
          csv_writer.write(row)
        good = ckpt.latest_step(ckpt_dir)
        where = (f"last good checkpoint: {ckpt.path_for(ckpt_dir, good)}" if good is not None
                 else "no checkpoint was written before this")
        raise TrainingDiverged(
            f"non-finite {', '.join(bad)} at epoch {epoch} (env step {row['env_steps']:,}); "
            f"stopped without checkpointing this state; {where}")
      out_of_time = cfg.train.max_seconds > 0 and row["wall_s"] >= cfg.train.max_seconds
      epochs_this_call += 1
      stopping = (epoch == n_epochs or out_of_time or
                  (stop_after_epochs is not None and epochs_this_call >= stop_after_epochs))
      if (cfg.checkpoint.every and epoch % cfg.checkpoint.every == 0) or stopping:
        tree = {"training": run.training, "env_state": run.env_state}
        if include_replay:
          tree["replay"] = run.replay
        tree = distributed.to_host(tree)  # a collective when several processes hold shards
        if main_process:
          ckpt.save(ckpt_dir, epoch, tree, {"epoch": epoch, "env_steps": row["env_steps"]},
                    keep=cfg.checkpoint.keep)
      if main_process:
        csv_writer.write(row)
      if tb is not None:
        tb.write(row["env_steps"], row)
      if epoch % cfg.log.print_every == 0 or stopping:
        log_fn(log_lib.format_progress(row, n_epochs))
      rows.append(row)
      if out_of_time and epoch < n_epochs:
        log_fn(f"stopping: train.max_seconds={cfg.train.max_seconds} reached")
      if stopping:
        break
  finally:
    if tb is not None:
      tb.close()
  return rows
