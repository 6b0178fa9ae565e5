"""How accurate is the actor's float32 gradient? Each tanh log-density against float64.

For each seed: a fresh agent (the kernel-vs-XLA test's small shapes: state 4, goal 2, action 2,
actor depth 4, critic depth 8, width 64, batch 37), one actor-loss gradient computed three
ways -- XLA in float32, the Pallas kernels through the interpreter in float32, XLA in float64
from the same float32 parameters, batch and policy noise -- for each ``loss.tanh_correction``.
Reported per seed and correction: the largest difference of each path from float64, and of
the kernels from XLA, as a fraction of the gradient leaf's largest entry (the worst leaf), and
the largest policy log-std in the batch (how saturated the sampled actions are).

  python profiling/actor_grad_precision.py --seeds=8 --out=/tmp/actor_grad_precision.md
"""

from __future__ import annotations

import argparse
import sys

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
import jax
import jax.numpy as jnp
import numpy as np

from deepcrl_core import agent as agent_lib
from deepcrl_core import losses as L
from deepcrl_core import networks as nets

BATCH = 37


def _agent(impl: str, correction: str) -> agent_lib.Agent:
  spec = nets.NetworkSpec(state_size=4, goal_size=2, action_size=2, actor_depth=4,
                          critic_depth=8, width=64, repr_dim=16, kernel_impl=impl, remat="block")
  cfg = L.LossConfig(energy="l2", variant="forward", logsumexp_penalty=0.1, target_entropy=-1.0,
                     kernel_impl=impl, tanh_correction=correction)
  return agent_lib.Agent(nets.make_networks(spec), cfg, 3e-4, 3e-4, 3e-4)


def _cast(tree, dtype):
  return jax.tree.map(
      lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _float32_noise_normal(normal):
  """``jax.random.normal`` drawing float32 numbers in any dtype: under x64 a float64 draw would
  be other numbers, and the float64 reference must see the float32 run's policy noise."""
  def draw(key, shape=(), dtype=jnp.float32):
    return normal(key, shape, jnp.float32).astype(dtype)
  return draw


def _actor_grad(impl: str, dtype, seed: int, correction: str):
  init_agent, agent = _agent("xla", correction), _agent(impl, correction)
  k_s, k_a, k_g = jax.random.split(jax.random.PRNGKey(seed), 3)
  batch = L.Transitions(
      state=jax.random.normal(k_s, (BATCH, 4), jnp.float32),
      action=jax.random.uniform(k_a, (BATCH, 2), jnp.float32, minval=-1, maxval=1),
      goal=jax.random.normal(k_g, (BATCH, 2), jnp.float32))
  # Under x64 init draws float64 parameters: round them to float32 first, so the float64
  # reference starts from exactly the float32 runs' parameters.
  ts = _cast(_cast(init_agent.init(jax.random.PRNGKey(seed + 1)), jnp.float32), dtype)
  batch = _cast(batch, dtype)
  grad = jax.grad(lambda p: L.actor_loss(p, ts.critic_params, ts.log_alpha, agent.networks, batch,
                                         jax.random.PRNGKey(seed + 2), agent.loss_cfg)[0])
  _, log_std = agent.networks.actor.apply(ts.actor_params, batch.obs)
  return jax.jit(lambda: grad(ts.actor_params))(), float(jnp.max(log_std))


def _worst_relative(a, ref) -> float:
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(r, np.float64)))
                   / np.max(np.abs(np.asarray(r, np.float64))))
             for x, r in zip(jax.tree.leaves(a), jax.tree.leaves(ref)))


def measure(seed: int, correction: str) -> dict:
  g_xla, log_std = _actor_grad("xla", jnp.float32, seed, correction)
  g_kernels, _ = _actor_grad("interpret", jnp.float32, seed, correction)
  g_ref, _ = _actor_grad("xla", jnp.float64, seed, correction)
  return {"seed": seed, "correction": correction, "max_log_std": log_std,
          "xla_vs_f64": _worst_relative(g_xla, g_ref),
          "kernels_vs_f64": _worst_relative(g_kernels, g_ref),
          "kernels_vs_xla": _worst_relative(g_kernels, g_xla)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, default=8)
  parser.add_argument("--corrections", default="published,exact")
  parser.add_argument("--out", default=None, help="also write the markdown table here")
  args = parser.parse_args(argv)
  corrections = args.corrections.split(",")
  bad = [c for c in corrections if c not in nets.TANH_CORRECTIONS]
  if bad or args.seeds < 1:
    parser.error(f"--corrections takes {nets.TANH_CORRECTIONS}, got {bad}" if bad
                 else "--seeds must be >= 1")
  jax.config.update("jax_enable_x64", True)
  jax.random.normal = _float32_noise_normal(jax.random.normal)
  lines = ["| correction | seed | max log-std | XLA f32 vs f64 | kernels f32 vs f64 "
           "| kernels vs XLA |", "|---|---|---|---|---|---|"]
  print("\n".join(lines), flush=True)
  for correction in corrections:
    for seed in range(args.seeds):
      r = measure(seed, correction)
      lines.append(f"| {correction} | {seed} | {r['max_log_std']:.2f} | {r['xla_vs_f64']:.1e} "
                   f"| {r['kernels_vs_f64']:.1e} | {r['kernels_vs_xla']:.1e} |")
      print(lines[-1], flush=True)
  if args.out:
    with open(args.out, "w") as f:
      f.write("\n".join(lines) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
