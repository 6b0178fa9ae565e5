"""Evaluate a trained policy and (optionally) render an episode to a video, headless.

    python launch/evaluate.py --workdir=runs/pointmass --video=out.mp4
    python launch/evaluate.py --checkpoint=runs/pointmass/checkpoints/step_00000024
    python launch/evaluate.py --workdir=runs/pm_u_maze --by_goal   # per goal cell, per path length
    python launch/evaluate.py --sweep=runs/pmu_sweep --by_goal --episodes=384

``--workdir`` is a run directory (its newest complete checkpoint); ``--checkpoint`` a run
directory, its ``checkpoints/`` folder or one ``step_NNNNNNNN`` checkpoint. The networks and env
are rebuilt from the config stored in the checkpoint, so no ``--config`` is needed; one given
anyway must describe the same networks (e.g. to evaluate on another env layout). When an
env ended any episode before the time limit (the ant's and the humanoid's healthy torso
height range), a table says how the episodes ended: the time limit or which termination
cause (``torso_low``, ``torso_high``, ``non_finite``), with each group's success, time at goal
and mean and median length.
``--sweep`` is a ``launch/sweep.py`` directory: the newest complete checkpoint of each of its
runs is evaluated (runs without one are listed as skipped), each with the config it stored;
the seeds of a cell share one compiled evaluation. It prints a table per run and one per cell,
and writes ``SWEEP/evaluation.csv``: one row per run, columns ``cell``, the grid axes, ``seed``,
``step``, ``epoch``, ``env_steps``, ``episodes``, the means ``success``, ``time_at_goal``,
``final_dist`` and ``episode_length``, ``terminated`` (the share of episodes the env ended
before the time limit), and with ``--by_goal`` ``success_I_J`` and
``episodes_I_J`` per goal cell ``(I, J)``. In the per-cell table a goal cell counts as solved
in a run when at least 95% of its episodes succeed.
Rendering uses ``mujoco.Renderer`` with EGL (``MUJOCO_GL=egl``, Debian package ``libegl1``
with Mesa) or OSMesa (``MUJOCO_GL=osmesa``, package ``libosmesa6``).
"""

import os
import sys

if any(a.startswith("--video") for a in sys.argv):
  os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from deepcrl_core import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (default: the config stored in the checkpoint).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: evaluates its newest checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "A run directory or one checkpoint (checkpoints/step_N).")
_SWEEP = flags.DEFINE_string("sweep", None, "A launch/sweep.py directory: evaluates every run's "
                             "newest checkpoint and writes SWEEP/evaluation.csv.")
_VIDEO = flags.DEFINE_string("video", None, "Write one rendered episode here (.mp4 or .gif).")
_EPISODES = flags.DEFINE_integer("episodes", 0, "Evaluation episodes (0 = config's eval.num_envs).")
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed.")
_BY_GOAL = flags.DEFINE_boolean(
    "by_goal", False, "Maze envs: also print success, time at goal, final distance and final "
    "position per goal cell of the evaluation layout, and pooled by the cells' path length "
    "from the start.")
_HEIGHT = flags.DEFINE_integer("height", 240, "Video height.")
_WIDTH = flags.DEFINE_integer("width", 320, "Video width.")


EVAL_CSV = "evaluation.csv"
SOLVED = 0.95  # per-cell table: a goal cell is solved in a run when this share of it succeeds
METRICS = ("success", "time_at_goal", "final_dist", "episode_length", "terminated")


class RunError(Exception):
  """A checkpoint that cannot be evaluated (the message names it and the reason)."""


class NoMazeError(RunError):
  """``--by_goal`` on an env without a maze."""


