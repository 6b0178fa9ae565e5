"""Where a run's start-up compile time goes: XLA compile seconds per phase of the trainer.

Builds the config's run as ``launch/train.py`` does and calls the trainer's own functions, one
phase at a time, with the persistent compilation cache off: ``init`` (``train.init_run_state``:
parameters, optimiser state, env reset, empty replay), ``prefill`` (``train.prefill``),
``epoch`` (``train.make_epoch_fn`` compiled with the trainer's per-task compiler options) and
``eval`` (``train.make_eval_fn``). For each phase: the seconds XLA spent compiling (jax's
backend-compile events), how many executables it compiled, and the phase's wall-clock.

``--draws`` adds a table of one ``jax.random.uniform`` draw's compile time by shape, drawn
directly and drawn flat then reshaped (the same numbers), and a row ``init, 4-D weight draws``:
the ``init`` phase again with the residual blocks' weights drawn by
``hk.initializers.RandomUniform`` on their ``[blocks, 4, width, width]`` shape, as before
2026-12-06. XLA reads the CPU fusion-emitters flag at start-up, so compare ``--emitters=off``
(deepcrl's CPU default) with ``--emitters=on`` in two invocations.

  python profiling/compile_time.py --config=configs/pointmass.py --draws
  python profiling/compile_time.py --config=configs/ant.py:depth=64 --emitters=on
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List

from absl import app
from absl import flags

import deepcrl_core  # noqa: F401  (configure_cpu_xla_flags in main, before jax starts)

FLAGS = flags.FLAGS

DRAW_SHAPES = ((1024,), (32, 32), (4, 16, 16), (1, 4, 16, 16), (2, 4, 16, 16), (1, 4, 64, 64),
               (4, 4, 64, 64), (1, 4, 256, 256), (16, 4, 256, 256))


def _define_flags():
  """Flags only when run as a script (importing this module defines none)."""
  flags.DEFINE_string("config", "configs/pointmass.py", "Config (file.py[:k=v,...]).")
  flags.DEFINE_enum("emitters", "off", ["off", "on"],
                    "XLA:CPU fusion emitters for the whole process (deepcrl's CPU default: off).")
  flags.DEFINE_bool("draws", False, "Also time random draws by shape, and init with 4-D draws.")
  flags.DEFINE_string("out", None, "Also write the markdown tables to this file.")


class CompileClock:
  """Sums jax's backend-compile events (seconds, count) inside ``with CompileClock() as clock``."""

  EVENT = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch.BACKEND_COMPILE_EVENT

  def __init__(self):
    self.seconds, self.count = 0.0, 0
    self._listener = self._on_event  # one bound method: unregistered by identity

  def __enter__(self) -> "CompileClock":
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.register_event_duration_secs_listener(self._listener)
    return self

  def __exit__(self, *exc) -> None:
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.unregister_event_duration_listener(self._listener)

  def _on_event(self, event: str, duration: float, **_):
    if event == self.EVENT:
      self.seconds += duration
      self.count += 1

  def phase(self, fn: Callable[[], object]) -> Dict[str, float]:
    """Runs ``fn`` to completion; its compile seconds, executables and wall-clock."""
    import jax  # pylint: disable=g-import-not-at-top
    s0, n0, t0 = self.seconds, self.count, time.perf_counter()
    jax.block_until_ready(fn())
    return {"compile_s": self.seconds - s0, "executables": self.count - n0,
            "wall_s": time.perf_counter() - t0}


