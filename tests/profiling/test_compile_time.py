"""profiling/compile_time.py and profiling/actor_grad_precision.py."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import compile_time
from deepcrl_core import configure_cpu_xla_flags
from tests.conftest import TINY_RUN

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_compile_clock_counts_each_compile_once_and_stops_when_closed():
  # A shape no other test compiles this function for: the first call compiles, the second not.
  f = jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0)
  x = jnp.ones((3, 7, 11))
  with compile_time.CompileClock() as clock:
    first = clock.phase(lambda: f(x))
    again = clock.phase(lambda: f(x))
  assert first["executables"] == 1 and first["compile_s"] > 0
  assert again["executables"] == 0 and again["compile_s"] == 0
  assert first["wall_s"] >= first["compile_s"]
  jax.jit(lambda x: x - 2.0)(x)  # after the block: not counted
  assert clock.count == 1


def _script(name, *args, timeout=600):
  env = dict(os.environ)
  configure_cpu_xla_flags(environ=env)
  proc = subprocess.run([sys.executable, str(REPO / "profiling" / name), *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _table(text, first_cell):
  rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
  return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows if r[0].strip() != first_cell}


@pytest.mark.slow
def test_compile_time_phases_and_draws_on_a_tiny_run(tmp_path):
  out = tmp_path / "ct.md"
  stdout = _script("compile_time.py", f"--config=configs/pointmass.py:{TINY_RUN},width=16",
                   "--draws", f"--out={out}")
  text = out.read_text()
  assert text.strip() in stdout  # (mujoco-mjx may print its own lines first)
  phases = _table(text.split("\n\n")[1], "phase")
  assert set(phases) == {"init", "prefill", "epoch", "eval", "init, 4-D weight draws"}
  for name, (compile_s, executables, wall_s) in phases.items():
    assert int(executables) >= 1 and 0 < float(compile_s) <= float(wall_s), name
  draws = _table(text.split("\n\n")[2], "uniform draw shape")
  assert len(draws) == len(compile_time.DRAW_SHAPES)
  assert all(row[-1] == "yes" for row in draws.values())  # flat + reshape: the same numbers


@pytest.mark.slow
def test_exact_log_density_actor_gradient_is_float32_accurate():
  stdout = _script("actor_grad_precision.py", "--seeds=1", "--corrections=exact")
  rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| exact")]
  assert len(rows) == 1
  _, seed, _, xla_vs_f64, kernels_vs_f64, kernels_vs_xla = (c.strip() for c in rows[0])
  assert seed == "0"
  for value in (xla_vs_f64, kernels_vs_f64, kernels_vs_xla):
    assert 0 < float(value) < 1e-5, rows[0]
