"""Every Pallas kernel compiles for Hopper (sm_90a) at its default config without spilling.

``profiling/kernel_ptx.py`` lowers the kernels for CUDA, compiles the Triton IR with the pip
``triton`` package for an offline sm_90 target and reads ptxas's resource report: no GPU is
needed, only ``pip install -e ".[ptx]"``.
"""

from __future__ import annotations

import csv
import importlib.util
import pathlib
import sys

import pytest

from kernel_refs64 import needs_triton

pytestmark = needs_triton  # lowers through the Pallas Triton backend

_PATH = pathlib.Path(__file__).resolve().parents[2] / "profiling" / "kernel_ptx.py"


def _load():
  spec = importlib.util.spec_from_file_location("kernel_ptx", _PATH)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_default_configs_compile_for_sm90_without_spills_on_tensor_cores(tmp_path):
  pytest.importorskip("triton", reason='needs pip install -e ".[ptx]"')
  ptx = _load()
  assert ptx.main([f"--out={tmp_path}", "--shapes=default"]) == 0
  with open(tmp_path / "kernel_ptx.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == list(ptx.COLUMNS)
  assert {r["kernel"] for r in rows} == set(ptx.KERNEL_NAMES.values())
  for r in rows:
    where = f"{r['kernel']} batch={r['batch']} width={r['width']} ({r['config']})"
    assert int(r["spill_bytes"]) == 0, where
    assert 0 < int(r["smem_bytes"]) <= ptx.SM90_SMEM_LIMIT, where
    assert r["tensor_core"] in ("wgmma", "mma"), where
    # Hopper's warpgroup MMA wherever a tile has >= 64 rows (every InfoNCE kernel, the dW
    # kernel, every tiled kernel, the width-256 block at large batch).
    if r["kernel"].startswith(("infonce", "tiled")) or r["kernel"] == "block_bwd_dw":
      assert r["tensor_core"] == "wgmma", where
  assert (tmp_path / "kernel_ptx.md").read_text().count("\n|") >= len(rows)


def test_tensor_core_and_spill_parsing(tmp_path):
  """The report's parsing on a tiny kernel: runs in the fast suite when triton is there."""
  pytest.importorskip("triton", reason='needs pip install -e ".[ptx]"')
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import deepcrl_kernels as kernels  # pylint: disable=g-import-not-at-top
  ptx = _load()
  x = jnp.zeros((64, 16))
  found = ptx.lower_kernels(lambda a, b: kernels.infonce_loss(a, b, impl="pallas")[0], x, x)
  [k] = found
  assert k.name == "infonce_fwd" and (k.num_warps, k.num_stages) == (4, 2) and k.grid == (1, 1)
  res = ptx.compile_for_sm90(k, str(tmp_path))
  assert res["tensor_core"] == "wgmma" and res["sass_mma"].startswith("HGMMA")
  assert res["registers"] > 0 and res["spill_bytes"] == 0 and res["smem_bytes"] > 0
