"""profiling/step_time.py: a tiny CPU sweep writes a sane CSV, a PNG and the markdown table."""

from __future__ import annotations

import csv
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from deepcrl_core import configure_cpu_xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "profiling" / "step_time.py"
REQUIRED = ("depth", "width", "batch", "impl", "compile_s", "step_ms", "unroll_ms", "peak_mem_mb",
            "params", "gflops_per_step")


def _load(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(out, *args, timeout=300):
  env = dict(os.environ)
  configure_cpu_xla_flags(environ=env)
  proc = subprocess.run([sys.executable, str(SCRIPT), f"--out={out}", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "step_time.csv", newline="") as f:
    return proc, list(csv.DictReader(f))


def _check_sweep(proc, rows, out, depths):
  assert set(REQUIRED) <= set(rows[0].keys())
  ok = sorted((r for r in rows if r["impl"] == "xla"), key=lambda r: int(r["depth"]))
  assert [int(r["depth"]) for r in ok] == depths
  assert all(r["status"] == "ok" for r in ok), [(r["status"], r["note"]) for r in ok]
  for r in ok:
    for col in ("compile_s", "step_ms", "step_ms_min", "peak_mem_mb", "params",
                "gflops_per_step", "tflops", "xla_mem_mb"):
      assert float(r[col]) > 0, (col, r[col])
    assert int(r["repeats"]) >= 20
    assert float(r["step_ms_min"]) <= float(r["step_ms"]) <= float(r["step_ms_p90"])
    assert float(r["compile_s"]) < 300 and float(r["step_ms"]) < 10_000
    assert r["frac_peak"] == ""  # CPU: no known peak
  shallow, deep = ok[0], ok[-1]
  # Deeper costs more: parameters, FLOPs (exactly affine in depth) and time.
  assert int(deep["params"]) > int(shallow["params"])
  assert float(deep["gflops_per_step"]) > 1.5 * float(shallow["gflops_per_step"])
  assert float(deep["step_ms"]) > float(shallow["step_ms"])
  # Pallas is skipped on CPU with a note, not crashed.
  skipped = [r for r in rows if r["impl"] == "pallas"]
  assert len(skipped) == len(depths) and all(r["status"] == "skipped" for r in skipped)
  assert all("GPU" in r["note"] for r in skipped)
  png = (out / "step_time.png").read_bytes()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
  # The markdown table is printed last, and saved.
  md = (out / "step_time.md").read_text().strip()
  assert proc.stdout.strip().endswith(md.splitlines()[-1])
  assert "| depth | width | batch | impl |" in proc.stdout
  assert "ms per layer" in md


def test_tiny_sweep_gradient_step(tmp_path):
  """Two small depths, gradient step only (the default CPU sweep minus the unroll)."""
  proc, rows = _run(tmp_path, "--config=configs/pointmass.py:width=64,batch=64",
                    "--depths=4,16", "--impls=xla,pallas", "--nounroll")
  _check_sweep(proc, rows, tmp_path, [4, 16])
  assert all(r["unroll_ms"] == "" for r in rows)


@pytest.mark.slow
def test_tiny_sweep_with_unroll_and_measured_training_step(tmp_path):
  proc, rows = _run(tmp_path, "--config=configs/pointmass.py:width=64,batch=64,num_envs=8",
                    "--depths=4,16", "--impls=xla,pallas", "--train_step=measure",
                    "--unroll_length=5", "--sgd_steps=4", "--unroll_repeats=3",
                    "--train_repeats=2", timeout=600)
  _check_sweep(proc, rows, tmp_path, [4, 16])
  for r in (r for r in rows if r["impl"] == "xla"):
    assert float(r["unroll_ms"]) > 0 and float(r["unroll_compile_s"]) > 0
    assert float(r["env_steps_per_s"]) > 0 and r["train_ms_kind"] == "measured"
    # A training step does sgd_steps gradient steps and an unroll: it costs more than either.
    assert float(r["train_ms"]) > 4 * float(r["step_ms_min"]) * 0.5


def test_model_flops_are_affine_in_depth():
  """The extrapolated FLOP count equals a direct count of a fully unrolled deeper step."""
  sys.path.insert(0, str(REPO / "profiling"))
  st = _load("step_time_mod", SCRIPT)
  import json
  import jax
  from deepcrl_core import config as config_lib
  cfg = config_lib.make_config("width=16,batch=8")
  cj = json.dumps(cfg.to_dict())
  extrapolated = st.model_flops(cj, 16, 8, 12, 16)
  orig = jax.lax.scan

  def unrolled(*a, **k):
    k["unroll"] = True
    return orig(*a, **k)

  c = config_lib.make_config("width=16,batch=8,actor_depth=12,critic_depth=16,impl=xla")
  sizes = st.network_sizes("pointmass")
  agent = st.make_agent(c, sizes)
  ts = agent.init(jax.random.PRNGKey(0))
  batch = st.random_batch(jax.random.PRNGKey(1), 8, sizes)
  jax.lax.scan = unrolled
  try:
    direct = st.cost_flops(jax.jit(agent.sgd_step).lower(ts, batch))
  finally:
    jax.lax.scan = orig
  assert direct > 0 and abs(extrapolated - direct) <= 1e-4 * direct


def test_fit_and_peak_table():
  sys.path.insert(0, str(REPO / "profiling"))  # step_time imports its two sibling modules
  st = _load("step_time_mod2", SCRIPT)
  a, b = st.fit_linear([4, 8, 16], [3.0, 5.0, 9.0])
  assert abs(a - 1.0) < 1e-9 and abs(b - 0.5) < 1e-9
  assert st.peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(494.7)
  assert st.peak_tflops("NVIDIA H200") == pytest.approx(494.7)
  assert st.peak_tflops("NVIDIA A100-SXM4-80GB") == pytest.approx(156.0)
  assert st.peak_tflops("cpu") is None
  rows = [{"impl": "xla", "width": 8, "batch": 8, "depth": d, "step_ms": 1.0 + 0.25 * d}
          for d in (4, 16, 64)]
  (fit,) = st.depth_fits(rows)
  assert fit["slope_ms_per_layer"] == pytest.approx(0.25)
  assert fit["intercept_ms"] == pytest.approx(1.0)


def test_loop_and_unrolled_xla_rows_count_the_same_flops(tmp_path):
  """``xla_unrolled`` rows run the XLA path with every block unrolled: same FLOPs as the loop,
  and FLOP counting leaves ``jax.lax.scan`` alone."""
  import jax
  scan = jax.lax.scan
  # Depth 8: two residual blocks per trunk, so the unrolled rows really unroll a loop.
  proc, rows = _run(tmp_path, "--config=configs/pointmass.py:width=32,batch=32", "--depths=8",
                    "--impls=xla,xla_unrolled", "--nounroll")
  assert jax.lax.scan is scan
  by = {(r["impl"], int(r["depth"])): r for r in rows}
  assert set(by) == {("xla", 8), ("xla_unrolled", 8)}
  assert all(r["status"] == "ok" for r in rows), [(r["status"], r["note"]) for r in rows]
  assert by[("xla", 8)]["gflops_per_step"] == by[("xla_unrolled", 8)]["gflops_per_step"]
  assert float(by[("xla_unrolled", 8)]["step_ms"]) > 0
  assert "| xla_unrolled |" in proc.stdout
