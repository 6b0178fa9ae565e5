"""Arm physics settings: speed, robustness under random actions, and fidelity to the published model.

Each variant is a set of ``Arm`` keyword arguments (a physics preset plus overrides). For each
task and variant this measures:

* speed: env-steps/s and process CPU us per env-step, as ``profiling/env_throughput.py``
  (training wrappers, random actions, ``--num_envs`` envs);
* robustness: ``--stress_envs`` envs x ``--stress_steps`` control steps of uniform random
  actions; the largest cube speed (m/s) and height (m) seen. The published model stays under
  ~2.5 m/s and ~0.25 m; a solver that does not converge, or steps too long for the arm's speed,
  launch the cube far beyond;
* fidelity: scripted episodes (pick the cube up at 5 places of the start region; on the push
  tasks also push it along +x and -y from each), planned once against the ``published``
  variant (joint targets found by Gauss-Newton on its steady-state grip point, C MuJoCo), then
  replayed open-loop in MJX on every variant. Reported: mean and max distance between the
  final cube position and the published model's, and how many episodes end with the cube held
  above 0.1 m (published first).

  python profiling/arm_physics.py                      # all arm tasks, default variants
  python profiling/arm_physics.py --tasks=arm_push_easy --variants=published,fast --out=t.md
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Sequence, Tuple

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from deepcrl_core import envs
from deepcrl_core import tasks as tasks_lib
from deepcrl_core.envs import arm
from profiling_common import device_header  # noqa: E402  (this folder)

import env_throughput  # noqa: E402  pylint: disable=g-import-not-at-top

TASKS = tasks_lib.of_family("arm")
# name -> Arm kwargs ("impratio": "published" = the task's published value). "boxes_0.005" is
# the model this library used before the proxy contacts.
VARIANTS: Dict[str, dict] = {
    "published": dict(physics="published"),
    "fast": dict(physics="fast"),
    "fast_ls12": dict(physics="fast", ls_iterations=12),
    "fast_it3": dict(physics="fast", iterations=3),
    "fast_dt0.01": dict(physics="fast", timestep=0.01, n_substeps=5),
    "fast_impratio_pub": dict(physics="fast", impratio="published"),
    "boxes_0.005": dict(physics="published", timestep=0.005, n_substeps=10, max_contact_points=12),
}
GRIP_POINT = np.array([0.0, 0.0, 0.105])  # hand frame: between the finger pads
LIFTED_Z = 0.1


# ----------------------------------------------------------------------------- planning (C)
def _hold(env: arm.Arm, data: mujoco.MjData, action: Sequence[float], seconds: float) -> None:
  ctrl = np.asarray(env.ctrl_from_action(jnp.asarray(action, jnp.float32)))
  for _ in range(int(round(seconds / env.dt))):
    data.ctrl[:] = ctrl
    mujoco.mj_step(env.mj_model, data, nstep=env.n_substeps)


def _data(env: arm.Arm, cube_xy) -> mujoco.MjData:
  data = mujoco.MjData(env.mj_model)
  data.qpos[:] = np.asarray(env.init_qpos)
  data.qpos[0:2] = cube_xy
  mujoco.mj_forward(env.mj_model, data)
  return data


def grip_point(env: arm.Arm, data: mujoco.MjData) -> np.ndarray:
  hand = env.mj_model.body("hand").id
  return data.xpos[hand] + data.xmat[hand].reshape(3, 3) @ GRIP_POINT


def plan_reach(env: arm.Arm, target: np.ndarray, closed: bool, start=None) -> np.ndarray:
  """Arm action (4 dims) whose steady state puts the grip point at ``target``.

  Damped Gauss-Newton on 1 s holds from the start pose, the cube parked out of reach.
  """
  grip = 1.0 if closed else -1.0

  def error(a):
    data = _data(env, (5.0, 5.0))
    _hold(env, data, list(a) + [grip], 1.0)
    return grip_point(env, data) - target

  x = np.zeros(4) if start is None else np.array(start, float)
  r = error(x)
  for _ in range(25):
    if np.linalg.norm(r) < 1e-3:
      break
    jac = np.stack([(error(x + 0.02 * e) - r) / 0.02 for e in np.eye(4)], 1)
    step = np.linalg.solve(jac.T @ jac + 1e-3 * np.eye(4), jac.T @ r)
    for scale in (1.0, 0.5, 0.25, 0.1):
      xn = np.clip(x - scale * step, -1.0, 1.0)
      rn = error(xn)
      if np.linalg.norm(rn) < np.linalg.norm(r):
        break
    x, r = xn, rn
  return x


def scripted_episodes(env: arm.Arm, task: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
  """(names, cube start xy [E, 2], actions [E, T, 5]) of the scripted picks and pushes."""
  (cx, cy), (hx, hy) = arm.TASKS[task]["cube_region"]
  # in a bin, stay far enough from the walls for the open fingers to clear them
  spread = 0.3 if arm.TASKS[task]["bins"] else 0.7
  places = [(cx + sx * spread * hx, cy + sy * spread * hy)
            for sx, sy in ((0, 0), (1, 1), (-1, 1), (1, -1), (-1, -1))]
  names, starts, plans = [], [], []

  def sequence(parts):
    out = []
    for a, grip, seconds in parts:
      out += [list(a) + [grip]] * int(round(seconds / env.dt))
    return np.array(out, np.float32)

  for xy in places:
    cube = np.array([xy[0], xy[1], arm.CUBE_HALF])
    above = plan_reach(env, cube + [0, 0, 0.12], closed=False)
    at = plan_reach(env, cube + [0, 0, 0.01], closed=False, start=above)
    up = plan_reach(env, cube + [0, 0, 0.15], closed=True, start=above)
    names.append(f"pick at ({xy[0]:.2f}, {xy[1]:.2f})")
    starts.append(xy)
    plans.append(sequence([(above, -1, 1.0), (at, -1, 1.0), (at, 1, 0.5), (up, 1, 1.5)]))
    if arm.TASKS[task]["bins"]:
      continue
    for direction, length in (((1.0, 0.0), 0.12), ((0.0, -1.0), 0.1)):
      d = np.array([*direction, 0.0])
      start = plan_reach(env, cube - 0.07 * d, closed=True)
      over = plan_reach(env, cube - 0.07 * d + [0, 0, 0.1], closed=True, start=start)
      end = plan_reach(env, cube + (length - 0.07) * d, closed=True, start=start)
      names.append(f"push from ({xy[0]:.2f}, {xy[1]:.2f}) along {direction}")
      starts.append(xy)
      plans.append(sequence([(over, 1, 1.0), (start, 1, 1.0), (end, 1, 1.5)]))
  length = max(len(p) for p in plans)
  actions = np.stack([np.concatenate([p, np.repeat(p[-1:], length - len(p), 0)]) for p in plans])
  return names, np.array(starts, np.float32), actions


# ------------------------------------------------------------------------------ MJX replay
def replay(env: arm.Arm, starts: np.ndarray, actions: np.ndarray) -> np.ndarray:
  """Cube positions ``[E, T, 3]`` replaying ``actions [E, T, 5]`` from cube ``starts``."""

  def one(xy, acts):
    state = env.reset_at(xy, jnp.array([0.0, 0.0, arm.CUBE_HALF]))

    def body(s, a):
      s = env.step(s, a)
      return s, s.data.qpos[0:3]

    return jax.lax.scan(body, state, acts)[1]

  return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(starts), jnp.asarray(actions)))


def stress(env: arm.Arm, num_envs: int, steps: int) -> Tuple[float, float]:
  """(max cube speed, max cube height) over ``steps`` random-action control steps."""

  def run(key):
    state = jax.vmap(env.reset)(jax.random.split(key, num_envs))

    def body(carry, k):
      s, vmax, zmax = carry
      a = jax.random.uniform(k, (num_envs, env.action_size), minval=-1.0, maxval=1.0)
      s = jax.vmap(env.step)(s, a)
      v = jnp.max(jnp.linalg.norm(s.data.qvel[:, 0:3], axis=-1))
      z = jnp.max(s.data.qpos[:, 2])
      bad = ~jnp.isfinite(v) | ~jnp.isfinite(z)
      return (s, jnp.where(bad, jnp.inf, jnp.maximum(vmax, v)),
              jnp.where(bad, jnp.inf, jnp.maximum(zmax, z))), None

    init = (state, jnp.zeros(()), jnp.zeros(()))
    (_, vmax, zmax), _ = jax.lax.scan(body, init, jax.random.split(key, steps))
    return vmax, zmax

  vmax, zmax = jax.jit(run)(jax.random.PRNGKey(11))
  return float(vmax), float(zmax)


# ------------------------------------------------------------------------------------ main
def evaluate(task: str, variants: Sequence[str], args) -> List[dict]:
  short = task[len("arm_"):]
  published = arm.Arm(short, **VARIANTS["published"])
  names, starts, actions = scripted_episodes(published, short)
  reference = replay(published, starts, actions)
  rows = []
  for variant in variants:
    kwargs = dict(VARIANTS[variant])
    if kwargs.get("impratio") == "published":
      kwargs["impratio"] = arm.TASKS[short].get("impratio", 1.0)
    env = published if variant == "published" else arm.Arm(short, **kwargs)
    t0 = time.perf_counter()
    final = replay(env, starts, actions)[:, -1]
    err = np.linalg.norm(final - reference[:, -1], axis=-1)
    vmax, zmax = stress(env, args.stress_envs, args.stress_steps)
    speed = env_throughput.measure(task, args.num_envs, args.scan_length, args.repeats,
                                   env_kwargs=kwargs)
    rows.append(dict(task=task, variant=variant, steps_per_s=speed["steps_per_s"],
                     cpu_us=speed["cpu_us_per_step"], slots=speed["slots"],
                     dt=env.mj_model.opt.timestep, substeps=env.n_substeps,
                     iterations=env.mj_model.opt.iterations,
                     ls_iterations=env.mj_model.opt.ls_iterations,
                     impratio=env.mj_model.opt.impratio, vmax=vmax, zmax=zmax,
                     err_mean=float(np.nanmean(err)), err_max=float(np.nanmax(err)),
                     lifts=int(np.sum(final[:, 2] > LIFTED_Z)),
                     lifts_ref=int(np.sum(reference[:, -1, 2] > LIFTED_Z)),
                     episodes=len(names), seconds=time.perf_counter() - t0))
    print(f"# {task} {variant}: {rows[-1]['steps_per_s']:.0f} env-steps/s, cube err "
          f"{rows[-1]['err_mean'] * 100:.1f} cm", file=sys.stderr, flush=True)
  return rows


def format_table(rows: List[dict], args) -> str:
  lines = [
      device_header(),
      f"speed: {args.num_envs} envs, scan of {args.scan_length}, best of {args.repeats}; stress: "
      f"{args.stress_envs} envs x {args.stress_steps} random-action steps",
      "",
      "| task | variant | dt x substeps | Newton it / ls | impratio | slots | env-steps/s | CPU us / step "
      "| stress: cube max speed (m/s) / height (m) | final cube vs published: mean / max (cm) "
      "| lifted (published) |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['task']} | {r['variant']} | {r['dt']:g} x {r['substeps']} | {r['iterations']} / "
        f"{r['ls_iterations']} | {r['impratio']:g} | {r['slots']} | {r['steps_per_s']:,.0f} | {r['cpu_us']:.0f} | "
        f"{r['vmax']:.2f} / {r['zmax']:.2f} | {100 * r['err_mean']:.1f} / "
        f"{100 * r['err_max']:.1f} | {r['lifts']} of {r['episodes']} ({r['lifts_ref']}) |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default=",".join(TASKS))
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--num_envs", type=int, default=64)
  parser.add_argument("--scan_length", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--stress_envs", type=int, default=64)
  parser.add_argument("--stress_steps", type=int, default=200)
  parser.add_argument("--out", default=None, help="also write the table to this file")
  args = parser.parse_args(argv)
  tasks = [t for t in args.tasks.split(",") if t]
  variants = [v for v in args.variants.split(",") if v]
  for t in tasks:
    if t not in TASKS:
      parser.error(f"unknown arm task {t!r}; known: {', '.join(TASKS)}")
  for v in variants:
    if v not in VARIANTS:
      parser.error(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
  rows: List[dict] = []
  for task in tasks:
    rows += evaluate(task, variants, args)
    table = format_table(rows, args)
    if args.out:  # rewritten after every task, so a timeout keeps the finished rows
      with open(args.out, "w") as f:
        f.write(table + "\n")
  print(format_table(rows, args))
  return 0


if __name__ == "__main__":
  sys.exit(main())
