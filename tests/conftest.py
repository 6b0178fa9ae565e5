"""Shared pytest setup.

The CPU XLA fusion emitters make MJX kinematics and Pallas interpret mode pathologically slow
under jax 0.10.2; ``deepcrl_core.configure_cpu_xla_flags`` turns them off (appended to any
XLA_FLAGS of the user's) before jax starts its backends.
A persistent compilation cache lets repeated identical compiles (e.g. a resumed run) hit disk.
"""

import os

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("DEEPCRL_TEST_JAX_CACHE", "/tmp/deepcrl_test_jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def load_config(name: str, overrides: str = ""):
  """``configs/<name>.py`` with ``overrides``, as the launcher loads it."""
  from deepcrl_core import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_config_file(
      os.path.join(REPO_ROOT, "configs", f"{name}.py") + (f":{overrides}" if overrides else ""))


# A pointmass run that trains for seconds: 4 epochs of 2 training steps x 4 gradient steps,
# a checkpoint every epoch (the resume, lock and progress tests share it).
TINY_RUN = ("width=32,num_envs=16,batch=64,epochs=4,train.unroll_length=10,train.sgd_steps=4,"
            "train.prefill_steps=20,train.train_steps_per_epoch=2,replay.capacity=100,"
            "replay.window_length=20,eval.num_envs=16,checkpoint.every=1,checkpoint.keep=3")


def final_checkpoint(workdir: str):
  """``(step, {file/array: values})`` of a run's newest complete checkpoint (the state and the
  replay shards), for bit-exact resume comparisons."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from deepcrl_core import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  d = os.path.join(workdir, "checkpoints")
  last = ckpt.latest_complete_step(d)
  out = {}
  for name in sorted(os.listdir(ckpt.step_dir(d, last))):
    with np.load(os.path.join(ckpt.step_dir(d, last), name)) as f:
      out.update({f"{name}/{k}": f[k] for k in f.files if k != "__metadata__"})
  return last, out


def assert_close_to_rounding(actual, expected, *, terms: int, ulps: float = 16.0):
  """Asserts two float32 results agree to what reordered float32 sums can change.

  Two computations of the same value in float32 (e.g. a rematerialised backward pass, or XLA's
  CPU code on another processor) may sum in another order. Each reordering perturbs a result by
  about ``eps * sqrt(terms)`` times the magnitude of what is being summed, so the tolerance is
  ``ulps * eps32 * sqrt(terms) * max|expected|`` per array, where ``terms`` is the number of
  values accumulated along the path that produced it (e.g. depth x width for a trunk's
  gradient). A real bug (a wrong or missing term) is many orders of magnitude larger.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  expected = np.asarray(expected, np.float64)
  scale = float(np.max(np.abs(expected))) if expected.size else 0.0
  atol = ulps * float(np.finfo(np.float32).eps) * np.sqrt(terms) * max(scale, 1e-30)
  np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0, atol=atol)


def enable_x64():
  """Context manager turning on 64-bit types (the API moved between jax releases)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(True)
  from jax.experimental import enable_x64 as ctx  # pylint: disable=g-import-not-at-top
  return ctx()


def assert_compile_flat_in_depth(make_trunk):
  """``make_trunk(depth)`` -> a Haiku-transformed trunk (input 10, output 16): the gradient of
  its depth-256 form compiles to a program within 1.1x the length of depth 8's (one scanned block body;
  1 block is shorter, XLA simplifies a one-trip scan), and no slower than 2x depth 4's on
  wall-clock -- shallow and deep compiles interleaved so that both see the same load (CI runs
  another test worker beside this one), the minimum of each over up to 5 rounds."""
  import time  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def compile_once(depth):
    t = make_trunk(depth)
    x = jnp.ones((32, 10))
    params = jax.eval_shape(t.init, jax.random.PRNGKey(0), x)
    loss = lambda p, x: jnp.sum(t.apply(p, x) ** 2)
    start = time.perf_counter()
    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    return time.perf_counter() - start, len(compiled.as_text().splitlines())

  assert compile_once(256)[1] < 1.1 * compile_once(8)[1]
  shallow = deep = float("inf")
  for _ in range(5):
    shallow = min(shallow, compile_once(4)[0])
    deep = min(deep, compile_once(256)[0])
    if deep < 2.0 * shallow + 0.05:
      break
  assert deep < 2.0 * shallow + 0.05, (shallow, deep)
