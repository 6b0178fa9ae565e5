"""How episodes end without learning: the baseline for ``launch/evaluate.py``'s breakdown.

For each task and each fixed policy, runs ``--episodes`` episodes of the task (the episode
limit of the task; no auto-reset) and groups them by how they ended
(:func:`deepcrl_core.analysis.episode_ends`: the time limit, or which of the env's termination
causes, e.g. the ant's torso below or above its healthy height range), with each group's
success, time at goal and mean and median length: what the paper's metric gives a policy that
has learnt nothing (e.g. an arm task whose cube starts within the success radius of its goal).
Policies: ``zero`` (every action 0: the robot's own response to its start state) and
``random`` (uniform in [-1, 1], independently per env and step). A trained policy's
breakdown (``launch/evaluate.py --workdir=RUN``) next to these says how much of the
terminating comes from the start state and the physics rather than from the policy.

For MuJoCo envs it also reports how deep the start states put robot geoms into what they touch
(the deepest contact penetration of each reset, from ``mujoco.mj_forward`` on the reset's
``qpos``): percentiles over the episodes, and the share of resets deeper than 5 cm.

``--replay=RUN[,RUN...]`` adds what the training data of runs looks like: the complete episodes
stored in the replay buffer of each run's newest complete checkpoint
(:func:`deepcrl_core.analysis.stored_trajectories`): how many steps they last, and how far
their goal coordinates travel from start to end -- the farthest a relabelled goal of that
episode can lie from where it began -- next to the distance to the goals the task commands,
and for the ant and the humanoid the share of all stored steps whose torso height is outside
the healthy range (nonzero only for runs with ``env.kwargs.terminate_when_unhealthy=false`` or
a wider ``env.kwargs.healthy_z``: e.g. an ant lying on its back).
``--tasks=`` (empty) skips the fixed-policy rollouts. A paper task is built as its config
builds it (the task catalogue's env kwargs: the ant's ``mass=published``, the paper's 1 kg
links); ``--env_kwargs=KEY=VALUE,...`` adds or replaces constructor arguments of every task
(as a run's ``env.kwargs.KEY=VALUE``), e.g. ``mass=mjcf`` or ``start_height=0.75`` for the
ant. Rows name the task with the arguments it was built with.

  python profiling/episode_ends.py --tasks=ant --episodes=256
  python profiling/episode_ends.py --tasks=ant,humanoid --policies=zero,random --out=ends.md
  python profiling/episode_ends.py --tasks=ant --env_kwargs=mass=mjcf,start_height=0.75
  python profiling/episode_ends.py --tasks= --replay=runs/ant/runs/depth-4/seed_0

Prints markdown tables (also written to ``--out`` when given). Bad flags exit with status 2
before anything compiles.
"""

from __future__ import annotations

import argparse
import sys

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from deepcrl_core import agents, analysis, envs  # noqa: E402
from deepcrl_core import config as config_lib  # noqa: E402
from profiling_common import (device_header, make_task_env, markdown_table,  # noqa: E402
                              names_problem, task_kwargs)

POLICIES = ("zero", "random")
DEEP = 0.05  # m: a reset whose deepest contact penetration exceeds this counts as deep


def rollout(env, policy: str, num_episodes: int, episode_length: int, seed: int = 0):
  """:func:`deepcrl_core.agents.run_episodes`' per-episode numbers (``terminated``,
  ``end_cause``, ``episode_length``, ``success``, ...) of ``num_episodes`` episodes under a
  fixed ``policy`` (:data:`POLICIES`), and the start states' ``qpos`` ``[num_episodes, nq]``
  (None for envs without ``qpos``)."""
  if policy not in POLICIES:
    raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
  eval_env = envs.wrap_for_eval(env, episode_length)

  def act(obs, key):
    shape = obs.shape[:-1] + (env.action_size,)
    if policy == "zero":
      return jnp.zeros(shape)
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)

  @jax.jit
  def run(key):
    reset_key, act_key = jax.random.split(key)
    start = eval_env.reset(jax.random.split(reset_key, num_episodes))
    episodes = agents.run_episodes(eval_env, act, start, act_key, episode_length)
    return episodes, getattr(start.data, "qpos", None)

  return jax.device_get(run(jax.random.PRNGKey(seed)))


