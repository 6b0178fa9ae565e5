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
_AGENT = flags.DEFINE_string("agent", "crl", "Agent (deepcrl_core.agents) whose step is measured.")


def step_memory_mb(depth, remat, batch, width, impl="xla", agent="crl"):
  """``(temp_mb, argument_mb)`` of ``agent``'s compiled SGD step (humanoid input sizes), the
  agent assembled as training assembles it (:func:`deepcrl_core.train.build_agent`)."""
  import jax
  from deepcrl_core import config as config_lib, train as train_lib
  from step_time_measure import random_batch  # pylint: disable=g-import-not-at-top
  config = config_lib.make_config(
      f"agent={agent},depth={depth},width={width},remat={remat},impl={impl},batch={batch}")
  sizes = train_lib.EnvSizes(state_size=268, goal_size=3, action_size=17)
  built = train_lib.build_agent(config, sizes)
  ts = jax.eval_shape(built.init, jax.random.PRNGKey(0))
  batch_shapes = jax.eval_shape(lambda: random_batch(jax.random.PRNGKey(1), batch, tuple(sizes),
                                                     built, config))
  m = jax.jit(built.sgd_step, donate_argnums=0).lower(ts, batch_shapes).compile().memory_analysis()
  return m.temp_size_in_bytes / 2**20, m.argument_size_in_bytes / 2**20


def main(argv):
  del argv
  depths = [int(d) for d in _DEPTHS.value]
  from profiling_common import device_header  # pylint: disable=g-import-not-at-top
  print(f"{device_header(with_mujoco=False)}, width {_WIDTH.value}, agent {_AGENT.value}")
  print("| remat | batch | " + " | ".join(f"depth {d} temp / args MB" for d in depths)
        + f" | temp ratio {depths[-1]}/{depths[0]} |")
  print("|---|---|" + "---|" * (len(depths) + 1))
  for remat in _REMATS.value:
    for batch in (int(b) for b in _BATCHES.value):
      mem = [step_memory_mb(d, remat, batch, _WIDTH.value, _IMPL.value, _AGENT.value)
             for d in depths]
      cells = " | ".join(f"{t:,.0f} / {a:,.0f}" for t, a in mem)
      print(f"| {remat} | {batch} | {cells} | {mem[-1][0] / mem[0][0]:.2f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
