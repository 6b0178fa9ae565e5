"""profiling/mjx_stages.py: per-stage MJX costs are measured and add up."""


import numpy as np

import mjx_stages


def test_stage_costs_for_a_small_env(capsys):
  row = mjx_stages.measure("pointmass", num_envs=4, loops=3, repeats=1)
  assert row["task"] == "pointmass" and row["substeps"] >= 1
  costs = np.array([row[s] for s in mjx_stages.STAGES])
  assert np.all(np.isfinite(costs))
  # raw loop costs are positive (the stage costs subtract the perturbation's cost, so on a
  # loaded machine a tiny stage may come out slightly negative)
  assert row["identity"] > 0 and row["mjx.step"] + row["identity"] > 0
  assert mjx_stages.main(["--tasks=pointmass", "--num_envs=2", "--loops=2", "--repeats=1"]) == 0
  out = capsys.readouterr().out
  assert "| pointmass |" in out and "mjx.step" in out