def reset_penetration(mj_model, qpos: np.ndarray) -> np.ndarray:
  """The deepest contact penetration (m, >= 0) of each row of ``qpos`` ``[n, nq]``."""
  import mujoco  # pylint: disable=g-import-not-at-top
  data = mujoco.MjData(mj_model)
  out = np.zeros(len(qpos))
  for i, q in enumerate(np.asarray(qpos, np.float64)):
    data.qpos[:] = q
    data.qvel[:] = 0.0
    mujoco.mj_forward(mj_model, data)
    dists = [data.contact[c].dist for c in range(data.ncon)]
    out[i] = max(0.0, -min(dists)) if dists else 0.0
  return out


def ends_rows(task: str, env, policy: str, episodes) -> list:
  return [[task, policy, r["end"], r["episodes"], f"{r['share']:.2f}", f"{r['success']:.2f}",
           f"{r['time_at_goal']:.1f}", f"{r['episode_length']:.0f}", f"{r['median_length']:.0f}"]
          for r in analysis.episode_ends(env, episodes)]


def unhealthy_share(buf, healthy_z) -> float:
  """The share of the steps stored in replay buffer ``buf`` whose torso height (state entry 2,
  ``qpos[2]`` of the ant and the humanoid) lies outside ``healthy_z``."""
  lo, hi = healthy_z
  z = np.asarray(buf.obs)[:int(buf.size), :, 2]  # the stored rows; their order does not matter
  return float(np.mean((z < lo) | (z > hi)))


def replay_row(run: str) -> list:
  """One table row on the complete episodes in the replay buffer of ``run``'s newest complete
  checkpoint (ValueError naming the problem when there is none, or it holds no replay)."""
  import os  # pylint: disable=g-import-not-at-top
  from deepcrl_core import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from deepcrl_core import train as train_lib  # pylint: disable=g-import-not-at-top
  directory = os.path.join(run, "checkpoints")
  step = ckpt.latest_complete_step(directory)
  if step is None:
    raise ValueError(f"--replay: no complete checkpoint in {directory!r}")
  checkpointer = ckpt.RunCheckpointer(directory)
  meta = checkpointer.metadata(step)
  if not int(meta.get("replay_shards", 0)):
    raise ValueError(f"--replay: checkpoint {ckpt.step_dir(directory, step)} holds no replay "
                     "buffer (checkpoint.include_replay was false)")
  config = config_lib.from_resolved_dict(meta["config"])
  config.unlock()
  config.distributed.num_devices = 1  # a run trained on several devices, read on this one
  config.lock()
  c = train_lib.build(config)
  state_t, replay_t = train_lib.checkpoint_templates(c, True)
  state, arrays, meta = checkpointer.restore(step, state_t, replay_t)
  buf = ckpt.join_sharded(c.shapes.replay, arrays, state["replay_pos"])
  t = analysis.stored_trajectories(buf, c.env.goal_indices, c.env.state_size)
  length, travel = t["length"], t["travel"]
  if not len(length):
    raise ValueError(f"--replay: the buffer of {run!r} holds no complete episode")
  unhealthy = "-"
  if hasattr(c.env, "healthy_z"):
    unhealthy = f"{unhealthy_share(buf, c.env.healthy_z):.2f}"
  return [run, meta.get("epoch", ""), f"{int(meta.get('env_steps', 0)):,}", len(length),
          f"{np.median(length):.0f}", f"{length.mean():.0f}", f"{np.percentile(length, 90):.0f}",
          f"{length[length <= 100].sum() / length.sum():.2f}", f"{np.median(travel):.2f}",
          f"{np.percentile(travel, 90):.2f}", f"{np.median(t['goal_distance']):.2f}", unhealthy]


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--tasks", default="ant", help="comma-separated registered env names")
  p.add_argument("--policies", default="zero,random", help=f"comma-separated of {POLICIES}")
  p.add_argument("--episodes", type=int, default=256)
  p.add_argument("--episode_length", type=int, default=0,
                 help="control steps per episode (0 = the task's own limit)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--replay", default="",
                 help="comma-separated run directories: their stored training episodes")
  p.add_argument("--env_kwargs", default="",
                 help="constructor arguments of every task, KEY=VALUE,... (as env.kwargs.KEY)")
  p.add_argument("--out", default=None, help="also write the tables here (markdown)")
  args = p.parse_args(argv)
  problems = [names_problem("policies", args.policies, POLICIES)]
  if args.tasks or not args.replay:
    problems.append(names_problem("tasks", args.tasks, envs.registered_names()))
  if args.episodes <= 0:
    problems.append(f"--episodes must be positive, got {args.episodes}")
  if args.episode_length < 0:
    problems.append(f"--episode_length must be >= 0, got {args.episode_length}")
  try:
    args.env_kwargs = dict(config_lib.parse_overrides(args.env_kwargs))
  except config_lib.ConfigError as e:
    problems.append(f"--env_kwargs: {'; '.join(e.problems)}")
  problems = [m for m in problems if m]
  if problems:
    p.error("; ".join(problems))
  return args


