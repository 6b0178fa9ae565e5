"""Critic maps: the learned distance to a goal over a maze, from a run's checkpoint.

    python launch/analyze.py --workdir=runs/pm_u_maze --goal=3,1 [--out=map.png]
        [--resolution=64] [--step=N]

Loads the run's config and its newest complete checkpoint (``--step=N``: checkpoint
``step_N``), builds the run's evaluation env (e.g. ``pointmass_u_maze_eval``,
``ant_u4_maze_eval``) and draws, for every position of a ``resolution x resolution`` grid over
the maze, the critic's distance ``||phi(s, pi(s, g)) - psi(g)||`` to the goal position
``--goal=x,y`` (``deepcrl_core.analysis.critic_map``: the reset state with its xy moved to the
position, velocities zero for the point mass; the deterministic policy's action). For energies
other than ``l2`` it draws ``-energy`` and says so. Walls are filled, positions inside them
masked, the goal marked (with the env's success radius) and the start cell labelled. The map
goes to ``--out`` (default ``RUN/figures/critic_map_<x>_<y>.png``).

Errors (exit status 2, before anything compiles): an env without a maze, a goal inside a wall
or outside the maze, a run whose agent has no CRL critic.
"""

import os

import deepcrl_core

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends

from absl import app, flags  # noqa: E402

from deepcrl_core import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of a maze run.")
_GOAL = flags.DEFINE_string("goal", None, "Goal position 'x,y' (world metres).")
_OUT = flags.DEFINE_string("out", None, "Output PNG (default RUN/figures/critic_map_X_Y.png).")
_RESOLUTION = flags.DEFINE_integer("resolution", 64, "Grid points per axis.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to load (default: the newest).")


def parse_goal(text):
  parts = [p.strip() for p in (text or "").split(",")]
  try:
    goal = [float(p) for p in parts]
  except ValueError:
    goal = []
  if len(goal) != 2:
    cli.exit_with(f"--goal must be 'x,y' (two numbers), got {text!r}")
  return goal


