"""Evaluate a trained policy and (optionally) render an episode to a video, headless.

    python launch/evaluate.py --config=configs/pointmass.py --checkpoint=runs/pointmass \
        --video=out.mp4

``--checkpoint`` is a checkpoint file or a run directory (its newest checkpoint). The config
must describe the same networks as the run (its ``config.json`` holds the resolved values).
Rendering uses ``mujoco.Renderer`` with EGL (``MUJOCO_GL=egl``, Debian package ``libegl1``
with Mesa) or OSMesa (``MUJOCO_GL=osmesa``, package ``libosmesa6``).
"""

import os
import sys

if any(a.startswith("--video") for a in sys.argv):
  os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported

import deepcrl_core  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from deepcrl_core import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/pointmass.py", "Config file.",
                                          lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint file or run directory.",
                                  required=True)
_VIDEO = flags.DEFINE_string("video", None, "Write one rendered episode here (.mp4 or .gif).")
_EPISODES = flags.DEFINE_integer("episodes", 0, "Evaluation episodes (0 = config's eval.num_envs).")
_SEED = flags.DEFINE_integer("seed", 0, "Evaluation seed.")
_HEIGHT = flags.DEFINE_integer("height", 240, "Video height.")
_WIDTH = flags.DEFINE_integer("width", 320, "Video width.")


def _checkpoint_path(path: str) -> str:
  from deepcrl_core import checkpoint as ckpt
  if os.path.isdir(path):
    d = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
    step = ckpt.latest_step(d)
    if step is None:
      cli.exit_with(f"no checkpoint in {d!r}")
    return ckpt.path_for(d, step)
  if not os.path.isfile(path):
    cli.exit_with(f"checkpoint {path!r} does not exist")
  return path


def main(argv):
  del argv
  from absl import logging
  import jax
  import jax.numpy as jnp
  import numpy as np
  from deepcrl_core import agent as agent_lib
  from deepcrl_core import checkpoint as ckpt
  from deepcrl_core import config as config_lib
  from deepcrl_core import envs
  from deepcrl_core import train as train_lib

  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _EPISODES.value:
    config.unlock()
    config.eval.num_envs = _EPISODES.value
    config.distributed.num_devices = 1
    config.lock()
  cli.validate_or_exit(config)
  path = _checkpoint_path(_CHECKPOINT.value)
  c = train_lib.build(config)
  shapes = train_lib._run_state_shapes(c)  # pylint: disable=protected-access
  try:
    tree, meta = ckpt.load(path, {"training": shapes.training})
  except ValueError as e:
    cli.exit_with(f"{e}\n(pass the config the run was trained with, e.g. the same overrides)")
  params = jax.tree.map(jnp.asarray, tree["training"].actor_params)

  metrics = jax.device_get(train_lib.make_eval_fn(c)(params, jax.random.PRNGKey(_SEED.value)))
  print(f"{path} (epoch {meta.get('epoch')}): " + ", ".join(
      f"{k} {float(v):.3f}" for k, v in metrics.items()), flush=True)

  if _VIDEO.value:
    from deepcrl_core import render
    env = envs.wrap_for_eval(envs.make(config_lib.eval_env_name(config),
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
