"""A jax without the Pallas Triton backend (deprecated in jax 0.11): everything but
``impl="pallas"`` keeps working, and ``"pallas"`` says why not before compiling anything."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import _dispatch
from deepcrl_kernels import _pallas_common as common
from kernel_refs64 import assert_close, block_params

REASON = "this jax (test) has no Pallas Triton backend (simulated)"


@pytest.fixture
def no_triton(monkeypatch):
  monkeypatch.setattr(common, "pltriton", None)
  monkeypatch.setattr(common, "TRITON_MISSING", REASON)


def test_interpreter_and_xla_paths_run_without_triton(no_triton):
  del no_triton
  x = jax.random.normal(jax.random.PRNGKey(0), (24, 64))
  params = block_params(jax.random.PRNGKey(1), 64)
  want = kernels.fused_residual_block(x, params, impl="xla")
  assert_close(kernels.fused_residual_block(x, params, impl="interpret"), want, rtol=3e-4,
               name="block")
  assert_close(kernels.fused_residual_block(x, params, impl="interpret",
                                            config=kernels.TiledBlockConfig(
                                                block_m=16, block_n=32, block_k=16,
                                                dw_block=32, dw_block_batch=16)),
               want, rtol=3e-4, name="tiled block")
  a, b = x[:, :16], x[:, 16:32]
  assert_close(kernels.infonce_loss(a, b, impl="interpret")[0],
               kernels.infonce_loss(a, b, impl="xla")[0], rtol=1e-5, name="infonce")


def test_pallas_says_why_and_auto_keeps_xla(no_triton, monkeypatch, caplog):
  del no_triton
  x = jnp.zeros((8, 64))
  params = block_params(jax.random.PRNGKey(1), 64)
  with pytest.raises(ValueError, match=r"impl='pallas'\): this jax \(test\) has no Pallas Triton"):
    kernels.fused_residual_block(x, params, impl="pallas")
  with pytest.raises(ValueError, match="no Pallas Triton backend"):
    kernels.infonce_loss(x[:, :16], x[:, :16], impl="pallas")
  monkeypatch.setattr(_dispatch, "on_gpu", lambda: True)
  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    assert _dispatch.select_impl("auto", "op", lambda: None) == "xla"
  assert "falling back to impl='xla' because " + REASON in caplog.text


def test_the_library_imports_and_computes_the_loss_when_the_module_is_missing():
  """In a fresh process whose jax cannot import ``jax.experimental.pallas.triton``."""
  script = textwrap.dedent("""
      import importlib.abc, sys
      class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
          if name == "jax.experimental.pallas.triton":
            raise ImportError("no Triton backend in this jax")
      sys.meta_path.insert(0, Block())
      import jax, jax.numpy as jnp
      import deepcrl_kernels as kernels
      from deepcrl_kernels import _pallas_common as common
      import deepcrl_core.networks  # the library imports the kernels package
      assert common.pltriton is None and "no Pallas Triton backend" in common.TRITON_MISSING
      x = jnp.ones((4, 16))
      loss = kernels.infonce_loss(x, x + 1.0, impl="auto")[0]
      print("ok", float(loss))
  """)
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.startswith("ok ")