def _checkpoint_location(path: str):
  """``(checkpoints directory, step)`` for a run directory, its checkpoints folder or a step."""
  from deepcrl_core import checkpoint as ckpt
  path = os.path.normpath(path)
  name = os.path.basename(path)
  if name.startswith("step_") and name[5:].isdigit():
    directory, step = os.path.dirname(path), int(name[5:])
    if not ckpt.is_complete(directory, step):
      raise RunError(f"checkpoint {path!r} does not exist or is incomplete")
    return directory, step
  if not os.path.isdir(path):
    raise RunError(f"{path!r} is not a run directory or checkpoint")
  directory = os.path.join(path, "checkpoints") if os.path.isdir(
      os.path.join(path, "checkpoints")) else path
  step = ckpt.latest_complete_step(directory)
  if step is None:
    raise RunError(f"no complete checkpoint in {directory!r}")
  return directory, step


class Evaluator:
  """Evaluates checkpoints, building the components and compiling the evaluation once per
  distinct config up to its seed (the seeds of a sweep cell share one compiled evaluation)."""

  def __init__(self, config=None, episodes: int = 0, seed: int = 0, by_goal: bool = False):
    self.config, self.episodes, self.seed, self.by_goal = config, episodes, seed, by_goal
    self._built = {}

  @property
  def compiled(self) -> int:
    return len(self._built)

  def _config(self, checkpointer, step):
    from deepcrl_core import checkpoint as ckpt
    from deepcrl_core import config as config_lib
    config = self.config
    if config is None:
      stored = checkpointer.metadata(step).get("config")
      if stored is None:
        raise RunError(f"checkpoint {ckpt.step_dir(checkpointer.directory, step)} stores no "
                       "config; pass --config")
      config = config_lib.from_resolved_dict(stored)
    if self.episodes:
      config.unlock()
      config.eval.num_envs = self.episodes
      config.distributed.num_devices = 1
      config.lock()
    return config

  def _build(self, config):
    import json
    from deepcrl_core import config as config_lib
    from deepcrl_core import train as train_lib
    key = config_lib.resolved_dict(config)
    key.pop("seed", None)
    key = json.dumps(key, sort_keys=True, default=str)
    if key not in self._built:
      cli.validate_or_exit(config)
      c = train_lib.build(config)
      eval_name = config_lib.eval_env_name(config)
      if self.by_goal:
        from deepcrl_core import analysis
        try:
          analysis.require_maze(c.eval_env.unwrapped, "a breakdown by goal cell", eval_name)
        except ValueError as e:
          raise NoMazeError(f"--by_goal: {e}") from None
      self._built[key] = (c, eval_name, train_lib.make_eval_fn(c, per_episode=True))
    return self._built[key]

  def __call__(self, location: str):
    """``location``'s newest complete checkpoint (or that checkpoint): a dict with ``path``,
    ``step``, ``meta``, ``metrics`` (the means), ``episodes`` (per episode), ``goals`` (the
    by-goal rows with ``by_goal``, else None), ``params`` (the policy's), ``config``,
    ``components`` and ``eval_name``."""
    import jax
    import jax.numpy as jnp
    from deepcrl_core import checkpoint as ckpt
    from deepcrl_core.agents import base as agents_lib
    ckpt_dir, step = _checkpoint_location(location)
    checkpointer = ckpt.RunCheckpointer(ckpt_dir)
    config = self._config(checkpointer, step)
    c, eval_name, eval_fn = self._build(config)
    try:
      tree, _, meta = checkpointer.restore(step, {"training": c.shapes.training})
    except ValueError as e:
      raise RunError(f"{e}\n(pass the config the run was trained with, e.g. the same "
                     "overrides)") from None
    # Whatever the agent (config.agent), its policy needs only policy_params(training state).
    params = jax.tree.map(jnp.asarray, c.agent.policy_params(tree["training"]))
    episodes = jax.device_get(eval_fn(params, jax.random.PRNGKey(self.seed)))
    goals = None
    if self.by_goal:
      from deepcrl_core import analysis
      goals = analysis.by_goal_cell(c.eval_env.unwrapped, episodes, eval_name)
    return {"path": ckpt.step_dir(ckpt_dir, step), "step": step, "meta": meta,
            "metrics": agents_lib.mean_over_episodes(episodes), "episodes": episodes,
            "goals": goals, "params": params, "config": config, "components": c,
            "eval_name": eval_name}


