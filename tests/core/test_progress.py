"""In-epoch progress: the line's numbers and throttling, and that dispatching an epoch one
training step per call computes what one call computes."""

import jax
import numpy as np

from deepcrl_core import progress as progress_lib
from deepcrl_core import train as train_lib
from tests.conftest import assert_close_to_rounding
from tests.conftest import load_config as load
from tests.conftest import TINY_RUN as TINY


class FakeClock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def test_progress_line_rate_eta_and_throttle():
  clock, lines = FakeClock(), []
  p = progress_lib.Progress(lines.append, num_epochs=10, grad_steps_per_epoch=1000,
                            sgd_steps_per_train_step=100, env_steps_per_train_step=5000,
                            prefill_env_steps=7000, interval_s=30.0, clock=clock)
  p.eval_s = 12.0
  p.start_epoch(3, 2000, evals_left=8)
  clock.t = 10.0
  p.tick(2100)            # < 30 s since the epoch started: silent
  assert lines == []
  clock.t = 40.0
  p.tick(2400)            # 400 steps in 40 s: 10 steps/s
  assert len(lines) == 1
  line = lines[0]
  assert line.startswith("epoch 3/10 | 400/1,000 grad steps | env steps 127,000 | 10.0 grad "
                         "steps/s"), line
  # 7,000 prefill + 24 training steps x 5,000. Epoch: 600 steps left at 10/s = 60 s; run: 600 + 7 x 1000 steps = 760 s + 8 evals x 12 s.
  assert line.endswith("ETA epoch 1m00s, run 14m16s"), line
  clock.t = 50.0
  p.tick(2500)            # 10 s after the last line: silent
  p.tick(2400)            # a step already seen: ignored
  assert len(lines) == 1
  p.end_epoch()
  clock.t = 500.0
  p.tick(3000)            # between epochs: nothing
  assert len(lines) == 1


def test_format_duration():
  assert progress_lib.format_duration(5.4) == "5s"
  assert progress_lib.format_duration(125) == "2m05s"
  assert progress_lib.format_duration(3 * 3600 + 61) == "3h01m"
  assert progress_lib.format_duration(float("nan")) == "?"


def test_per_step_dispatch_computes_the_same_epoch():
  c = train_lib.build(load("pointmass", TINY))
  n = c.config.train.train_steps_per_epoch
  one_call = train_lib.make_epoch_fn(c)
  per_step = train_lib.make_epoch_fn(c, steps=1)
  run_a = train_lib.init_run_state(c, 0)
  run_b = train_lib.init_run_state(c, 0)
  run_a, m_a = train_lib.run_epoch(one_call, run_a)
  ticks = []
  run_b, m_b = train_lib.run_epoch(per_step, run_b, n, on_step=ticks.append)
  assert ticks == list(range(1, n + 1))
  assert m_a.keys() == m_b.keys()
  a, b = jax.device_get((run_a, run_b))
  assert int(a.training.grad_steps) == int(b.training.grad_steps) == n * c.config.train.sgd_steps
  # Same math; XLA may order float32 sums differently inside and outside the epoch's loop.
  for x, y in zip(jax.tree.leaves(a.training.critic_params), jax.tree.leaves(b.training.critic_params)):
    assert_close_to_rounding(y, x, terms=10 ** 4, ulps=64)
  np.testing.assert_array_equal(a.replay.traj_id, b.replay.traj_id)
