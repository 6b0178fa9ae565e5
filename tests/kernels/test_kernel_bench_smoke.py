"""profiling/kernel_bench.py runs on CPU (tiny sweep) and its correctness check can fail."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "profiling" / "kernel_bench.py"


def _load():
  spec = importlib.util.spec_from_file_location("kernel_bench", _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_tiny_xla_sweep_prints_both_tables(tmp_path, capsys):
  bench = _load()
  out = tmp_path / "kernels.md"
  assert bench.main(["--tiny", f"--out={out}"]) == 0
  text = out.read_text()
  assert "### Residual block" in text and "### InfoNCE" in text
  assert "| block | 64 | 64 | f32 | xla |" in text and "| infonce | 64 | 16 | l2 | xla |" in text
  assert text.strip() in capsys.readouterr().out


def test_check_reports_failure(monkeypatch, tmp_path):
  bench = _load()
  monkeypatch.setattr(bench, "check_infonce", lambda *a, **k: (1.0, 0.0))
  rc = bench.main(["--tiny", "--ops=infonce", "--impls=interpret,xla", "--check-only",
                   f"--out={tmp_path / 'x.md'}"])
  assert rc == 1 and "FAIL" in (tmp_path / "x.md").read_text()


@pytest.mark.slow
def test_tiny_interpret_sweep_checks_against_xla():
  assert _load().main(["--tiny", "--impls=interpret,xla"]) == 0