def _metrics_line(metrics) -> str:
  # The published metric names (summary.py): episode_success = time at goal (steps within the
  # success radius), episode_success_any = fraction of episodes reaching the goal.
  from deepcrl_core import summary
  published = summary.published_eval_metrics(metrics)
  aka = {k: f" ({v.split('/', 1)[1]})" for k, v in summary.PUBLISHED_NAMES.items()}
  return ", ".join(f"{k} {v:.3f}{aka.get(k, '')}" for k, v in published.items())


def _print_ends(result) -> None:
  """How the episodes ended (time limit or which termination cause), when any terminated."""
  from deepcrl_core import analysis
  episodes = result["episodes"]
  if episodes["terminated"].any():
    env = result["components"].eval_env.unwrapped
    print("how the episodes ended:", flush=True)
    print(analysis.ends_table(analysis.episode_ends(env, episodes)), flush=True)


def _goal_key(cell) -> str:
  return "_".join(str(v) for v in cell)


def sweep_rows(axes, evaluated) -> list:
  """One :data:`EVAL_CSV` row per evaluated ``(run, result)``."""
  rows = []
  for run, r in evaluated:
    row = {"cell": run.cell.name, **{a.key: run.cell.value(a.key) for a in axes},
           "seed": run.seed, "step": r["step"], "epoch": r["meta"].get("epoch", ""),
           "env_steps": r["meta"].get("env_steps", ""),
           "episodes": int(len(r["episodes"]["success"]))}
    row.update({k: float(r["metrics"][k]) for k in METRICS if k in r["metrics"]})
    for g in r["goals"] or ():
      row[f"success_{_goal_key(g['cell'])}"] = g["success"]
      row[f"episodes_{_goal_key(g['cell'])}"] = g["episodes"]
    rows.append(row)
  return rows


def _goal_cells(evaluated) -> list:
  cells = []
  for _, r in evaluated:
    for g in r["goals"] or ():
      if g["cell"] not in cells:
        cells.append(g["cell"])
  return cells


def _fmt(v, spec) -> str:
  return "" if v in (None, "") else format(v, spec)


def sweep_tables(rows, goal_cells) -> str:
  """The per-run and per-cell markdown tables of :func:`sweep_rows`' rows."""
  import numpy as np
  gk = [_goal_key(g) for g in goal_cells]
  head = "| cell | seed | epoch | success | time at goal | final distance |"
  lines = [head + "".join(f" {g} |" for g in goal_cells),
           "|---" * (6 + len(goal_cells)) + "|"]
  for r in rows:
    lines.append(f"| {r['cell']} | {r['seed']} | {r['epoch']} | {r['success']:.2f} | "
                 f"{r['time_at_goal']:.1f} | {r['final_dist']:.2f} |"
                 + "".join(f" {_fmt(r.get('success_' + k), '.2f')} |" for k in gk))
  lines += ["", "| cell | runs | success: mean (min-max) |"
            + "".join(f" {g} solved |" for g in goal_cells), "|---" * (3 + len(goal_cells)) + "|"]
  for cell in dict.fromkeys(r["cell"] for r in rows):
    mine = [r for r in rows if r["cell"] == cell]
    s = np.array([r["success"] for r in mine])
    line = f"| {cell} | {len(mine)} | {s.mean():.2f} ({s.min():.2f}-{s.max():.2f}) |"
    for k in gk:
      vals = [r["success_" + k] for r in mine if r.get("success_" + k) not in (None, "")
              and not np.isnan(r["success_" + k])]
      line += f" {sum(v >= SOLVED for v in vals)} of {len(vals)} |"
    lines.append(line)
  return "\n".join(lines)