def make_envs(tasks, env_kwargs) -> dict:
  """``{label: env}`` for each task, built with :func:`task_kwargs` (no compilation); the label
  is the task's name followed by those arguments. ValueError naming the task and the problem
  when a task rejects them."""
  built = {}
  for task in tasks:
    env, kwargs = make_task_env(task, env_kwargs)
    label = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    built[f"{task} ({label})" if label else task] = env
  return built


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  tasks = [t for t in args.tasks.split(",") if t]
  policies = [q for q in args.policies.split(",") if q]
  replay_rows = []
  for run in [r for r in args.replay.split(",") if r]:
    try:
      replay_rows.append(replay_row(run))
    except ValueError as e:
      print(f"episode_ends.py: {e}", file=sys.stderr)
      return 2
  try:
    built = make_envs(tasks, args.env_kwargs)
  except ValueError as e:
    print(f"episode_ends.py: {e}", file=sys.stderr)
    return 2
  end_rows, reset_rows = [], []
  for name, env in built.items():
    length = args.episode_length or env.episode_length
    qpos = None
    for policy in policies:
      episodes, qpos = rollout(env, policy, args.episodes, length, args.seed)
      end_rows += ends_rows(name, env, policy, episodes)
      print(f"{name} / {policy}: done", flush=True)
    if qpos is not None and hasattr(env, "mj_model"):
      depth = reset_penetration(env.mj_model, qpos)
      p50, p90, p99 = np.percentile(depth, [50, 90, 99])
      reset_rows.append([name, len(depth), f"{p50:.3f}", f"{p90:.3f}", f"{p99:.3f}",
                         f"{depth.max():.3f}", f"{(depth > DEEP).mean():.2f}"])
  text = [device_header()]
  if end_rows:
    text += ["", f"How {args.episodes} episodes end per task and fixed policy (seed "
             f"{args.seed})", "",
             markdown_table(["task", "policy", "episode ended by", "episodes", "share",
                             "success", "time at goal", "mean length", "median length"],
                            end_rows)]
  if replay_rows:
    text += ["", "Complete episodes stored in the replay buffer of each run's newest "
             "checkpoint (length in steps; travel = start-to-end distance of the goal "
             "coordinates, m)", "",
             markdown_table(["run", "epoch", "env steps", "episodes", "median length",
                             "mean length", "p90 length", "share of steps in episodes <= 100",
                             "median travel", "p90 travel", "median distance to the goal",
                             "share of stored steps outside the healthy height"],
                            replay_rows)]
  if reset_rows:
    text += ["", "Deepest contact penetration of the reset states (m)", "",
             markdown_table(["task", "resets", "median", "p90", "p99", "max",
                             f"share deeper than {DEEP * 100:.0f} cm"], reset_rows)]
  out = "\n".join(text)
  print(out)
  if args.out:
    with open(args.out, "w") as f:
      f.write(out + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
