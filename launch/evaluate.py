"""Evaluate a trained policy and (optionally) render an episode to a video, headless.

    python launch/evaluate.py --workdir=runs/pointmass --video=out.mp4
    python launch/evaluate.py --checkpoint=runs/pointmass/checkpoints/step_00000024
    python launch/evaluate.py --workdir=runs/pm_u_maze --by_goal   # success per maze goal cell

``--workdir`` is a run directory (its newest complete checkpoint); ``--checkpoint`` a run
directory, its ``checkpoints/`` folder or one ``step_NNNNNNNN`` checkpoint. The networks and env
are rebuilt from the config stored in the checkpoint, so no ``--config`` is needed; one given
anyway must describe the same networks (e.g. to evaluate on another env layout).
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
_VIDEO = flags.DEFINE_string("video", None, "Write one rendered episode here (.mp4 or .gif).")
_EPISODES = flags.DEFINE_integer("episodes", 0, "Evaluation episodes (0 = config's eval.num_envs).")
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed.")
_BY_GOAL = flags.DEFINE_boolean(
    "by_goal", False, "Maze envs: also print success, time at goal, final distance and final "
    "position per goal cell of the evaluation layout.")
_HEIGHT = flags.DEFINE_integer("height", 240, "Video height.")
_WIDTH = flags.DEFINE_integer("width", 320, "Video width.")


def _checkpoint_location(path: str):
  """``(checkpoints directory, step)`` for a run directory, its checkpoints folder or a step."""
  from deepcrl_core import checkpoint as ckpt
  path = os.path.normpath(path)
  name = os.path.basename(path)
  if name.startswith("step_") and name[5:].isdigit():
    directory, step = os.path.dirname(path), int(name[5:])
    if not ckpt.is_complete(directory, step):
      cli.exit_with(f"checkpoint {path!r} does not exist or is incomplete")
    return directory, step
  if not os.path.isdir(path):
    cli.exit_with(f"{path!r} is not a run directory or checkpoint")
  directory = os.path.join(path, "checkpoints") if os.path.isdir(
      os.path.join(path, "checkpoints")) else path
  step = ckpt.latest_complete_step(directory)
  if step is None:
    cli.exit_with(f"no complete checkpoint in {directory!r}")
  return directory, step


def main(argv):
  del argv
  from absl import logging
  import jax
  import jax.numpy as jnp
  import numpy as np
  from deepcrl_core import checkpoint as ckpt
  from deepcrl_core import config as config_lib
  from deepcrl_core import envs
  from deepcrl_core import train as train_lib
  from deepcrl_core.agents import base as agents_lib

  logging.set_verbosity(logging.WARNING)
  if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
    cli.exit_with("pass exactly one of --workdir=RUN or --checkpoint=PATH")
  ckpt_dir, step = _checkpoint_location(_WORKDIR.value or _CHECKPOINT.value)
  checkpointer = ckpt.RunCheckpointer(ckpt_dir)
  config = _CONFIG.value
  if config is None:
    stored = checkpointer.metadata(step).get("config")
    if stored is None:
      cli.exit_with(f"checkpoint {ckpt.step_dir(ckpt_dir, step)} stores no config; pass --config")
    config = config_lib.from_resolved_dict(stored)
  path = ckpt.step_dir(ckpt_dir, step)
  if _EPISODES.value:
    config.unlock()
    config.eval.num_envs = _EPISODES.value
    config.distributed.num_devices = 1
    config.lock()
  cli.validate_or_exit(config)
  c = train_lib.build(config)
  eval_name = config_lib.eval_env_name(config)
  if _BY_GOAL.value:
    from deepcrl_core import analysis
    try:
      analysis.require_maze(c.eval_env.unwrapped, "a breakdown by goal cell", eval_name)
    except ValueError as e:
      cli.exit_with(f"--by_goal: {e}")
  try:
    tree, _, meta = checkpointer.restore(step, {"training": c.shapes.training})
  except ValueError as e:
    cli.exit_with(f"{e}\n(pass the config the run was trained with, e.g. the same overrides)")
  # Whatever the agent (config.agent), its policy needs only policy_params(training state).
  params = jax.tree.map(jnp.asarray, c.agent.policy_params(tree["training"]))

  eval_fn = train_lib.make_eval_fn(c, per_episode=_BY_GOAL.value)
  episodes = jax.device_get(eval_fn(params, jax.random.PRNGKey(_SEED.value)))
  metrics = agents_lib.mean_over_episodes(episodes) if _BY_GOAL.value else episodes
  # The published metric names (summary.py): episode_success = time at goal (steps within the
  # success radius), episode_success_any = fraction of episodes reaching the goal.
  from deepcrl_core import summary
  published = summary.published_eval_metrics(metrics)
  aka = {k: f" ({v.split('/', 1)[1]})" for k, v in summary.PUBLISHED_NAMES.items()}
  print(f"{path} (epoch {meta.get('epoch')}): " + ", ".join(
      f"{k} {v:.3f}{aka.get(k, '')}" for k, v in published.items()), flush=True)
  if _BY_GOAL.value:
    print(f"by goal cell of {eval_name}:", flush=True)
    print(analysis.goal_table(analysis.by_goal_cell(c.eval_env.unwrapped, episodes, eval_name)),
          flush=True)

  if _VIDEO.value:
    from deepcrl_core import render
    env = envs.wrap_for_eval(envs.make(eval_name,
                                       **config.env.kwargs.to_dict()), config.env.episode_length)

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