def _evaluate_sweep(workdir: str, evaluator: Evaluator) -> int:
  from deepcrl_core import sweep as sweep_lib
  try:
    axes, runs = sweep_lib.load_plan(workdir)
  except sweep_lib.SweepError as e:
    cli.exit_with(str(e))
  evaluated, skipped = [], []
  for run in runs:
    if not os.path.isdir(run.workdir):
      skipped.append(run)
      print(f"{run.label}: skipped: not started", flush=True)
      continue
    try:
      result = evaluator(run.workdir)
    except NoMazeError as e:
      cli.exit_with(str(e))  # a property of the sweep's env, not of this run
    except RunError as e:
      skipped.append(run)
      print(f"{run.label}: skipped: {e}", flush=True)
      continue
    evaluated.append((run, result))
    print(f"{run.label} ({result['path']}, epoch {result['meta'].get('epoch')}): "
          f"{_metrics_line(result['metrics'])}", flush=True)
  if not evaluated:
    cli.exit_with(f"no run in {workdir!r} has a complete checkpoint", code=1)
  rows = sweep_rows(axes, evaluated)
  goal_cells = _goal_cells(evaluated)
  columns = ["cell", *(a.key for a in axes), "seed", "step", "epoch", "env_steps", "episodes",
             *METRICS]
  for g in goal_cells:
    columns += [f"success_{_goal_key(g)}", f"episodes_{_goal_key(g)}"]
  path = os.path.join(workdir, EVAL_CSV)
  sweep_lib.write_csv(path, columns, rows)
  print(sweep_tables(rows, goal_cells), flush=True)
  print(f"{len(evaluated)} run(s) evaluated with {evaluator.compiled} compiled evaluation(s), "
        f"{len(skipped)} skipped; wrote {path}", flush=True)
  return 0


def main(argv):
  del argv
  from absl import logging
  from deepcrl_core import envs

  logging.set_verbosity(logging.WARNING)
  given = [f for f in (_WORKDIR, _CHECKPOINT, _SWEEP) if f.value]
  if len(given) != 1:
    cli.exit_with("pass exactly one of --workdir=RUN, --checkpoint=PATH or --sweep=DIR")
  evaluator = Evaluator(_CONFIG.value, _EPISODES.value, _SEED.value, _BY_GOAL.value)
  if _SWEEP.value:
    if _VIDEO.value or _CONFIG.value is not None:
      cli.exit_with("--sweep evaluates every run with the config its checkpoint stored and "
                    "renders nothing: drop --config and --video")
    return _evaluate_sweep(_SWEEP.value, evaluator)
  try:
    r = evaluator(_WORKDIR.value or _CHECKPOINT.value)
  except RunError as e:
    cli.exit_with(str(e))
  print(f"{r['path']} (epoch {r['meta'].get('epoch')}): {_metrics_line(r['metrics'])}",
        flush=True)
  _print_ends(r)
  if _BY_GOAL.value:
    from deepcrl_core import analysis
    print(f"by goal cell of {r['eval_name']}:", flush=True)
    print(analysis.goal_table(r["goals"]), flush=True)
    print(f"by path length from the start (cells) in {r['eval_name']}:", flush=True)
    print(analysis.path_table(analysis.by_path_length(r["goals"])), flush=True)

  if _VIDEO.value:
    import jax
    import numpy as np
    from deepcrl_core import render
    config, c, params = r["config"], r["components"], r["params"]
    env = envs.wrap_for_eval(envs.make(r["eval_name"], **config.env.kwargs.to_dict()),
                             config.env.episode_length)

    @jax.jit
    def episode(key):
      state = env.reset(key[None])

      def body(state, _):
        state = env.step(state, c.agent.policy(params, state.obs))
        return state, (state.data.qpos[0], state.info["goal"][0], state.done[0])

      return jax.lax.scan(body, state, None, length=config.env.episode_length)[1]

    qpos, goals, done = jax.device_get(episode(jax.random.PRNGKey(_SEED.value)))
    ended = np.flatnonzero(done > 0.5)
    length = int(ended[0]) + 1 if len(ended) else len(qpos)
    frames = render.render_frames(env.unwrapped.mj_model, qpos[:length], goals=goals[:length],
                                  goal_radius=env.success_radius, height=_HEIGHT.value,
                                  width=_WIDTH.value)
    render.write_video(frames, _VIDEO.value, fps=1.0 / env.dt)
    print(f"wrote {len(frames)} frames to {_VIDEO.value}")
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=cli.make_flags_parser(_CONFIG))
