"""Short CPU training runs on the paper's tasks (a few hundred env steps; no learning asserted)."""

import math

import pytest

from deepcrl_core import envs
from deepcrl_core import train as train_lib
from tests.conftest import load_config as load

# No prefill (one env compile fewer); 2 epochs x 2 training steps x 8 envs x 10 steps = 320
# env steps. Only the maze also evaluates (on its far-goal layout), to bound compile time.
SMOKE = ("width=32,num_envs=8,batch=32,epochs=2,env.episode_length=40,train.unroll_length=10,"
         "train.sgd_steps=2,train.prefill_steps=0,train.train_steps_per_epoch=2,"
         "replay.capacity=60,replay.window_length=10,eval.num_envs=8,log.tensorboard=false")


@pytest.mark.parametrize("task, evaluate", [
    pytest.param("ant", False, marks=pytest.mark.slow),  # the maze below runs the same ant
    ("ant_u4_maze", True), ("arm_push_easy", False), pytest.param("humanoid", False, marks=pytest.mark.slow)])
def test_paper_task_trains_on_cpu(task, evaluate, tmp_path):
  if not envs.is_registered(task):
    pytest.fail(f"{task} is not registered")
  config = load(task, SMOKE + f",eval.every={int(evaluate)}")
  rows = train_lib.train(config, str(tmp_path), log_fn=lambda s: None)
  assert [r["epoch"] for r in rows] == [1, 2]
  assert rows[-1]["env_steps"] == 2 * 8 * 10 * 2
  for key in ("critic_loss", "actor_loss", "alpha_loss"):
    assert math.isfinite(rows[-1][key]), key
  if evaluate:
    assert math.isfinite(rows[-1]["eval/final_dist"])
    assert 0.0 <= rows[-1]["eval/success"] <= 1.0
    # a share of episodes; a run of the ant (which can terminate) logs it every evaluation
    assert 0.0 <= rows[-1]["eval/terminated"] <= 1.0
