"""profiling/step_split.py: the gradient step split into gradients and the Adam update."""

import csv
import subprocess
import sys

import jax
import numpy as np
import pytest

import step_split


def test_grads_and_update_recompose_the_step():
  """grads + update on a state equal one sgd_step (the split measures the step's own parts),
  and the unrolled FLOP count grows with depth (a jit trace-cache hit would freeze it)."""
  from deepcrl_core import config as config_lib
  import step_time_measure as stm
  rows = {}
  for depth in (4, 8):
    config = config_lib.load_config_file(
        f"configs/pointmass.py:network.actor_depth={depth},network.critic_depth={depth},"
        "network.width=32,train.batch_size=16")
    sizes = stm.network_sizes(config.env.name)
    agent = stm.make_agent(config, sizes)
    ts = agent.init(jax.random.PRNGKey(0))
    b = stm.random_batch(jax.random.PRNGKey(1), 16, sizes, agent, config)
    want, _ = jax.jit(agent.sgd_step)(ts, b)
    grads_fn = step_split._crl_grads(agent)
    got = jax.jit(step_split._crl_update(agent))(ts, jax.jit(grads_fn)(ts, b))
    for name in ("actor_params", "critic_params", "log_alpha", "critic_opt_state"):
      for g, w in zip(jax.tree.leaves(getattr(got, name)), jax.tree.leaves(getattr(want, name))):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)
    rows[depth] = step_split._flops(grads_fn, ts, b)  # grads_fn already traced by jit above
  assert rows[8] > 1.5 * rows[4]


@pytest.mark.slow
def test_script_writes_its_table(tmp_path):
  subprocess.run([sys.executable, "profiling/step_split.py", "--config=configs/pointmass.py",
                  "--depths=4,8", "--batches=16", "--width=32", "--rounds=1", "--calls=1",
                  f"--out={tmp_path}"], check=True, capture_output=True, timeout=600)
  with open(tmp_path / "step_split.csv") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["depth"]) for r in rows] == [4, 8]
  assert all(float(r["grads_ms"]) > 0 and float(r["update_ms"]) > 0 for r in rows)
  assert "grads: ms" in (tmp_path / "step_split.md").read_text()
