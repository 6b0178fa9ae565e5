"""deepcrl_core.plots and launch/plot.py: intervals against hand computations, curves and
final values from fabricated sweep.csv rows, the PNGs of a sweep and of a run (with a
residual_norms.csv fixture), and plot.py without JAX from any directory."""

import csv
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from deepcrl_core import plots

PLOT = os.path.join(REPO_ROOT, "launch", "plot.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# Student-t 0.975 quantiles in closed form: 1 degree of freedom is the Cauchy distribution,
# t = tan(pi (p - 1/2)); 2 degrees have CDF 1/2 + t / (2 sqrt(2 + t^2)), so t = a sqrt(2 / (1 -
# a^2)) with a = 2p - 1.
T975_DF1 = math.tan(math.pi * 0.475)
T975_DF2 = 0.95 * math.sqrt(2 / (1 - 0.95 ** 2))


def test_t_interval_against_hand_computation():
  assert T975_DF1 == pytest.approx(12.7062, abs=1e-4)
  assert T975_DF2 == pytest.approx(4.3027, abs=1e-4)
  # [1, 2, 3]: mean 2, s = 1 -> half width t(0.975, 2) / sqrt(3)
  m, lo, hi = plots.t_interval([1.0, 2.0, 3.0])
  assert m == 2.0
  assert hi - m == pytest.approx(T975_DF2 / math.sqrt(3), rel=1e-10)
  assert m - lo == pytest.approx(hi - m, rel=1e-12)
  # [0, 2]: s = sqrt(2), n = 2 -> half width t(0.975, 1) sqrt(2) / sqrt(2)
  m, lo, hi = plots.t_interval([0.0, 2.0])
  assert (m, hi) == (1.0, pytest.approx(1.0 + T975_DF1, rel=1e-10))
  # clipped to a metric's range: success cannot leave [0, 1]
  m, lo, hi = plots.t_interval([0.2, 0.9], bounds=(0.0, 1.0))
  assert math.isclose(m, 0.55) and lo == 0.0 and hi == 1.0
  m, lo, hi = plots.t_interval([0.0, 2.0], bounds=(0.0, None))
  assert lo == 0.0 and math.isclose(hi, 1.0 + 12.706204736 * 1.0, rel_tol=1e-6)
  assert plots.METRIC_BOUNDS["eval/success"] == (0.0, 1.0)
  m, lo, hi = plots.t_interval([5.0])
  assert m == 5.0 and math.isnan(lo) and math.isnan(hi)   # one seed: no band
  assert all(math.isnan(v) for v in plots.t_interval([]))


def _sweep_rows():
  """2 depths x 2 widths x 2 seeds, 6 evaluations each (seed 1 of depth 8 x width 32 only 5:
  its budget ended an epoch earlier)."""
  rows = []
  for depth in ("4", "8"):
    for width in ("32", "64"):
      for seed in (0, 1):
        n = 5 if (depth, width, seed) == ("8", "32", 1) else 6
        for e in range(1, n + 1):
          success = min(1.0, 0.05 * e * int(depth) / 4 + 0.02 * seed + int(width) / 1000)
          rows.append({"cell": f"depth-{depth}__width-{width}", "depth": depth, "width": width,
                       "seed": str(seed), "epoch": str(e), "env_steps": str(1000 * e),
                       "wall_s": str(10 * e), "run_wall_s": str(10 * e + seed),
                       "eval/success": str(success), "eval/time_at_goal": str(10 * success),
                       "eval/final_dist": str(1 - success), "critic_loss": "1.0"})
  return rows


def _write_csv(path, rows):
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def test_seed_curve_mean_and_band_per_evaluation():
  rows = [r for r in _sweep_rows() if r["cell"] == "depth-8__width-32"]
  curve = plots.seed_curve(rows, "eval/success", "env_steps")
  assert curve["x"].tolist() == [1000, 2000, 3000, 4000, 5000, 6000]
  assert curve["n"].tolist() == [2, 2, 2, 2, 2, 1]
  s0, s1 = 0.1 * 2 + 0.032, 0.1 * 2 + 0.052           # epoch 2 of seeds 0 and 1
  assert curve["mean"][1] == pytest.approx((s0 + s1) / 2)
  half = T975_DF1 * abs(s1 - s0) / math.sqrt(2) / math.sqrt(2)
  assert curve["high"][1] - curve["mean"][1] == pytest.approx(half)
  assert math.isnan(curve["low"][5])                    # one seed left: no band
  # against wall-clock: the seeds' mean run_wall_s
  assert plots.seed_curve(rows, "eval/success", "run_wall_s")["x"][0] == pytest.approx(10.5)


def test_final_values_mean_of_the_last_five_evaluations():
  rows = _sweep_rows()
  final = plots.final_values(rows, "eval/time_at_goal")
  # depth 4, width 32, seed 0: time at goal 10 * (0.05 e + 0.032) for e = 2..6
  expected = sum(10 * (0.05 * e + 0.032) for e in range(2, 7)) / 5
  assert final[("depth-4__width-32", "0")] == pytest.approx(expected)
  assert plots.final_values(rows, "eval/time_at_goal", last=1)[("depth-4__width-32", "0")] == (
      pytest.approx(10 * (0.3 + 0.032)))
  # the same number summary.json uses
  from deepcrl_core import summary  # pylint: disable=g-import-not-at-top
  assert plots.FINAL_EVALUATIONS == summary.LAST_EVALUATIONS


def test_sweep_axes_are_the_columns_between_cell_and_seed():
  assert plots.sweep_axes(["cell", "depth", "optim.actor_lr", "seed", "epoch"]) == [
      "depth", "optim.actor_lr"]
  with pytest.raises(ValueError, match="not a sweep.csv"):
    plots.sweep_axes(["epoch", "env_steps"])


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG_MAGIC


def _norm_rows(blocks=3):
  rows = []
  for epoch in (1, 2, 3, 4, 5, 6):
    for net in plots.NETWORKS:
      for b in range(-1, blocks):
        rows.append({"epoch": epoch, "env_steps": 1000 * epoch, "network": net, "block": b,
                     "branch_norm": "" if b < 0 else 0.5 * (b + 1) * epoch,
                     "stream_norm": 2.0 ** (b + 2) * epoch})
  return rows


def test_plot_sweep_writes_every_figure_from_the_csv(tmp_path):
  _write_csv(tmp_path / "sweep.csv", _sweep_rows())
  run = tmp_path / "runs" / "depth-4__width-32" / "seed_0"
  run.mkdir(parents=True)
  _write_csv(run / "residual_norms.csv", _norm_rows())
  written = plots.plot_sweep(str(tmp_path))
  names = sorted(os.path.basename(p) for p in written)
  assert names == ["curves_env_steps.png", "curves_wall_clock.png", "final_vs_depth.png",
                   "final_vs_width.png", "residual_norms__depth-4__width-32__seed_0.png",
                   "wall_clock_vs_depth.png"]
  assert all(_is_png(p) and os.path.dirname(p) == str(tmp_path / "figures") for p in written)


def test_plot_run_draws_curves_and_residual_norms(tmp_path):
  rows = [{"epoch": e, "env_steps": 100 * e, "wall_s": 3 * e if e < 3 else e, "sps": 1,
           "eval/success": 0.1 * e, "eval/time_at_goal": e, "eval/final_dist": 1 / e,
           "critic_loss": 2 / e, "actor_loss": 1, "alpha": 0.5, "entropy": -1,
           "critic_accuracy": 0.1 * e, "logsumexp": 0.2} for e in range(1, 6)]
  _write_csv(tmp_path / "metrics.csv", rows)
  _write_csv(tmp_path / "residual_norms.csv", _norm_rows())
  written = plots.plot_path(str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == [
      "curves_env_steps.png", "curves_wall_clock.png", "residual_norms.png", "training.png"]
  assert all(_is_png(p) for p in written)


def _run_rows(scale):
  return [{"epoch": e, "env_steps": 100 * e, "eval/success": scale * e, "eval/time_at_goal": e,
           "eval/final_dist": 1 / e, "critic_loss": 1} for e in range(1, 5)]


def test_plot_runs_draws_several_runs_on_one_figure(tmp_path):
  for name, scale in (("a", 0.1), ("b", 0.2)):
    (tmp_path / name).mkdir()
    _write_csv(tmp_path / name / "metrics.csv", _run_rows(scale))
  runs = [str(tmp_path / "a"), str(tmp_path / "b")]
  written = plots.plot_runs(runs, ["light", "heavy"], str(tmp_path / "figs"))
  assert written == [str(tmp_path / "figs" / "compare_env_steps.png")] and _is_png(written[0])
  with pytest.raises(ValueError, match="1 labels for 2 runs"):
    plots.plot_runs(runs, ["light"])
  # runs sharing a label are seeds of one setting: one curve, their mean
  written = plots.plot_runs(runs, ["x", "x"], str(tmp_path / "seeds"))
  assert _is_png(written[0])
  with pytest.raises(ValueError, match="must not be empty"):
    plots.plot_runs(runs, ["x", " "])
  with pytest.raises(ValueError, match="run directory given more than once: .*a"):
    plots.plot_runs([runs[0], runs[0] + "/"], ["x", "x"])
  (tmp_path / "d").mkdir()
  _write_csv(tmp_path / "d" / "metrics.csv",
             [dict(r, env_steps=r["env_steps"] * 2) for r in _run_rows(0.1)])
  with pytest.raises(ValueError, match=r"labelled 'x' .* epoch 1 is 100 env steps in .*a and "
                     r"200 in .*d; give them different labels"):
    plots.plot_runs([runs[0], str(tmp_path / "d")], ["x", "x"])
  plots.plot_runs([runs[0], str(tmp_path / "d")], ["x", "y"], str(tmp_path / "seeds"))
  with pytest.raises(ValueError, match="at least two run directories"):
    plots.plot_runs(runs[:1])
  with pytest.raises(ValueError, match="is not a run directory"):
    plots.plot_runs([runs[0], str(tmp_path)])
  (tmp_path / "c").mkdir()
  _write_csv(tmp_path / "c" / "metrics.csv", [{"epoch": 1, "env_steps": 10, "critic_loss": 1}])
  with pytest.raises(ValueError, match="has no evaluated rows"):
    plots.plot_runs([runs[0], str(tmp_path / "c")])


def test_window_table_averages_evaluations_per_window_by_hand(tmp_path):
  # 7 evaluations 0.4M apart; windows of 1M: {0.4, 0.8}, {1.2, 1.6}, {2.0, 2.4, 2.8}
  rows = [{"epoch": e, "env_steps": 400_000 * e, "eval/success": s, "eval/time_at_goal": 10 * e,
           "eval/final_dist": 3 - 0.1 * e, "critic_loss": 1}
          for e, s in enumerate((0.0, 0.2, 0.1, 0.6, 0.5, 0.7, 0.9), start=1)]
  rows.insert(3, {"epoch": 35, "env_steps": 1_400_000, "critic_loss": 1})  # not evaluated
  (tmp_path / "a").mkdir()
  _write_csv(tmp_path / "a" / "metrics.csv", rows)
  text = plots.window_table([str(tmp_path / "a")], 1_000_000, ["run a"], last=2)
  table, first = text.strip().split("\n\n")
  lines = table.splitlines()
  assert lines[0] == ("| run | env steps | evaluations | success (mean / max) | "
                      "time at goal (mean) | final distance (mean) |")
  assert lines[2:] == [
      "| run a | 0-1M | 2 | 0.100 / 0.200 | 15.0 | 2.85 |",
      "| run a | 1M-2M | 2 | 0.350 / 0.600 | 35.0 | 2.65 |",
      "| run a | 2M-2.8M | 3 | 0.700 / 0.900 | 60.0 | 2.40 |"]
  assert first.splitlines()[2] == "| run a | 2.8M | 7 | 800k | 1.6M | 0.800 | 65.0 |"
  # a run that never reaches a level says so; columns a run lacks are left out
  _write_csv(tmp_path / "a" / "metrics.csv", [{"epoch": 1, "env_steps": 39_680,
                                               "eval/success": 0.05}])
  text = plots.window_table([str(tmp_path / "a")], 1_000_000)
  assert f"| {tmp_path / 'a'} | 0-39.7k | 1 | 0.050 / 0.050 |" in text
  assert text.strip().endswith("| 39.7k | 1 | - | - | 0.050 | - |")
  with pytest.raises(ValueError, match="positive number of env steps"):
    plots.window_table([str(tmp_path / "a")], 0)
  with pytest.raises(ValueError, match="1 labels for 2 runs"):
    plots.window_table([str(tmp_path / "a")] * 2, 10, ["x"])
  with pytest.raises(ValueError, match="is not a run directory"):
    plots.window_table([str(tmp_path)], 10)
  (tmp_path / "sweep.csv").write_text("cell,seed\n")
  with pytest.raises(ValueError, match="it is a sweep directory: pass its runs"):
    plots.window_table([str(tmp_path)], 10)


def test_window_table_averages_runs_sharing_a_label_by_hand(tmp_path):
  # two seeds of one setting evaluated at 0.5M, 1M, 1.5M; a third run alone
  success = {"s0": (0.1, 0.3, 0.5), "s1": (0.2, 0.2, 0.9), "other": (0.0, 0.1, 0.2)}
  for name, values in success.items():
    (tmp_path / name).mkdir()
    _write_csv(tmp_path / name / "metrics.csv",
               [{"epoch": e, "env_steps": 500_000 * e, "eval/success": s,
                 "eval/time_at_goal": 100 * s} for e, s in enumerate(values, start=1)])
  runs = [str(tmp_path / n) for n in ("s0", "other", "s1")]
  text = plots.window_table(runs, 1_000_000, ["deep", "shallow", "deep"], last=2)
  per_run, first, settings = text.strip().split("\n\n")
  assert "| deep (1/2) | 0-1M | 1 | 0.100 / 0.100 | 10.0 |" in per_run
  assert "| shallow | 0-1M | 1 | 0.000 / 0.000 | 0.0 |" in per_run
  assert "| deep (2/2) | 1M-1.5M | 2 | 0.550 / 0.900 | 55.0 |" in per_run
  assert "| deep (2/2) | 1.5M | 3 | 500k | 1.5M | 0.550 | 55.0 |" in first
  lines = settings.splitlines()
  assert lines[0] == ("| setting | env steps | runs | success: mean over runs (min-max) | "
                      "time at goal: mean over runs (min-max) |")
  # window 1M-1.5M: s0 (0.3 + 0.5) / 2 = 0.4, s1 (0.2 + 0.9) / 2 = 0.55 -> 0.475 (0.4-0.55)
  assert lines[2:] == [
      "| deep | 0-1M | 2 | 0.150 (0.100-0.200) | 15.0 (10.0-20.0) |",
      "| deep | 1M-1.5M | 2 | 0.475 (0.400-0.550) | 47.5 (40.0-55.0) |",
      "| deep | last 2 evaluations | 2 | 0.475 (0.400-0.550) | 47.5 (40.0-55.0) |",
      "| shallow | 0-1M | 1 | 0.000 | 0.0 |",
      "| shallow | 1M-1.5M | 1 | 0.150 | 15.0 |",
      "| shallow | last 2 evaluations | 1 | 0.150 | 15.0 |"]
  # distinct labels: no per-setting table
  assert len(plots.window_table(runs, 1_000_000).strip().split("\n\n")) == 2


def test_residual_norms_fixture_checks_and_epoch_choice(tmp_path):
  _write_csv(tmp_path / "n.csv", _norm_rows(blocks=2))
  rows = plots.read_residual_norms(str(tmp_path / "n.csv"))
  assert rows[0] == {"epoch": 1, "env_steps": 1000, "network": "actor", "block": -1,
                     "branch_norm": None, "stream_norm": 2.0}
  assert plots.pick_epochs([1, 2, 3, 4, 5, 6]) == [1, 3, 4, 6]
  assert plots.pick_epochs([3, 1, 3]) == [1, 3]
  bad = [dict(r, network="critic") for r in _norm_rows(1)]
  _write_csv(tmp_path / "bad.csv", bad)
  with pytest.raises(ValueError, match="unknown network"):
    plots.read_residual_norms(str(tmp_path / "bad.csv"))
  _write_csv(tmp_path / "cols.csv", [{"epoch": 1, "block": 0}])
  with pytest.raises(ValueError, match="expected the columns"):
    plots.read_residual_norms(str(tmp_path / "cols.csv"))


def _plot_cmd(*args):
  # launch/plot.py as __main__, then a check that JAX was never imported
  code = ("import runpy, sys\n"
          f"sys.argv = [{PLOT!r}, *{list(args)!r}]\n"
          "try:\n"
          f"  runpy.run_path({PLOT!r}, run_name='__main__')\n"
          "except SystemExit as e:\n"
          "  code = e.code\n"
          "assert 'jax' not in sys.modules, 'plot.py imported jax'\n"
          "sys.exit(code)\n")
  return [sys.executable, "-c", code]


def test_plot_launcher_redraws_from_sweep_csv_without_jax_from_any_directory(tmp_path):
  sweep_dir = tmp_path / "sw"
  sweep_dir.mkdir()
  _write_csv(sweep_dir / "sweep.csv", _sweep_rows())
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  out = subprocess.run(_plot_cmd(str(sweep_dir)), capture_output=True, text=True, timeout=120,
                       cwd=str(elsewhere))
  assert out.returncode == 0, out.stderr
  printed = out.stdout.split()
  assert len(printed) == 5 and all(_is_png(p) for p in printed)
  out = subprocess.run(_plot_cmd(str(elsewhere)), capture_output=True, text=True, timeout=120,
                       cwd=str(elsewhere))
  assert out.returncode == 2 and "neither sweep.csv" in out.stderr


def test_plot_launcher_compares_runs_and_names_bad_labels(tmp_path):
  for name in ("a", "b"):
    (tmp_path / name).mkdir()
    _write_csv(tmp_path / name / "metrics.csv", _run_rows(0.1))
  runs = [str(tmp_path / "a"), str(tmp_path / "b")]
  out = subprocess.run(_plot_cmd(*runs, "--labels=x,y", f"--out={tmp_path}"),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == [str(tmp_path / "compare_env_steps.png")]
  out = subprocess.run(_plot_cmd(*runs, "--labels=x"), capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2 and "1 labels for 2 runs" in out.stderr
  out = subprocess.run(_plot_cmd(runs[0], "--labels=x"), capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 2 and "--labels applies to several run directories" in out.stderr
  out = subprocess.run(_plot_cmd(*runs, "--labels=x,y", "--windows=200"), capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert "| x | 0-200 | 1 | 0.100 / 0.100 | 1.0 | 1.00 |" in out.stdout
  assert "| y | 400-400 | 1 | 0.400 / 0.400 | 4.0 | 0.25 |" in out.stdout
  out = subprocess.run(_plot_cmd(*runs, "--windows=200", f"--out={tmp_path}"),
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and "--out applies to figures" in out.stderr
