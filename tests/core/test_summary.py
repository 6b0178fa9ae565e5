"""summary.json: the paper's headline numbers (last 5 evaluations) under the published names."""

import json

import pytest

from deepcrl_core import logging as log_lib
from deepcrl_core import summary


def _rows():
  rows = []
  for epoch in range(1, 9):
    row = {"epoch": epoch, "env_steps": 1000 * epoch, "critic_loss": 1.0}
    if epoch % 2 == 0 or epoch == 7:  # evaluated epochs: 2, 4, 6, 7, 8
      row["eval/time_at_goal"] = 10.0 * epoch
      row["eval/success"] = epoch / 10
    rows.append(row)
  rows[0]["eval/time_at_goal"] = 500.0   # epoch 1: an early evaluation, not among the last 5
  rows[0]["eval/success"] = 0.0
  return rows


def test_headline_metrics_average_the_last_five_evaluations():
  h = summary.headline_metrics(_rows())
  assert h["epochs"] == [2, 4, 6, 7, 8] and h["env_steps"] == [2000, 4000, 6000, 7000, 8000]
  assert h["eval/episode_success"] == pytest.approx(10 * (2 + 4 + 6 + 7 + 8) / 5)
  assert h["eval/episode_success_any"] == pytest.approx((2 + 4 + 6 + 7 + 8) / 50)
  assert h["num_evaluations"] == 5
  short = summary.headline_metrics(_rows()[:2])  # fewer evaluations than 5: those there are
  assert short["num_evaluations"] == 2 and short["eval/episode_success"] == pytest.approx(260.0)


def test_write_summary_reads_the_run_directorys_metrics_csv(tmp_path):
  csv_writer = log_lib.MetricsCSV(str(tmp_path / "metrics.csv"))
  for row in _rows():
    csv_writer.write(row)
  out = summary.write_summary(str(tmp_path), env="pointmass")
  on_disk = json.loads((tmp_path / "summary.json").read_text())
  assert on_disk == out
  assert on_disk["eval/episode_success"] == pytest.approx(54.0)
  assert on_disk["env"] == "pointmass" and on_disk["final_env_steps"] == 8000


def test_published_eval_metrics_renames_evaluate_output():
  out = summary.published_eval_metrics({"success": 0.5, "time_at_goal": 12.0, "final_dist": 0.3})
  assert out == {"eval/episode_success": 12.0, "eval/episode_success_any": 0.5,
                 "eval/final_dist": 0.3}


def test_a_training_run_writes_summary_json(tmp_path):
  from deepcrl_core import train as train_lib
  from tests.conftest import load_config as load
  config = load("pointmass", "width=32,num_envs=16,batch=64,epochs=3,train.unroll_length=10,"
                "train.sgd_steps=2,train.prefill_steps=20,train.train_steps_per_epoch=1,"
                "replay.capacity=100,replay.window_length=10,eval.num_envs=16,"
                "log.tensorboard=false")
  rows = train_lib.train(config, str(tmp_path), log_fn=lambda s: None)
  s = json.loads((tmp_path / "summary.json").read_text())
  assert s["epochs"] == [1, 2, 3] and s["env_steps"] == [r["env_steps"] for r in rows]
  assert s["eval/episode_success"] == pytest.approx(
      sum(r["eval/time_at_goal"] for r in rows) / 3, rel=1e-6)
  assert s["eval/episode_success_any"] == pytest.approx(
      sum(r["eval/success"] for r in rows) / 3, rel=1e-6)
  assert s["env"] == "pointmass"


def test_progress_line_shows_early_ends_only_where_episodes_ended_early():
  row = {"epoch": 3, "env_steps": 1000, "sps": 50.0, "critic_loss": 1.0, "critic_accuracy": 0.5,
         "actor_loss": 2.0, "alpha": 0.1, "eval/success": 0.25, "eval/time_at_goal": 30.0,
         "eval/final_dist": 1.5, "wall_s": 12.0}
  line = log_lib.format_progress({**row, "eval/terminated": 0.0}, 10)
  assert "ended early" not in line and line.endswith("dist 1.500 | 12s")
  line = log_lib.format_progress({**row, "eval/terminated": 0.42}, 10)
  assert line.endswith("dist 1.500 ended early 0.42 | 12s")