def draw(cmap, env, env_name, goal, out, *, title_extra="", value_label="", quantity=""):
  """Draws a :class:`deepcrl_core.analysis.CriticMap` with the maze's walls to ``out``."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from deepcrl_core import analysis  # pylint: disable=g-import-not-at-top
  from deepcrl_core.envs import mazes  # pylint: disable=g-import-not-at-top

  maze, scale = env.maze, env.maze_scale
  (x0, x1), (y0, y1) = analysis.maze_bounds(maze, scale)
  fig, ax = plt.subplots(figsize=(6.0, 5.0 * (y1 - y0) / (x1 - x0) + 0.6))
  ax.set_facecolor("0.35")  # masked pixels straddling a wall edge read as wall
  # values[i, j] is at (xs[i], ys[j]): x along the horizontal axis.
  image = ax.imshow(np.ma.masked_invalid(cmap.values.T), origin="lower",
                    extent=(x0, x1, y0, y1), cmap="viridis", interpolation="nearest")
  for i0, j0, i1, j1 in mazes.wall_rectangles(maze):
    ax.add_patch(patches.Rectangle(((i0 - 0.5) * scale, (j0 - 0.5) * scale),
                                   (i1 - i0 + 1) * scale, (j1 - j0 + 1) * scale,
                                   facecolor="0.35", edgecolor="0.2", linewidth=0.5))
  start = maze.start_xy(scale)
  ax.annotate("R", start, color="white", ha="center", va="center", fontsize=12,
              fontweight="bold")
  ax.add_patch(patches.Circle(goal, env.success_radius, fill=False, edgecolor="red",
                              linewidth=1.5))
  ax.plot([goal[0]], [goal[1]], marker="*", color="red", markersize=14,
          markeredgecolor="white", linestyle="none", label="goal")
  ax.set_xlim(x0, x1)
  ax.set_ylim(y0, y1)
  ax.set_aspect("equal")
  ax.set_xlabel("x (m)")
  ax.set_ylabel("y (m)")
  bar = fig.colorbar(image, ax=ax)
  bar.set_label(value_label)
  ax.set_title(f"{env_name}: {quantity} to goal ({goal[0]:g}, {goal[1]:g})"
               f"{title_extra}", fontsize=10)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out


def main(argv):
  del argv
  from absl import logging
  import jax
  import jax.numpy as jnp
  from deepcrl_core import analysis
  from deepcrl_core import checkpoint as ckpt
  from deepcrl_core import config as config_lib
  from deepcrl_core import envs
  from deepcrl_core import train as train_lib

  logging.set_verbosity(logging.WARNING)
  if not _WORKDIR.value:
    cli.exit_with("pass --workdir=RUN (a maze run's directory)")
  goal = parse_goal(_GOAL.value)
  if _RESOLUTION.value < 2:
    cli.exit_with(f"--resolution must be >= 2, got {_RESOLUTION.value}")
  workdir = _WORKDIR.value
  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = _STEP.value if _STEP.value is not None else ckpt.latest_complete_step(ckpt_dir)
  if step is None or not ckpt.is_complete(ckpt_dir, step):
    what = f"checkpoint step {step}" if _STEP.value is not None else "complete checkpoint"
    cli.exit_with(f"no {what} in {ckpt_dir!r}")
  checkpointer = ckpt.RunCheckpointer(ckpt_dir)
  stored = checkpointer.metadata(step).get("config")
  if stored is None:
    cli.exit_with(f"checkpoint {ckpt.step_dir(ckpt_dir, step)} stores no config")
  config = config_lib.from_resolved_dict(stored)
  env_name = config_lib.eval_env_name(config)
  env = envs.make(env_name, **config.env.kwargs.to_dict())
  try:
    goal = analysis.check_map_goal(env, goal, env_name).tolist()
  except ValueError as e:
    cli.exit_with(f"{workdir}: {e}")
  config.unlock()
  config.distributed.num_devices = 1
  config.lock()
  cli.validate_or_exit(config)
  c = train_lib.build(config)
  networks = getattr(c.agent, "networks", None)
  if networks is None or not hasattr(networks, "critic") or not hasattr(networks, "actor"):
    cli.exit_with(f"critic maps need a CRL run (phi/psi encoders); this run's agent is "
                  f"{getattr(config, 'agent', 'crl')!r}")
  try:
    tree, _, meta = checkpointer.restore(step, {"training": c.shapes.training})
  except ValueError as e:
    cli.exit_with(f"{e}")
  training = jax.tree.map(jnp.asarray, tree["training"])
  loss_cfg = getattr(c.agent, "loss_cfg", None)
  energy = getattr(loss_cfg, "energy", "l2")
  cmap = analysis.critic_map(env, networks, training.actor_params, training.critic_params, goal,
                             resolution=_RESOLUTION.value, loss_cfg=loss_cfg, env_name=env_name)
  if energy == "l2":
    quantity, label = "critic distance", "||phi(s, pi(s, g)) - psi(g)||"
  else:
    quantity, label = f"-energy ({energy})", f"-energy_{energy}(phi(s, pi(s, g)), psi(g))"
  out = _OUT.value or os.path.join(workdir, "figures",
                                   f"critic_map_{goal[0]:g}_{goal[1]:g}.png")
  draw(cmap, env, env_name, goal, out, title_extra=f", epoch {meta.get('epoch', step)}",
       value_label=label, quantity=quantity)
  import numpy as np  # pylint: disable=g-import-not-at-top
  free = cmap.values[~cmap.mask]
  print(f"{out}: {quantity} over {free.size} free positions of {env_name} "
        f"(min {np.min(free):.3f}, max {np.max(free):.3f}; {int(cmap.mask.sum())} in walls)",
        flush=True)
  return 0


if __name__ == "__main__":
  app.run(main)
