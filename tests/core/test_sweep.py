"""launch/sweep.py and deepcrl_core.sweep: grids, validation, run plans, run-directory status,
budgets across resumes, the manifest, device assignment, the scheduler (with a fake trainer),
sweep.csv, and real sweeps of tiny point-mass runs."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, TINY_RUN
from deepcrl_core import rundir
from deepcrl_core import sweep

POINTMASS = os.path.join(REPO_ROOT, "configs", "pointmass.py")
SWEEP = os.path.join(REPO_ROOT, "launch", "sweep.py")


# --- grids -------------------------------------------------------------------------------------


def test_grid_cross_product_first_axis_slowest():
  axes = sweep.parse_grid("depth=4,8,16; width=256,512")
  assert axes == [sweep.Axis("depth", ("4", "8", "16")), sweep.Axis("width", ("256", "512"))]
  cells = sweep.grid_cells(axes)
  assert [c.name for c in cells] == [
      "depth-4__width-256", "depth-4__width-512", "depth-8__width-256", "depth-8__width-512",
      "depth-16__width-256", "depth-16__width-512"]
  assert cells[3].overrides == "depth=8,width=512"
  assert cells[3].value("width") == "512"
  assert sweep.grid_cells(sweep.parse_grid("")) == [sweep.Cell("base", ())]


def test_grid_shortcuts_dotted_keys_and_value_texts():
  axes = sweep.parse_grid("batch=256,512;optim.actor_lr=1e-4,3e-4;env.kwargs.physics=published;"
                          "loss.energy='l2',\"dot\"")
  assert sweep.field_path("batch") == ("train.batch_size",)
  assert sweep.field_path("optim.actor_lr") == ("optim.actor_lr",)
  cells = sweep.grid_cells(axes)
  assert len(cells) == 8
  # values are passed as written; unsafe characters only change the directory name
  assert cells[0].overrides == "batch=256,optim.actor_lr=1e-4,env.kwargs.physics=published,loss.energy='l2'"
  assert cells[0].name == "batch-256__optim.actor_lr-1e-4__env.kwargs.physics-published__loss.energy-_l2_"


@pytest.mark.parametrize("grid, expected", [
    ("depth=4;;width=8", ["empty axis"]),
    ("depth", ["expected key=value"]),
    ("4x=1", ["bad key '4x'"]),
    ("depth=", ["empty value"]),
    ("depth=4,,8", ["empty value"]),
    ("depth=4,4", ["repeats the value(s) 4"]),
    ("depth=4;network.depth=8", ["'network.depth' sets the same field as axis 'depth'"]),
    ("seed=1,2", ["use --seeds"]),
    ("train.max_seconds=10", ["use --budget_s"]),
    # every problem at once
    ("depth;width=;seed=0;depth=4", ["expected key=value", "empty value", "use --seeds"]),
])
def test_malformed_grids_are_refused_with_every_problem(grid, expected):
  with pytest.raises(sweep.SweepError) as e:
    sweep.parse_grid(grid)
  assert len(e.value.problems) == len(expected)
  for text, problem in zip(expected, e.value.problems):
    assert text in problem


def test_cells_sharing_a_directory_name_are_refused():
  with pytest.raises(sweep.SweepError, match="share a run directory"):
    sweep.grid_cells(sweep.parse_grid("env.eval_name='a b','a_b'"))


def test_validation_lists_every_cell_problem_before_anything_runs(tmp_path):
  cells = sweep.grid_cells(sweep.parse_grid("depth=4,6;width=0,8;foo=1"))
  with pytest.raises(sweep.SweepError) as e:
    sweep.validate_cells(POINTMASS, "num_envs=16", cells)
  problems = e.value.problems
  # 4 cells, each with the unknown key; width 0 and depth 6 where they occur
  assert sum("unknown override key 'foo'" in p for p in problems) == 4
  assert sum("network.width must be positive, got 0" in p for p in problems) == 2
  assert sum("network.depth must be a positive multiple of 4" in p for p in problems) == 2
  assert all(p.startswith("cell depth-") for p in problems)
  assert any(p.startswith("cell depth-6__width-0__foo-1: ") for p in problems)
  # the valid grid gives each cell's config
  configs = sweep.validate_cells(POINTMASS, "num_envs=16",
                                 sweep.grid_cells(sweep.parse_grid("depth=4,8")))
  assert {k: v.network.depth for k, v in configs.items()} == {"depth-4": 4, "depth-8": 8}
  assert configs["depth-8"].train.num_envs == 16


def test_validation_conflicts_with_the_config_overrides():
  cells = sweep.grid_cells(sweep.parse_grid("network.width=8,16"))
  with pytest.raises(sweep.SweepError) as e:
    sweep.validate_cells(POINTMASS, "width=32,seed=3,train.max_seconds=5", cells, budget_s=10)
  text = str(e.value)
  assert "axis 'network.width' is also set in the --config overrides" in text
  assert "use --seeds" in text and "use --budget_s alone" in text
  with pytest.raises(sweep.SweepError, match="does not exist"):
    sweep.validate_cells("/nonexistent/cfg.py", "", cells)


def test_validation_starts_no_jax_backend():
  # The parent of a GPU sweep must not take device memory.
  code = textwrap.dedent(f"""
      from deepcrl_core import sweep
      cells = sweep.grid_cells(sweep.parse_grid("depth=4,8;env.kwargs.size=2.0"))
      try:
        sweep.validate_cells({POINTMASS!r}, "", cells)
      except sweep.SweepError:
        pass
      import sys
      backends = sys.modules.get("jax._src.xla_bridge")
      assert backends is None or not backends._backends, backends._backends
      print("ok")""")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().endswith("ok")


def test_launcher_reports_bad_grid_for_every_cell_with_exit_2(tmp_path):
  out = subprocess.run(
      [sys.executable, SWEEP, f"--config={POINTMASS}", "--grid=depth=4,6;width=0",
       f"--workdir={tmp_path / 'sw'}"], capture_output=True, text=True, timeout=120,
      cwd=str(tmp_path))
  assert out.returncode == 2, out.stderr
  assert "cell depth-4__width-0: network.width must be positive" in out.stderr
  assert "cell depth-6__width-0: network.depth must be a positive multiple of 4" in out.stderr
  assert not (tmp_path / "sw").exists()  # nothing written


# --- plan --------------------------------------------------------------------------------------


def test_plan_and_child_command(tmp_path):
  cells = sweep.grid_cells(sweep.parse_grid("depth=4,8"))
  runs = sweep.plan_runs(cells, [0, 2], str(tmp_path))
  assert [(r.cell.name, r.seed) for r in runs] == [("depth-4", 0), ("depth-4", 2),
                                                   ("depth-8", 0), ("depth-8", 2)]
  assert runs[1].workdir == str(tmp_path / "runs" / "depth-4" / "seed_2")
  assert (sweep.run_overrides("num_envs=16", cells[1], 2, 12.34) ==
          "num_envs=16,depth=8,seed=2,train.max_seconds=12.3")
  assert sweep.run_overrides("", cells[0], 0) == "depth=4,seed=0"
  configs = sweep.validate_cells(POINTMASS, "", cells)
  runner = sweep.Runner(POINTMASS, "num_envs=16", configs, slots=[None], python="PY")
  assert runner.command(runs[3], None) == [
      "PY", sweep.TRAIN_SCRIPT, f"--config={POINTMASS}:num_envs=16,depth=8,seed=2",
      f"--workdir={runs[3].workdir}", "--resume"]
  assert sweep.split_config_spec("configs/x.py:a=1,b=2") == (
      os.path.abspath("configs/x.py"), "a=1,b=2")


# --- run directories ---------------------------------------------------------------------------


def _write_metrics(workdir, rows):
  os.makedirs(workdir, exist_ok=True)
  cols = []
  for r in rows:
    cols += [k for k in r if k not in cols]
  with open(os.path.join(workdir, "metrics.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)


def _write_checkpoint(workdir, step):
  """A complete run checkpoint as deepcrl_core.checkpoint recognises one (no replay shards)."""
  d = os.path.join(workdir, "checkpoints", f"step_{step:08d}")
  os.makedirs(d, exist_ok=True)
  np.savez(os.path.join(d, "state.npz"),
           __metadata__=np.asarray(json.dumps({"epoch": step, "replay_shards": 0})))


def _rows(walls, key="run_wall_s", **extra):
  return [{"epoch": i + 1, "env_steps": 100 * (i + 1), "wall_s": w, key: w, "critic_loss": 1.0,
           "eval/success": 0.1 * (i + 1), **extra} for i, w in enumerate(walls)]


def test_cumulative_wall_clock_across_resumes():
  assert sweep.cumulative_wall_s([{"wall_s": w} for w in (10, 20, 5, 15, 3)]) == [
      10, 20, 25, 35, 38]
  # logged run_wall_s is used as is; rows logged before the column continue from it
  rows = [{"wall_s": 10, "run_wall_s": 10}, {"wall_s": 4, "run_wall_s": 24},
          {"wall_s": 6, "run_wall_s": ""}]
  assert sweep.cumulative_wall_s(rows) == [10, 24, 30]


def test_run_status_new_partial_finished_budget_diverged(tmp_path):
  d = str(tmp_path / "r")
  assert sweep.run_status(d, 4).state == "new"
  _write_metrics(d, _rows([10, 20, 30]))   # rows but no checkpoint: starts over
  assert sweep.run_status(d, 4).state == "new"
  _write_checkpoint(d, 2)                   # a kill after epoch 3's row, before its checkpoint
  st = sweep.run_status(d, 4)
  assert (st.state, st.epoch, st.run_wall_s, st.last["epoch"]) == ("partial", 2, 20.0, "2")
  assert sweep.run_status(d, 4, budget_s=20).state == "budget"
  assert sweep.run_status(d, 4, budget_s=21).state == "partial"
  _write_metrics(d, _rows([10, 20, 30, 40]))
  _write_checkpoint(d, 4)
  st = sweep.run_status(d, 4)
  assert (st.state, st.epoch, st.done) == ("finished", 4, True)
  rows = _rows([10, 20, 30, 40, 50])
  rows[-1]["critic_loss"] = float("nan")    # the NaN guard's row, after the last checkpoint
  _write_metrics(d, rows)
  assert sweep.run_status(d, 8).state == "diverged"
  # a checkpoint whose replay shard is missing is not complete
  d2 = str(tmp_path / "r2")
  _write_metrics(d2, _rows([10]))
  _write_checkpoint(d2, 1)
  assert sweep.run_status(d2, 4).state == "partial"
  os.makedirs(os.path.join(d2, "checkpoints", "step_00000002"))
  np.savez(os.path.join(d2, "checkpoints", "step_00000002", "state.npz"),
           __metadata__=np.asarray(json.dumps({"epoch": 2, "replay_shards": 1})))
  assert sweep.run_status(d2, 4).epoch == 1


def test_run_status_busy_while_another_process_holds_the_run(tmp_path):
  d = str(tmp_path / "r")
  lock = rundir.lock(d)
  try:
    st = sweep.run_status(d, 4)
    assert st.state == "busy" and "in use by another live run" in st.detail
  finally:
    lock.release()
  assert sweep.run_status(d, 4).state == "new"


def test_budget_is_total_across_resumes(tmp_path):
  """A resumed run gets only what is left of its budget (and of this call's share)."""
  cells = sweep.grid_cells(sweep.parse_grid(""))
  configs = sweep.validate_cells(POINTMASS, "epochs=10", cells)
  run = sweep.plan_runs(cells, [0], str(tmp_path))[0]
  # two calls: 30 s then (resumed after epoch 2) 25 s more; wall_s restarted in the second
  rows = _rows([12, 30], key="x") + [
      {"epoch": 3, "env_steps": 300, "wall_s": 14, "critic_loss": 1, "eval/success": 0.3},
      {"epoch": 4, "env_steps": 400, "wall_s": 25, "critic_loss": 1, "eval/success": 0.4}]
  _write_metrics(run.workdir, rows)
  _write_checkpoint(run.workdir, 4)
  runner = sweep.Runner(POINTMASS, "epochs=10", configs, slots=[None], budget_s=100)
  st = runner.status(run)
  assert st.run_wall_s == 55.0
  assert runner._max_seconds(st, 0.0, None, 1) == 45.0
  # a call limit: the share of the time left per round of runs, less the last epoch's length
  runner = sweep.Runner(POINTMASS, "epochs=10", configs, slots=[None, None], budget_s=100,
                        time_limit_s=60)
  st = st._replace(last={**st.last, "time/epoch_s": "3", "time/eval_s": "1"})
  assert runner._max_seconds(st, 0.0, 60.0, 3) == pytest.approx(60 / 2 - 4)


def test_stored_config_mismatch(tmp_path):
  from deepcrl_core import config as config_lib
  cells = sweep.grid_cells(sweep.parse_grid("depth=4"))
  cfg = sweep.validate_cells(POINTMASS, "", cells)["depth-4"]
  d = str(tmp_path / "r")
  os.makedirs(d)
  stored = config_lib.resolved_dict(cfg)
  stored["train"]["max_seconds"] = 77.0  # set per call by the sweep: not a mismatch
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(stored, f)
  assert sweep.stored_config_mismatch(d, cfg) == []
  stored["network"]["width"] = 999
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(stored, f)
  assert sweep.stored_config_mismatch(d, cfg) == [
      f"network.width: run has 999, sweep plans {cfg.network.width}"]
  # the cell's config carries the default seed; each run is judged with its own
  stored = config_lib.resolved_dict(cfg)
  stored["seed"] = 1
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(stored, f)
  assert sweep.stored_config_mismatch(d, cfg, seed=1) == []
  assert sweep.stored_config_mismatch(d, cfg, seed=2) == ["seed: run has 1, sweep plans 2"]
  assert cfg.seed != 1  # the cell's config is left as it was


# --- manifest ----------------------------------------------------------------------------------


def test_manifest_refuses_another_grid_unless_extending(tmp_path):
  d = str(tmp_path)
  axes = sweep.parse_grid("depth=4,8")
  m = sweep.manifest(POINTMASS, "", axes, [0, 1], 100.0)
  record, notes = sweep.check_manifest(d, m)
  assert notes == [] and record["calls"] == []
  sweep.write_json(os.path.join(d, sweep.MANIFEST), record)
  assert sweep.check_manifest(d, m)[1] == []
  with pytest.raises(sweep.SweepError, match="pass --extend"):
    sweep.check_manifest(d, sweep.manifest(POINTMASS, "", sweep.parse_grid("depth=4,16"),
                                           [0, 1], 100.0))
  with pytest.raises(sweep.SweepError, match="another sweep"):
    sweep.check_manifest(d, sweep.manifest(POINTMASS, "width=8", axes, [0, 1], 100.0))
  bigger = sweep.manifest(POINTMASS, "", sweep.parse_grid("depth=4,8,16"), [0, 1, 2], 100.0)
  _, notes = sweep.check_manifest(d, bigger, extend=True)
  assert "extending the sweep" in notes[0]
  with pytest.raises(sweep.SweepError, match="drops 2 run"):
    sweep.check_manifest(d, sweep.manifest(POINTMASS, "", axes, [0], 100.0), extend=True)
  _, notes = sweep.check_manifest(d, sweep.manifest(POINTMASS, "", axes, [0, 1], 200.0))
  assert "--budget_s changed from 100.0 to 200.0" in notes[0]


def test_load_plan_reads_every_planned_run_back(tmp_path):
  d = str(tmp_path)
  axes = sweep.parse_grid("depth=4,8;width=64")
  sweep.write_json(os.path.join(d, sweep.MANIFEST), sweep.manifest(POINTMASS, "", axes, [3, 1],
                                                                   0.0))
  got_axes, runs = sweep.load_plan(d)
  assert got_axes == axes
  assert runs == sweep.plan_runs(sweep.grid_cells(axes), [3, 1], d)
  assert [r.label for r in runs] == ["depth-4__width-64 seed 3", "depth-4__width-64 seed 1",
                                     "depth-8__width-64 seed 3", "depth-8__width-64 seed 1"]
  with pytest.raises(sweep.SweepError, match="is not a sweep directory: it has no sweep.json"):
    sweep.load_plan(str(tmp_path / "elsewhere"))
  with open(os.path.join(d, sweep.MANIFEST), "w") as f:
    json.dump({"grid": [["depth", ["4"]]]}, f)  # no seeds
  with pytest.raises(sweep.SweepError, match="is not a sweep manifest: KeyError"):
    sweep.load_plan(d)


# --- devices -----------------------------------------------------------------------------------


def test_device_detection_and_assignment():
  assert sweep.detect_devices({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
  assert sweep.detect_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
  assert sweep.detect_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
  assert sweep.device_slots(["0", "1"]) == ["0", "1"]
  assert sweep.device_slots(["0", "1"], parallel=3) == ["0", "1", "0"]
  assert sweep.device_slots([], parallel=2) == [None, None]
  assert sweep.device_slots([]) == [None]
  env = sweep.child_env({"A": "1"}, "1", shared=False)
  assert env["CUDA_VISIBLE_DEVICES"] == "1" and "XLA_PYTHON_CLIENT_PREALLOCATE" not in env
  assert sweep.child_env({}, "0", shared=True)["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert "CUDA_VISIBLE_DEVICES" not in sweep.child_env({}, None, shared=True)
  assert sweep.parse_devices("0,1") == ["0", "1"] and sweep.parse_devices("none") == []
  with pytest.raises(sweep.SweepError, match="--devices"):
    sweep.parse_devices("0,,1")


def test_cpu_children_get_disjoint_contiguous_cpu_shares():
  assert sweep.cpu_sets(3, range(8)) == [(0, 1, 2), (3, 4, 5), (6, 7)]
  assert sweep.cpu_sets(2, [1, 0]) == [(0,), (1,)]
  assert sweep.cpu_sets(3, [4, 6]) == [(4,), (6,), (4,)]   # more slots than CPUs: round-robin
  assert sweep.cpu_sets(1, range(8)) == [None]             # one child: no pinning
  assert sweep.cpu_sets(2, [0]) == [None, None]            # one CPU: nothing to split
  assert sweep.format_cpus((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"
  assert sweep.format_cpus((3,)) == "3"


# --- the scheduler, with a fake trainer --------------------------------------------------------

# Stands in for launch/train.py: records its argv, device and time span, sleeps, then writes the
# metrics rows and a complete checkpoint of every epoch the --config's epochs= asks for.
FAKE_TRAIN = textwrap.dedent("""
    import csv, json, os, sys, time
    import numpy as np
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    workdir, spec = args["--workdir"], args["--config"]
    overrides = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(","))
    os.makedirs(workdir, exist_ok=True)
    t0 = time.time()
    try:
      time.sleep(float(os.environ.get("FAKE_SLEEP", "0.6")))
    except KeyboardInterrupt:
      sys.exit(130)
    with open(os.path.join(workdir, "calls.jsonl"), "a") as f:
      f.write(json.dumps({"argv": sys.argv[1:], "t0": t0, "t1": time.time(),
                          "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "cpus": sorted(os.sched_getaffinity(0))
                                  if hasattr(os, "sched_getaffinity") else None}) + "\\n")
    n, seed = int(overrides["epochs"]), int(overrides["seed"])
    depth = int(overrides.get("depth", 4))
    with open(os.path.join(workdir, "config.json"), "w") as f:  # as train.py does, in part
      json.dump({"seed": seed, "network": {"depth": depth}}, f)
    with open(os.path.join(workdir, "metrics.csv"), "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["epoch", "env_steps", "wall_s", "run_wall_s", "critic_loss", "eval/success",
                  "eval/time_at_goal", "eval/final_dist"])
      for e in range(1, n + 1):
        w.writerow([e, 100 * e, e, e, 1.0, min(1, 0.1 * e * depth / 4 + 0.01 * seed), e,
                    1.0 / e])
    for e in range(1, n + 1):
      d = os.path.join(workdir, "checkpoints", "step_%08d" % e)
      os.makedirs(d, exist_ok=True)
      np.savez(os.path.join(d, "state.npz"),
               __metadata__=np.asarray(json.dumps({"epoch": e, "replay_shards": 0})))
    print("fake run done")
    """)


def _calls(workdir):
  path = os.path.join(workdir, "calls.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_scheduler_one_child_per_device_then_rerun_skips(tmp_path):
  fake = tmp_path / "fake_train.py"
  fake.write_text(FAKE_TRAIN)
  lines = []
  work = str(tmp_path / "sw")
  kw = dict(devices=["0", "1"], train_script=str(fake), log_fn=lines.append,
            env=dict(os.environ, FAKE_SLEEP="0.6"))
  code = sweep.run_sweep(f"{POINTMASS}:epochs=3", "depth=4,8", [0, 1], work, **kw)
  assert code == sweep.EXIT_OK, "\n".join(lines)
  runs = sweep.plan_runs(sweep.grid_cells(sweep.parse_grid("depth=4,8")), [0, 1], work)
  calls = [c for r in runs for c in _calls(r.workdir)]
  assert len(calls) == 4
  assert {c["device"] for c in calls} == {"0", "1"}
  spans = sorted((c["t0"], c["t1"]) for c in calls)
  assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two children ran at once"
  assert sum(line.count("] start ") for line in lines) == 4
  assert sum(line.count("] end ") for line in lines) == 4
  assert any("finished (epoch 3/3)" in line and "eval success" in line for line in lines)
  for r in runs:   # child output goes to the run's train.log, not the console
    with open(os.path.join(r.workdir, sweep.RUN_LOG)) as f:
      log = f.read()
    assert "fake run done" in log and "CUDA_VISIBLE_DEVICES=" in log
  assert not any("fake run done" in line for line in lines)
  with open(os.path.join(work, sweep.CSV_NAME)) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 * 3
  assert list(rows[0])[:5] == ["cell", "depth", "seed", "epoch", "env_steps"]
  figures = sorted(os.listdir(os.path.join(work, "figures")))
  assert figures == ["curves_env_steps.png", "curves_wall_clock.png", "final_vs_depth.png",
                     "wall_clock_vs_depth.png"]
  # rerun: everything is finished, nothing starts
  lines.clear()
  assert sweep.run_sweep(f"{POINTMASS}:epochs=3", "depth=4,8", [0, 1], work, **kw) == 0
  assert sum(len(_calls(r.workdir)) for r in runs) == 4
  assert sum(line.count("] skip ") for line in lines) == 4
  # another grid into the same directory is refused before anything runs
  with pytest.raises(sweep.SweepError, match="another sweep"):
    sweep.run_sweep(f"{POINTMASS}:epochs=3", "depth=4,16", [0, 1], work, **kw)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and at least 2 usable CPUs")
@pytest.mark.parametrize("pin", [True, False])
def test_parallel_cpu_children_are_pinned_to_their_own_cpus(tmp_path, pin):
  fake = tmp_path / "fake_train.py"
  fake.write_text(FAKE_TRAIN)
  lines = []
  work = str(tmp_path / "sw")
  code = sweep.run_sweep(f"{POINTMASS}:epochs=1", "depth=4", [0, 1], work, devices=[],
                         parallel=2, pin_cpus=pin, train_script=str(fake), figures=False,
                         log_fn=lines.append, env=dict(os.environ, FAKE_SLEEP="0.3"))
  assert code == sweep.EXIT_OK, "\n".join(lines)
  runs = sweep.plan_runs(sweep.grid_cells(sweep.parse_grid("depth=4")), [0, 1], work)
  seen = [set(c["cpus"]) for r in runs for c in _calls(r.workdir)]
  mine = set(os.sched_getaffinity(0))
  assert len(seen) == 2
  if pin:
    assert seen[0] and seen[1] and not seen[0] & seen[1], seen
    assert seen[0] | seen[1] == mine
    assert sum(" on CPUs " in line for line in lines) == 2, lines
    with open(os.path.join(work, sweep.MANIFEST)) as f:
      assert sorted(sum(json.load(f)["calls"][-1]["cpus"], [])) == sorted(mine)
  else:
    assert seen == [mine, mine]
    assert not any(" on CPUs " in line for line in lines)


def test_time_limit_stops_children_at_their_last_checkpoint(tmp_path):
  fake = tmp_path / "fake_train.py"
  fake.write_text(FAKE_TRAIN)
  lines = []
  work = str(tmp_path / "sw")
  t0 = time.time()
  code = sweep.run_sweep(f"{POINTMASS}:epochs=3", "depth=4,8", [0], work, devices=[],
                         time_limit_s=2.0, train_script=str(fake), log_fn=lines.append,
                         env=dict(os.environ, FAKE_SLEEP="60"), figures=False)
  assert time.time() - t0 < 30
  assert code == sweep.EXIT_UNFINISHED, "\n".join(lines)
  text = "\n".join(lines)
  assert "time limit 2s reached" in text and "stopped at epoch 0/3 (exit 130)" in text
  assert "1 run(s) not started this call" in text
  # the first child was given its share of the call: max_seconds ~ 2 s / 2 rounds
  with open(os.path.join(work, "runs", "depth-4", "seed_0", sweep.RUN_LOG)) as f:
    assert "train.max_seconds=1.0" in f.read()


# --- sweep.csv ---------------------------------------------------------------------------------


def test_aggregate_rows_per_run_and_evaluation(tmp_path):
  axes = sweep.parse_grid("depth=4,8;width=32")
  runs = sweep.plan_runs(sweep.grid_cells(axes), [0], str(tmp_path))
  # an old-style run (no run_wall_s, resumed once) and one with a column the other lacks
  _write_metrics(runs[0].workdir, [
      {"epoch": 1, "env_steps": 10, "wall_s": 5, "eval/success": 0.5, "critic_loss": 2},
      {"epoch": 2, "env_steps": 20, "wall_s": 9, "eval/success": "", "critic_loss": 2},
      {"epoch": 3, "env_steps": 30, "wall_s": 4, "eval/success": 0.7, "critic_loss": 1}])
  _write_metrics(runs[1].workdir, [
      {"epoch": 1, "env_steps": 10, "wall_s": 6, "run_wall_s": 6, "eval/success": 0.2,
       "eval/extra": 3, "critic_loss": 3}])
  columns, rows = sweep.aggregate(runs, axes)
  assert columns[:4] == ["cell", "depth", "width", "seed"]
  assert columns[4:] == ["epoch", "env_steps", "wall_s", "run_wall_s", "eval/success",
                         "critic_loss", "eval/extra"]
  assert [(r["cell"], r["epoch"]) for r in rows] == [
      ("depth-4__width-32", "1"), ("depth-4__width-32", "3"), ("depth-8__width-32", "1")]
  assert [float(r["run_wall_s"]) for r in rows] == [5.0, 13.0, 6.0]  # 9 + 4 after the resume
  assert rows[2]["depth"] == "8" and rows[2]["width"] == "32" and rows[2]["seed"] == 0
  path = str(tmp_path / "sweep.csv")
  sweep.write_csv(path, columns, rows)
  with open(path) as f:
    back = list(csv.DictReader(f))
  assert back[0]["eval/extra"] == "" and back[2]["eval/extra"] == "3"


def test_results_keep_the_csv_when_the_figures_fail(tmp_path, monkeypatch):
  axes = sweep.parse_grid("depth=4")
  runs = sweep.plan_runs(sweep.grid_cells(axes), [0], str(tmp_path))
  _write_metrics(runs[0].workdir, [{"epoch": 1, "env_steps": 10, "wall_s": 5,
                                    "eval/success": 0.5}])
  logged = []
  from deepcrl_core import plots  # pylint: disable=g-import-not-at-top

  def broken(workdir):
    raise ValueError(f"cannot draw {workdir}")

  monkeypatch.setattr(plots, "plot_sweep", broken)
  assert sweep.write_results(str(tmp_path), runs, axes, log_fn=logged.append) == 1
  assert logged[-1] == f"[sweep] figures failed: ValueError: cannot draw {tmp_path}"
  # plotting that cannot even be imported (a broken matplotlib) fails the same way
  import deepcrl_core  # pylint: disable=g-import-not-at-top
  monkeypatch.delattr(deepcrl_core, "plots")
  monkeypatch.setitem(sys.modules, "deepcrl_core.plots", None)
  assert sweep.write_results(str(tmp_path), runs, axes, log_fn=logged.append) == 1
  assert logged[-1] == ("[sweep] figures failed: ModuleNotFoundError: import of "
                        "deepcrl_core.plots halted; None in sys.modules")
  assert len(_read(tmp_path / "sweep.csv")) == 1


# --- real sweeps (launch/train.py children) ----------------------------------------------------

TINY_SWEEP = TINY_RUN + ",epochs=2,log.tensorboard=false,log.progress_every_s=0"


def _child_env():
  # The children share the tests' persistent compilation cache (tests/conftest.py).
  return dict(os.environ,
              JAX_COMPILATION_CACHE_DIR=os.environ.get("DEEPCRL_TEST_JAX_CACHE",
                                                       "/tmp/deepcrl_test_jax_cache"),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1")


def _sweep_cmd(work, grid, *extra):
  return [sys.executable, SWEEP, f"--config={POINTMASS}:{TINY_SWEEP}", f"--grid={grid}",
          "--seeds=1", f"--workdir={work}", "--devices=none", *extra]


def _read(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _first_sweep(tmp_path):
  work = tmp_path / "sw"
  out = subprocess.run(_sweep_cmd(work, "network.repr_dim=16"), capture_output=True, text=True,
                       timeout=600, env=_child_env(), cwd=str(tmp_path))
  assert out.returncode == 0, out.stdout + out.stderr
  run = work / "runs" / "network.repr_dim-16" / "seed_0"
  assert "end   network.repr_dim-16 seed 0 [1/1]: finished (epoch 2/2)" in out.stdout
  assert "epoch 1/2" not in out.stdout  # the child's lines went to train.log
  assert "epoch 2/2" in (run / sweep.RUN_LOG).read_text()
  rows = _read(run / "metrics.csv")
  assert [r["epoch"] for r in rows] == ["1", "2"]
  assert float(rows[1]["run_wall_s"]) == pytest.approx(float(rows[1]["wall_s"]))
  assert json.loads((work / sweep.MANIFEST).read_text())["grid"] == [
      ["network.repr_dim", ["16"]]]
  csv_rows = _read(work / sweep.CSV_NAME)
  assert [(r["network.repr_dim"], r["epoch"]) for r in csv_rows] == [("16", "1"), ("16", "2")]
  assert (work / "figures" / "curves_env_steps.png").exists()
  return work, run, rows


def _assert_rerun_skips(tmp_path, work, run):
  log_size = (run / sweep.RUN_LOG).stat().st_size
  out = subprocess.run(_sweep_cmd(work, "network.repr_dim=16"), capture_output=True, text=True,
                       timeout=600, env=_child_env(), cwd=str(tmp_path))
  assert out.returncode == 0 and "skip  network.repr_dim-16 seed 0" in out.stdout, out.stdout
  assert "start " not in out.stdout
  assert (run / sweep.RUN_LOG).stat().st_size == log_size


def test_real_sweep_then_rerun_skips(tmp_path):
  """One tiny pointmass run through launch/sweep.py and a real launch/train.py child, then
  the same command again, which starts nothing."""
  work, run, _ = _first_sweep(tmp_path)
  _assert_rerun_skips(tmp_path, work, run)


@pytest.mark.slow
def test_real_sweep_resumes_a_killed_run(tmp_path):
  """The run directory is put back to the state a kill after epoch 1's checkpoint leaves
  (newest checkpoint, rows after epoch 1 and summary.json gone); the rerun resumes it from
  epoch 1 and counts the earlier call's wall-clock in run_wall_s; a third call skips it."""
  import shutil  # pylint: disable=g-import-not-at-top
  work, run, full = _first_sweep(tmp_path)
  shutil.rmtree(run / "checkpoints" / "step_00000002")
  (run / "summary.json").unlink()
  _write_metrics(str(run), full[:1])
  out = subprocess.run(_sweep_cmd(work, "network.repr_dim=16"), capture_output=True, text=True,
                       timeout=600, env=_child_env(), cwd=str(tmp_path))
  assert out.returncode == 0, out.stdout + out.stderr
  assert "resuming at epoch 1/2" in out.stdout
  assert "resumed from" in (run / sweep.RUN_LOG).read_text()
  rows = _read(run / "metrics.csv")
  assert [r["epoch"] for r in rows] == ["1", "2"]
  assert float(rows[1]["run_wall_s"]) == pytest.approx(
      float(full[0]["run_wall_s"]) + float(rows[1]["wall_s"]), abs=1e-3)
  assert [r["epoch"] for r in _read(work / sweep.CSV_NAME)] == ["1", "2"]
  _assert_rerun_skips(tmp_path, work, run)


@pytest.mark.slow
def test_real_sweep_two_cells_then_rerun_skips_both(tmp_path):
  work = tmp_path / "sw"
  env = _child_env()
  out = subprocess.run(_sweep_cmd(work, "depth=4,8"), capture_output=True, text=True,
                       timeout=900, env=env, cwd=str(tmp_path))
  assert out.returncode == 0, out.stdout + out.stderr
  assert out.stdout.count("finished (epoch 2/2)") == 2
  rows = _read(work / sweep.CSV_NAME)
  assert [(r["depth"], r["epoch"]) for r in rows] == [("4", "1"), ("4", "2"), ("8", "1"),
                                                      ("8", "2")]
  # the sweep's figures, and one residual-norms figure per run (eval.residual_norms is on)
  assert sorted(os.listdir(work / "figures")) == [
      "curves_env_steps.png", "curves_wall_clock.png", "final_vs_depth.png",
      "residual_norms__depth-4__seed_0.png", "residual_norms__depth-8__seed_0.png",
      "wall_clock_vs_depth.png"]
  out = subprocess.run(_sweep_cmd(work, "depth=4,8"), capture_output=True, text=True,
                       timeout=300, env=env, cwd=str(tmp_path))
  assert out.returncode == 0
  assert out.stdout.count("skip ") == 2 and "start " not in out.stdout
