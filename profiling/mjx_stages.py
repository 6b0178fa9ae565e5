"""Where an MJX physics step spends its time: per-stage cost of one substep, per env.

Each stage (smooth dynamics, collision, constraint assembly, actuation + smooth acceleration,
constraint solver, and the whole ``mjx.step``) runs ``--loops`` times inside one jitted
``lax.scan`` over a batch of ``--num_envs`` states taken from a random-action rollout. Every
float of the state is perturbed each iteration so that XLA cannot hoist the work out of the
loop; the cost of the perturbation alone ("identity") is subtracted.

  python profiling/mjx_stages.py --tasks=ant,arm_push_easy,arm_binpick_hard
"""

from __future__ import annotations

import argparse
import sys

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
import jax
import jax.numpy as jnp
from mujoco import mjx
from mujoco.mjx._src import collision_driver, constraint, forward, passive, smooth, solver

from deepcrl_core import envs
from deepcrl_core.envs import mjcf
from profiling_common import device_header, time_calls  # noqa: E402  (this folder)

STAGES = ("smooth", "collision", "constraints", "actuation+accel", "solver", "mjx.step")


def _stage_fns(m):
  def smooth_part(d):
    d = smooth.kinematics(m, d)
    d = smooth.com_pos(m, d)
    d = smooth.crb(m, d)
    d = smooth.factor_m(m, d)
    d = smooth.com_vel(m, d)
    d = passive.passive(m, d)
    return smooth.rne(m, d)

  return {
      "identity": lambda d: d,
      "smooth": smooth_part,
      "collision": lambda d: collision_driver.collision(m, d),
      "constraints": lambda d: constraint.make_constraint(m, d),
      "actuation+accel": lambda d: forward.fwd_acceleration(m, forward.fwd_actuation(m, d)),
      "solver": lambda d: solver.solve(m, d),
      "mjx.step": lambda d: mjx.step(m, d),
  }


def measure(name: str, num_envs: int, loops: int, repeats: int) -> dict:
  env = envs.make(name).unwrapped
  m = env.mjx_model
  state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), num_envs))
  step = jax.jit(jax.vmap(env.step))
  for i in range(30):  # get some contacts going
    action = jax.random.uniform(jax.random.PRNGKey(i), (num_envs, env.action_size),
                                minval=-1.0, maxval=1.0)
    state = step(state, action)
  data = jax.jit(jax.vmap(lambda d: mjx.forward(m, d)))(state.data)
  costs = {}
  for stage, fn in _stage_fns(m).items():
    def loop(d, fn=fn):
      def body(d, i):
        d = jax.tree.map(lambda x: x * (1 + 1e-7 * i)
                         if jnp.issubdtype(x.dtype, jnp.floating) else x, d)
        return jax.vmap(fn)(d), None
      return jax.lax.scan(body, d, jnp.arange(loops, dtype=jnp.float32))[0]
    run = jax.jit(loop)
    best = time_calls(lambda run=run: run(data), repeats).best_s
    costs[stage] = 1e6 * best / (loops * num_envs)
  ident = costs.pop("identity")
  row = {k: v - ident for k, v in costs.items()}
  row["identity"] = ident
  row.update(task=name, substeps=env.n_substeps, slots=mjcf.count_contact_slots(env.mj_model),
             nefc=int(data._impl.efc_J.shape[1]),  # pylint: disable=protected-access
             iterations=env.mj_model.opt.iterations, ls=env.mj_model.opt.ls_iterations)
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="ant,arm_push_easy,arm_binpick_hard")
  parser.add_argument("--num_envs", type=int, default=64)
  parser.add_argument("--loops", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  rows = [measure(t, args.num_envs, args.loops, args.repeats)
          for t in args.tasks.split(",") if t]
  print(f"{device_header()}; {args.num_envs} envs, us per env per substep")
  print()
  print("| task | substeps | Newton it / ls | contact slots | constraint rows | "
        + " | ".join(STAGES) + " |")
  print("|---|---|---|---|---|" + "---|" * len(STAGES))
  for r in rows:
    print(f"| {r['task']} | {r['substeps']} | {r['iterations']} / {r['ls']} | {r['slots']} | "
          f"{r['nefc']} | " + " | ".join(f"{r[s]:.1f}" for s in STAGES) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
