"""Training as a pipeline: build -> restore-or-init -> compiled epochs -> callbacks.

* :func:`build` validates the config and makes the immutable :class:`Components` (envs, agent,
  device mesh, run-state shapes); :func:`make_train_fns` the pure step functions
  (:class:`TrainFns`); nothing is compiled yet.
* :func:`train` restores the newest complete checkpoint or initialises and prefills, compiles
  one epoch -- a single jitted call, ``lax.scan`` over ``train.train_steps_per_epoch`` training
  steps, each = unroll ``train.unroll_length`` env steps on every env -> insert into replay ->
  ``train.sgd_steps`` x (sample + relabel a minibatch -> actor/alpha/critic update) -- and runs
  it, evaluating between epochs. Every epoch's metrics row goes to a list of callbacks
  (:mod:`deepcrl_core.callbacks`: CSV, TensorBoard, console, NaN guard, checkpoints,
  profilers). With ``log.progress_every_s > 0`` an epoch is dispatched one training step per
  call, asynchronously, so a progress line with ETAs (:mod:`deepcrl_core.progress`) can be
  printed inside long epochs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from deepcrl_core import _xla_flags
from deepcrl_core import agents as agents_lib
from deepcrl_core import callbacks as cb_lib
from deepcrl_core import checkpoint as ckpt
from deepcrl_core import config as config_lib
from deepcrl_core import distributed
from deepcrl_core import envs
from deepcrl_core import networks as nets
from deepcrl_core import profile_hooks
from deepcrl_core import progress as progress_lib
from deepcrl_core import replay
from deepcrl_core import rundir
from deepcrl_core import summary as summary_lib

TrainingDiverged = cb_lib.TrainingDiverged


class RunState(NamedTuple):
  training: Any             # the agent's training state (agents.base: init(key) -> state)
  env_state: envs.State
  replay: replay.ReplayState


@dataclasses.dataclass(frozen=True)
class Components:
  """Everything a run is built from; immutable (``dataclasses.replace`` to vary one)."""
  config: Any
  env: envs.Env             # raw training env
  train_env: envs.Env       # batched, auto-resetting
  eval_env: envs.Env        # batched, episode-limited
  agent: agents_lib.Agent   # config.agent's implementation (deepcrl_core.agents)
  mesh: Any                 # jax.sharding.Mesh with axis "data"
  shapes: Any = None        # RunState of jax.ShapeDtypeStructs (filled in by build)

  @property
  def spec(self) -> nets.NetworkSpec:
    return self.agent.spec


class EnvSizes(NamedTuple):
  state_size: int
  goal_size: int
  action_size: int


def build_agent(config, sizes: EnvSizes) -> agents_lib.Agent:
  """The run's agent (``config.agent``: networks, losses, optimisers) for an env of ``sizes``;
  what training, evaluation and the profiling scripts all use (:func:`agents.build`)."""
  return agents_lib.build(config, sizes)


def build(config) -> Components:
  """Validates ``config`` and builds envs, networks, the agent and the device mesh (nothing is
  compiled; the run state's shapes are traced once)."""
  config_lib.validate(config)
  distributed.initialize(config)
  mesh = distributed.make_mesh(config.distributed.num_devices)
  config_lib.validate_for_devices(config, mesh.size)
  kwargs = config.env.kwargs.to_dict() if hasattr(config.env.kwargs, "to_dict") else dict(
      config.env.kwargs)
  env = envs.make(config.env.name, **kwargs)
  eval_env = envs.make(config_lib.eval_env_name(config), **kwargs)
  agent = build_agent(config, EnvSizes(env.state_size, env.goal_size, env.action_size))
  c = Components(
      config=config, env=env,
      train_env=envs.wrap_for_training(env, config.env.episode_length,
                                       reset_mode=config.env.reset_mode),
      eval_env=envs.wrap_for_eval(eval_env, config.env.episode_length), agent=agent, mesh=mesh)
  return dataclasses.replace(c, shapes=jax.eval_shape(lambda: _init_run_state(c, 0)))


class TrainFns(NamedTuple):
  """The pure functions of one training step (jit them as needed).

  ``train_step(run) -> (run, metrics)``: unroll + replay insert + ``train.sgd_steps`` updates;
  ``update(training, replay, key) -> (training, metrics)``: the updates alone (with sampling).
  """
  train_step: Callable
  update: Callable


def make_train_fns(c: Components) -> TrainFns:
  """The training step and its update part (pure; jit them as needed)."""
  t = c.config.train
  sgd_step = c.agent.sgd_step
  # The agent's relabelling over replay.sampling (windows: the published scheme, one window per
  # env, drawn as indices; transitions: i.i.d. anchors), in the batch type its update takes.
  sampler = c.agent.make_sampler(c.config, c.env)

  def sgd_steps(ts, buf, key):
    # Each gradient step gathers its own minibatch.
    def one(ts, x):
      batch = sampler.batch(buf, x)
      return sgd_step(ts, distributed.constrain_batch(batch, c.mesh))
    return jax.lax.scan(one, ts, sampler.draw(buf, key))

  def train_step(run: RunState):
    key, k_collect, k_sample = jax.random.split(run.training.key, 3)
    ts = run.training._replace(key=key)
    env_state, unroll = agents_lib.collect(c.agent, c.train_env, c.agent.policy_params(ts),
                                           run.env_state, k_collect, t.unroll_length)
    buf = replay.insert(run.replay, unroll)
    ts, metrics = sgd_steps(ts, buf, k_sample)
    metrics = jax.tree.map(jnp.mean, metrics)
    # Episodes that ended (terminated or hit the time limit) during this unroll, over all envs:
    # the auto-reset wrapper advances an env's traj_id once per ended episode. Their mean
    # length is about unroll_length * num_envs / this.
    ended = env_state.info["traj_id"] - run.env_state.info["traj_id"]
    metrics["train/episode_ends"] = jnp.sum(ended).astype(jnp.float32)
    return RunState(ts, env_state, buf), metrics

  return TrainFns(train_step=train_step, update=sgd_steps)


def make_train_step(c: Components) -> Callable:
  """``(RunState) -> (RunState, metrics)`` for one training step (unroll + SGD steps)."""
  return make_train_fns(c).train_step


def make_epoch_fn(c: Components, steps: Optional[int] = None) -> Callable:
  """The jitted ``(RunState) -> (RunState, metrics)`` of ``steps`` training steps in one call
  (default: a whole epoch, ``train.train_steps_per_epoch``); the input is donated and the
  metrics are means over the steps."""
  n = c.config.train.train_steps_per_epoch if steps is None else steps
  train_step = make_train_fns(c).train_step

  def epoch(run: RunState):
    run, metrics = jax.lax.scan(lambda run, _: train_step(run), run, None, length=n)
    return run, jax.tree.map(jnp.mean, metrics)

  shardings = run_state_shardings(c)
  return jax.jit(epoch, donate_argnums=0, in_shardings=(shardings,),
                 out_shardings=(shardings, distributed.replicated(c.mesh)))


def run_epoch(compiled, run: RunState, num_steps: Optional[int] = None,
              on_step: Optional[Callable[[int], None]] = None):
  """One epoch: ``compiled(run)`` once (``num_steps`` None: ``compiled`` is a whole epoch), or
  ``num_steps`` calls of a one-training-step ``compiled``, calling ``on_step(k)`` once k steps
  are done. Each step is dispatched before the previous one is waited for, so the device
  never idles between them. Returns ``(run, metrics)`` with host metrics (means over steps)."""
  if num_steps is None:
    run, metrics = compiled(run)
    return run, {k: float(v) for k, v in distributed.to_host(metrics).items()}
  totals: Dict[str, float] = {}

  def finished(metrics, steps_done: int):  # waits for that step's metrics only
    for name, v in distributed.to_host(metrics).items():
      totals[name] = totals.get(name, 0.0) + float(v)
    if on_step is not None:
      on_step(steps_done)

  pending = None
  for k in range(num_steps):
    run, metrics = compiled(run)  # queued behind step k - 1
    if pending is not None:
      finished(pending, k)
    pending = metrics
  finished(pending, num_steps)
  return run, {k: v / num_steps for k, v in totals.items()}


def run_state_shapes(c: Components):
  """Shapes/dtypes of the run state (``c.shapes``, or traced now for hand-made Components)."""
  return c.shapes if c.shapes is not None else jax.eval_shape(lambda: _init_run_state(c, 0))


def run_state_shardings(c: Components):
  """Params/optimiser state replicated; env states sharded over envs (axis 0); replay sharded
  over envs (axis 1 of its time-major arrays)."""
  shapes = run_state_shapes(c)
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
  """Fills replay before training: ``config.prefill_steps_per_env`` steps per env (whole unrolls,
  the published rule) with the initial stochastic actor (``train.prefill_policy=actor``, as
  published) or uniform random actions (``random``)."""
  t = c.config.train
  steps = config_lib.prefill_steps_per_env(c.config)
  if steps == 0:
    return run
  unroll = t.unroll_length if steps % t.unroll_length == 0 else steps
  random_actions = t.prefill_policy == "random"

  def fill(run):
    key, k = jax.random.split(run.training.key)

    def one(env_state, k):  # one unroll, as in training (the published prefill)
      return agents_lib.collect(c.agent, c.train_env, c.agent.policy_params(run.training),
                                env_state, k, unroll, random_actions=random_actions)

    env_state, data = jax.lax.scan(one, run.env_state, jax.random.split(k, steps // unroll))
    data = jax.tree.map(lambda x: x.reshape((steps,) + x.shape[2:]), data)
    return RunState(run.training._replace(key=key), env_state, replay.insert(run.replay, data))

  shardings = run_state_shardings(c)
  return jax.jit(fill, in_shardings=(shardings,), out_shardings=shardings,
                 donate_argnums=0)(run)


def make_eval_fn(c: Components, per_episode: bool = False) -> Callable:
  """``fn(policy_params, key)``: the evaluation metrics (means over ``eval.num_envs``
  episodes, :func:`deepcrl_core.agents.evaluate`), or with ``per_episode`` each episode's
  numbers and goal (:func:`deepcrl_core.agents.evaluate_episodes`)."""
  cfg = c.config
  evaluate = agents_lib.evaluate_episodes if per_episode else agents_lib.evaluate

  def run_eval(policy_params, key):  # policy_params = c.agent.policy_params(training state)
    return evaluate(c.agent, c.eval_env, policy_params, key, cfg.eval.num_envs,
                    cfg.env.episode_length,
                    constrain=lambda t: distributed.constrain_batch(t, c.mesh))

  rep_ = distributed.replicated(c.mesh)
  return jax.jit(run_eval, in_shardings=(rep_, rep_), out_shardings=rep_)


def default_callbacks(c: Components, workdir: str) -> List[cb_lib.Callback]:
  """The standard callbacks of a run, in order (see :mod:`deepcrl_core.callbacks`)."""
  cfg = c.config
  csv = cb_lib.CSVLogger(os.path.join(workdir, "metrics.csv"))
  out: List[cb_lib.Callback] = [
      cb_lib.NaNGuard(record=csv),
      cb_lib.CheckpointPolicy(os.path.join(workdir, "checkpoints"), every=cfg.checkpoint.every,
                              keep=cfg.checkpoint.keep,
                              include_replay=cfg.checkpoint.include_replay),
      csv,
  ]
  if cfg.log.tensorboard:
    out.append(cb_lib.TensorBoardLogger(os.path.join(workdir, "tb")))
  out.append(cb_lib.ConsoleLogger(cfg.log.print_every))
  out.append(summary_lib.SummaryCallback(workdir))  # summary.json: the paper's headline numbers
  if cfg.eval.residual_norms:  # residual_norms.csv (skips networks the agent does not have)
    from deepcrl_core import analysis  # pylint: disable=g-import-not-at-top
    out.append(analysis.ResidualNormsLogger(os.path.join(workdir, "residual_norms.csv")))
  prof = cfg.profile
  logdir = os.path.join(workdir, "profile")
  if prof.timing_split_every > 0 or prof.trace_steps > 0:
    out.append(cb_lib.SideProfiling(
        profile_hooks.SideProfiler(c, make_train_fns), timing_split_every=prof.timing_split_every,
        trace_steps=prof.trace_steps, trace_epoch=prof.trace_epoch, logdir=logdir))
  if prof.trace_epoch > 0 and prof.trace_steps <= 0:
    out.append(cb_lib.EpochTrace(prof.trace_epoch, logdir))
  return out


def checkpoint_templates(c: Components, include_replay: bool):
  """``(state, replay_arrays)`` templates of a run checkpoint (ShapeDtypeStructs)."""
  big, small = ckpt.split_sharded(c.shapes.replay)
  state = {"training": c.shapes.training, "env_state": c.shapes.env_state, "replay_pos": small}
  return state, (big if include_replay else None)


def _restore(c: Components, checkpointer, step: int) -> tuple:
  """The run state of checkpoint ``step`` on this run's mesh, and its metadata (a fresh,
  empty replay buffer when the checkpoint holds none)."""
  cfg = c.config
  shardings = run_state_shardings(c)
  state_t, replay_t = checkpoint_templates(c, cfg.checkpoint.include_replay)
  state, big, meta = checkpointer.restore(step, state_t, replay_t)
  training = distributed.from_host(state["training"], shardings.training)
  env_state = distributed.from_host(state["env_state"], shardings.env_state)
  if big is None:
    buf = jax.jit(lambda: replay.init(cfg.replay.capacity, cfg.train.num_envs,
                                      c.env.observation_size, c.env.action_size),
                  out_shardings=shardings.replay)()
  else:
    host = ckpt.join_sharded(c.shapes.replay, big, state["replay_pos"])
    buf = distributed.from_host(host, shardings.replay)
  return RunState(training, env_state, buf), meta


def _config_changes(workdir: str, cfg) -> List[str]:
  """Lines naming each setting a resumed run now uses that differs from its ``config.json``
  (written when the run began; it is left as it was); [] when none differs or it is missing.
  E.g. a longer run, or an env argument a task default added since the run began.
  ``train.max_seconds`` is a budget for this call (a sweep sets it on every call), not named."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    stored = json.load(f)
  return [f"note: resuming with {name} = {now!r}; the run began with {was!r} (config.json)"
          for name, was, now in config_lib.stored_differences(
              stored, cfg, ignore=("train.max_seconds",))]


def _run_wall_s_at(workdir: str, epoch: int) -> float:
  """The ``run_wall_s`` (else ``wall_s``, for runs logged before that column) of ``epoch``'s
  row in ``workdir/metrics.csv``: the wall-clock the run had spent when that epoch's checkpoint
  was written; 0 without such a row. Time spent after it, in a call that was killed, is lost
  with the epochs it trained and not counted."""
  for row in summary_lib.read_metrics(os.path.join(workdir, "metrics.csv")):
    if row.get("epoch") and int(float(row["epoch"])) == epoch:
      value = row.get("run_wall_s") or row.get("wall_s")
      return float(value) if value else 0.0
  return 0.0


def _timed(log_fn, what: str, fn, block: bool = True):
  """``(fn(), seconds)``, saying first what is happening (waits for device results)."""
  log_fn(f"{what} ...")
  t0 = time.time()
  out = fn()
  if block:
    jax.block_until_ready(out)
  return out, time.time() - t0


def train(config, workdir: str, *, resume: bool = False,
          log_fn: Callable[[str], None] = print,
          stop_after_epochs: Optional[int] = None,
          callbacks: Optional[List[cb_lib.Callback]] = None,
          extra_callbacks: Sequence[cb_lib.Callback] = ()) -> List[Dict[str, float]]:
  """Trains per ``config`` writing into ``workdir``; returns the metrics rows of this call.

  ``resume`` continues from the newest complete checkpoint in ``workdir`` (a fresh start when
  there is none); without it, a ``workdir`` that already holds checkpoints is refused, so
  nothing written is lost. ``workdir`` is locked for the call: a second live run on it raises
  :class:`deepcrl_core.rundir.RunDirectoryBusy` (a lock left by a killed run is stale and
  ignored). ``callbacks`` replaces :func:`default_callbacks`; ``extra_callbacks`` run after
  them. ``stop_after_epochs`` ends this call after that many epochs (as if killed), leaving a
  checkpoint to ``resume`` from. Raises TrainingDiverged on NaN/inf losses.
  """
  t_start = time.time()
  config_lib.validate(config)
  # Process 0 owns the run directory (decided without starting a JAX backend, which
  # multi-host initialisation must precede).
  main_process = int(config.distributed.process_id) == 0
  if not main_process:  # one process writes the run directory and prints
    log_fn = lambda s: None
  ckpt_dir = os.path.join(workdir, "checkpoints")
  lock = rundir.lock(workdir) if main_process else None
  try:
    if main_process and not resume and ckpt.complete_steps(ckpt_dir):
      raise rundir.RunDirectoryNotEmpty(
          f"run directory {workdir!r} already holds checkpoints "
          f"(newest: {ckpt.step_dir(ckpt_dir, ckpt.latest_complete_step(ckpt_dir))}); pass "
          f"--resume to continue it, or choose another --workdir")
    return _train(config, workdir, ckpt_dir, resume, log_fn, stop_after_epochs, callbacks,
                  extra_callbacks, t_start, main_process)
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir, ckpt_dir, resume, log_fn, stop_after_epochs, callbacks,
           extra_callbacks, t_start, main_process):
  c, build_s = _timed(log_fn, "building envs and networks", lambda: build(config),
                     block=False)
  cfg = c.config
  t = cfg.train
  n_epochs = config_lib.num_epochs(cfg)
  per_epoch_steps = config_lib.env_steps_per_epoch(cfg)
  prefill_env_steps = config_lib.prefill_steps_per_env(cfg) * t.num_envs
  log_fn(f"built in {build_s:.1f}s")
  callbacks = list(default_callbacks(c, workdir) if callbacks is None else callbacks)
  callbacks += list(extra_callbacks)
  checkpointer = next((cb.checkpointer for cb in callbacks
                       if isinstance(cb, cb_lib.CheckpointPolicy)),
                      ckpt.RunCheckpointer(ckpt_dir, keep=cfg.checkpoint.keep))

  start_epoch = 0
  wall_before = 0.0  # run_wall_s: wall-clock of the run's earlier calls, up to the restored epoch
  last = ckpt.latest_complete_step(ckpt_dir) if resume else None
  if resume and last is None:
    log_fn(f"--resume: no complete checkpoint in {ckpt_dir}; starting from scratch")
  if last is not None:
    # Restores host arrays onto this run's mesh, whatever device count wrote them.
    (run, meta), s = _timed(log_fn, f"restoring {ckpt.step_dir(ckpt_dir, last)}",
                            lambda: _restore(c, checkpointer, last), block=False)
    jax.block_until_ready(run)
    start_epoch = int(meta["epoch"])
    wall_before = _run_wall_s_at(workdir, start_epoch)
    log_fn(f"resumed from {ckpt.step_dir(ckpt_dir, last)} (epoch {start_epoch}) in {s:.1f}s")
    for line in _config_changes(workdir, cfg):
      log_fn(line)
    if not cfg.checkpoint.include_replay:
      run, s = _timed(log_fn, "prefilling replay (the checkpoint holds none)",
                      lambda: prefill(c, run))
      log_fn(f"prefilled in {s:.1f}s")
  else:
    os.makedirs(workdir, exist_ok=True)
    if main_process:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config_lib.resolved_dict(cfg), f, indent=2, sort_keys=True)
    run = init_run_state(c, cfg.seed)
    if t.prefill_steps:
      run, s = _timed(log_fn, f"prefilling replay: {prefill_env_steps:,} env steps",
                      lambda: prefill(c, run))
      log_fn(f"prefilled in {s:.1f}s (compilation included)")

  progress = (progress_lib.Progress(
      log_fn, num_epochs=n_epochs, grad_steps_per_epoch=t.train_steps_per_epoch * t.sgd_steps,
      sgd_steps_per_train_step=t.sgd_steps, env_steps_per_train_step=t.unroll_length * t.num_envs,
      prefill_env_steps=prefill_env_steps, interval_s=cfg.log.progress_every_s)
      if cfg.log.progress_every_s > 0 else None)
  # With progress lines, an epoch is dispatched one training step per call (run_epoch).
  epoch_fn = make_epoch_fn(c, steps=1 if progress is not None else None)
  eval_key = jax.random.PRNGKey(cfg.seed + 1)
  log_fn(f"compiling the epoch ({t.train_steps_per_epoch} training steps of {t.unroll_length} "
         f"env steps x {t.num_envs} envs and {t.sgd_steps} gradient steps)"
         f"{' and the evaluation' if cfg.eval.every else ''} ...")
  t0 = time.time()
  compiled = epoch_fn.lower(run).compile(  # per-task CPU compiler options (_xla_flags.py)
      compiler_options=_xla_flags.epoch_compiler_options(cfg.env.name, jax.default_backend()))
  epoch_compile_s = time.time() - t0
  eval_fn = (make_eval_fn(c).lower(c.agent.policy_params(run.training), eval_key).compile()
             if cfg.eval.every else None)
  compile_s = time.time() - t0
  # Processes compile at different speeds; meet before the first collective so none times out.
  distributed.barrier("deepcrl_compiled")
  counts = " ".join(f"{k} {v:,}" for k, v in c.agent.param_counts(run.training).items())
  log_fn(f"{cfg.env.name}: agent {c.agent.name}, actor depth {c.spec.actor_depth}, critic depth "
         f"{c.spec.critic_depth}, width {c.spec.width}, params {counts}; epoch compiled in "
         f"{epoch_compile_s:.1f}s (with evaluation {compile_s:.1f}s); {n_epochs} epochs of "
         f"{per_epoch_steps:,} env steps")

  ctx = cb_lib.RunContext(config=cfg, workdir=workdir, components=c, num_epochs=n_epochs,
                          start_epoch=start_epoch, main_process=main_process, log_fn=log_fn,
                          run=run, epoch=start_epoch)
  for cb in callbacks:
    cb.on_train_start(ctx)
  rows: List[Dict[str, float]] = []
  epochs_this_call = 0
  eval_s = 0.0
  try:
    for epoch in range(start_epoch + 1, n_epochs + 1):
      extra: Dict[str, float] = {}
      for cb in callbacks:
        extra.update(cb.on_epoch_start(ctx, epoch) or {})
      done = (epoch - 1) * t.train_steps_per_epoch  # training steps before this epoch
      if progress is not None:
        evals_left = (sum(1 for e in range(epoch, n_epochs + 1)
                          if e % cfg.eval.every == 0 or e == n_epochs) if cfg.eval.every else 0)
        progress.eval_s = eval_s
        progress.start_epoch(epoch, done * t.sgd_steps, evals_left)
      t_epoch = time.time()
      run, metrics = run_epoch(
          compiled, run, t.train_steps_per_epoch if progress is not None else None,
          on_step=(lambda k: progress.tick((done + k) * t.sgd_steps)) if progress else None)
      epoch_s = time.time() - t_epoch
      if progress is not None:
        progress.end_epoch()
      row = {"epoch": epoch, "env_steps": prefill_env_steps + epoch * per_epoch_steps,
             "grad_steps": int(distributed.to_host(run.training.grad_steps)),
             "sps": per_epoch_steps / epoch_s, "time/epoch_s": epoch_s, **extra, **metrics}
      if cfg.eval.every and (epoch % cfg.eval.every == 0 or epoch == n_epochs):
        t_eval = time.time()
        ev = distributed.to_host(
            eval_fn(c.agent.policy_params(run.training), jax.random.fold_in(eval_key, epoch)))
        row.update({f"eval/{k}": float(v) for k, v in ev.items()})
        eval_s = row["time/eval_s"] = time.time() - t_eval
      row["wall_s"] = time.time() - t_start
      row["run_wall_s"] = wall_before + row["wall_s"]
      out_of_time = t.max_seconds > 0 and row["wall_s"] >= t.max_seconds
      epochs_this_call += 1
      ctx.run, ctx.epoch = run, epoch
      ctx.stopping = (epoch == n_epochs or out_of_time or
                      (stop_after_epochs is not None and epochs_this_call >= stop_after_epochs))
      for cb in callbacks:
        cb.on_epoch_end(ctx, row)
      rows.append(row)
      if out_of_time and epoch < n_epochs:
        log_fn(f"stopping: train.max_seconds={t.max_seconds} reached")
      if ctx.stopping:
        break
  except BaseException as e:
    ctx.error = e
    raise
  finally:
    for cb in callbacks:
      try:
        cb.on_train_end(ctx, rows)
      except Exception:  # pylint: disable=broad-except
        if ctx.error is None:
          raise
  return rows