def run_phases(config, clock: CompileClock) -> List[Dict[str, object]]:
  """The trainer's start-up phases for ``config`` (see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  from deepcrl_core import _xla_flags  # pylint: disable=g-import-not-at-top
  from deepcrl_core import train as train_lib  # pylint: disable=g-import-not-at-top
  c = train_lib.build(config)
  rows: List[Dict[str, object]] = []
  state = {}

  def init():
    state["run"] = train_lib.init_run_state(c, config.seed)
    return state["run"]

  def prefill():
    state["run"] = train_lib.prefill(c, state["run"])
    return state["run"]

  def epoch():  # as the trainer compiles it (per-task CPU compiler options)
    options = _xla_flags.epoch_compiler_options(config.env.name, jax.default_backend())
    train_lib.make_epoch_fn(c).lower(state["run"]).compile(compiler_options=options)

  def evaluation():
    params = c.agent.policy_params(state["run"].training)
    train_lib.make_eval_fn(c).lower(params, jax.random.PRNGKey(config.seed + 1)).compile()

  for name, fn in (("init", init), ("prefill", prefill), ("epoch", epoch), ("eval", evaluation)):
    rows.append({"phase": name, **clock.phase(fn)})
  return rows


def init_with_4d_draws(config, clock: CompileClock) -> Dict[str, object]:
  """The ``init`` phase with the block weights drawn on their 4-D shape (haiku's initializer)."""
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import math  # pylint: disable=g-import-not-at-top
  from deepcrl_core import networks as nets  # pylint: disable=g-import-not-at-top
  from deepcrl_core import train as train_lib  # pylint: disable=g-import-not-at-top
  flat = nets._stacked_uniform  # pylint: disable=protected-access

  def four_d(fan_in):
    limit = math.sqrt(3.0 * nets.INIT_SCALE / fan_in)
    return hk.initializers.RandomUniform(-limit, limit)

  nets._stacked_uniform = four_d  # pylint: disable=protected-access
  try:
    c = train_lib.build(config)
    return {"phase": "init, 4-D weight draws",
            **clock.phase(lambda: train_lib.init_run_state(c, config.seed))}
  finally:
    nets._stacked_uniform = flat  # pylint: disable=protected-access


def draw_rows() -> List[List[str]]:
  """Compile seconds of one uniform draw by shape: direct, and flat then reshaped."""
  import math  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  def seconds(fn):
    lowered = jax.jit(fn).lower()
    t0 = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - t0

  rows = []
  for shape in DRAW_SHAPES:
    key = jax.random.PRNGKey(0)
    direct = lambda: jax.random.uniform(key, shape)
    flat = lambda: jax.random.uniform(key, (math.prod(shape),)).reshape(shape)
    timed = [f"{seconds(direct):.2f}", f"{seconds(flat):.2f}"]  # before any call caches them
    same = np.array_equal(jax.jit(direct)(), jax.jit(flat)())
    rows.append([str(shape), *timed, "yes" if same else "NO"])
  return rows


def main(argv):
  del argv
  deepcrl_core.configure_cpu_xla_flags(fusion_emitters=FLAGS.emitters == "on")
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_compilation_cache", False)  # every compile is timed cold
  jax.jit(lambda: 0)()  # the backend's own start-up is not a phase's
  from deepcrl_core import config as config_lib  # pylint: disable=g-import-not-at-top
  import profiling_common as pc  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config_file(FLAGS.config)
  out = [f"{pc.device_header()}; XLA:CPU fusion emitters {FLAGS.emitters}; "
         f"`python profiling/compile_time.py --config={FLAGS.config} --emitters={FLAGS.emitters}"
         f"{' --draws' if FLAGS.draws else ''}`", ""]
  with CompileClock() as clock:
    rows = run_phases(config, clock)
    if FLAGS.draws:
      rows.append(init_with_4d_draws(config, clock))
  out.append(pc.markdown_table(
      ["phase", "XLA compile s", "executables", "wall-clock s"],
      [[r["phase"], f"{r['compile_s']:.2f}", r["executables"], f"{r['wall_s']:.2f}"]
       for r in rows]))
  if FLAGS.draws:
    out += ["", pc.markdown_table(["uniform draw shape", "compile s, direct",
                                   "compile s, flat + reshape", "same numbers"], draw_rows())]
  text = "\n".join(out)
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
