"""XLA memory of one CRL gradient step (actor + alpha + critic) vs depth and remat policy.

    python profiling/memory_vs_depth.py --depths=64,256 --batches=512,4096

Compiles (does not run) the SGD step for the humanoid network sizes (state 268, goal 3,
action 17) and prints XLA's memory analysis: temporary buffers (activations, gradients,
optimiser scratch) and arguments (params + Adam state; donated, so outputs alias them).
Works on any backend; on GPU it is what the compiled step will allocate.
"""



import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends
from absl import app, flags  # noqa: E402

_DEPTHS = flags.DEFINE_list("depths", ["64", "256"], "Depths.")
_BATCHES = flags.DEFINE_list("batches", ["512", "4096"], "Batch sizes.")
_REMATS = flags.DEFINE_list("remats", ["none", "block", "nested"], "Remat policies.")
_WIDTH = flags.DEFINE_integer("width", 256, "Width.")
_IMPL = flags.DEFINE_string("impl", "xla", "Kernel impl.")


def step_memory_mb(depth, remat, batch, width, impl="xla"):
  """``(temp_mb, argument_mb)`` of the compiled SGD step."""
  import jax
  import jax.numpy as jnp
  from deepcrl_core import agent as agent_lib, losses as L, networks as nets
  spec = nets.NetworkSpec(state_size=268, goal_size=3, action_size=17, actor_depth=depth,
                          critic_depth=depth, width=width, repr_dim=64, kernel_impl=impl,
                          remat=remat)
  agent = agent_lib.Agent(nets.make_networks(spec),
                          L.LossConfig(kernel_impl=impl, target_entropy=-8.5), 3e-4, 3e-4, 3e-4)
  ts = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
  f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  batch_shapes = L.Transitions(f32(batch, 268), f32(batch, 17), f32(batch, 3))
  m = jax.jit(agent.sgd_step, donate_argnums=0).lower(ts, batch_shapes).compile().memory_analysis()
  return m.temp_size_in_bytes / 2**20, m.argument_size_in_bytes / 2**20


def main(argv):
  del argv
  depths = [int(d) for d in _DEPTHS.value]
  from profiling_common import device_header  # pylint: disable=g-import-not-at-top
  print(f"{device_header(with_mujoco=False)}, width {_WIDTH.value}")
  print("| remat | batch | " + " | ".join(f"depth {d} temp / args MB" for d in depths)
        + f" | temp ratio {depths[-1]}/{depths[0]} |")
  print("|---|---|" + "---|" * (len(depths) + 1))
  for remat in _REMATS.value:
    for batch in (int(b) for b in _BATCHES.value):
      mem = [step_memory_mb(d, remat, batch, _WIDTH.value, _IMPL.value) for d in depths]
      cells = " | ".join(f"{t:,.0f} / {a:,.0f}" for t, a in mem)
      print(f"| {remat} | {batch} | {cells} | {mem[-1][0] / mem[0][0]:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
