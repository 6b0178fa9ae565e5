"""The Pallas path lowers for CUDA (Triton) without a GPU: catches lowering breaks in CI."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import _pallas_common as common
from deepcrl_kernels import residual_block_pallas
from kernel_refs64 import block_params, needs_triton

pytestmark = needs_triton


def _lower_for_cuda(f, *args) -> str:
  return common.lower_for_cuda(f, *args).as_text()


def _triton_calls(text: str) -> int:
  return text.count("__gpu$xla.gpu.triton")


def test_lowering_without_a_gpu_names_an_abstract_h100(monkeypatch):
  """jax >= 0.11 lowers Pallas Triton kernels only for a known GPU: without one the lowering
  runs under an abstract mesh whose device is an H100 (what the offline sm_90a checks target)."""
  seen = []
  real = jax.sharding.use_abstract_mesh
  monkeypatch.setattr(jax.sharding, "use_abstract_mesh",
                      lambda mesh: seen.append(mesh) or real(mesh))
  text = _lower_for_cuda(lambda a, b: kernels.infonce_loss(a, b, impl="pallas")[0],
                         jnp.zeros((64, 16)), jnp.zeros((64, 16)))
  assert _triton_calls(text) == 1
  [mesh] = seen
  device = mesh.abstract_device
  assert (device.device_kind, device.num_cores, device.platform) == (
      "NVIDIA H100", common.DEFAULT_SM_COUNT, "gpu")


@pytest.mark.parametrize("batch,width,matmul_dtype", [
    (37, 64, None), (512, 256, None), (64, 512, None), (16, 1024, None), (40, 320, None),
    (512, 256, jnp.bfloat16)])
def test_residual_block_forward_and_backward_lower_for_cuda(batch, width, matmul_dtype):
  params = block_params(jax.random.PRNGKey(0), width)
  x = jnp.zeros((batch, width))

  def loss(x, p):
    return jnp.sum(kernels.fused_residual_block(x, p, impl="pallas", matmul_dtype=matmul_dtype))

  text = _lower_for_cuda(jax.grad(loss, argnums=(0, 1)), x, params)
  if kernels.uses_tiled_block(width):  # per layer: forward, dA (or dx) and dW GEMMs
    assert _triton_calls(text) == 12
  else:  # forward, row-parallel backward, weight-gradient backward
    assert _triton_calls(text) == 3


def test_bf16_weights_are_cast_once_outside_the_kernels():
  params = block_params(jax.random.PRNGKey(0), 256)

  def loss(x, p):
    return jnp.sum(kernels.fused_residual_block(x, p, impl="pallas", matmul_dtype=jnp.bfloat16))

  text = _lower_for_cuda(jax.grad(loss, argnums=(0, 1)), jnp.zeros((512, 256)), params)
  calls = {re.search(r'name = "(\w+)"', l)[1]: l.rsplit(" : (", 1)[1]
           for l in text.splitlines() if "__gpu$xla.gpu.triton" in l}
  # The row kernels stream bf16 weights; the weight gradient still comes back in f32.
  for name in ("residual_block_fwd", "residual_block_bwd_rows"):
    assert "tensor<4x256x256xbf16>" in calls[name] and "4x256x256xf32" not in calls[name]
  assert calls["residual_block_bwd_weights"].endswith("tensor<4x256x256xf32>")


@pytest.mark.parametrize("prologue", [False, True])
def test_tiled_kernels_take_the_activation_where_the_config_says(prologue):
  """Materialised (default): every forward and dW GEMM reads a plain operand; with bf16
  matmuls each layer's activation and dz reach them in bf16. Prologue: layers 1-3 recompute
  the activation from f32 z."""
  params = block_params(jax.random.PRNGKey(0), 512)
  cfg = kernels.TiledBlockConfig(activation_prologue=prologue)

  def loss(x, p):
    return jnp.sum(kernels.fused_residual_block(x, p, impl="pallas", config=cfg,
                                                matmul_dtype=jnp.bfloat16))

  text = _lower_for_cuda(jax.grad(loss, argnums=(0, 1)), jnp.zeros((256, 512)), params)
  calls = [(re.search(r'name = "(\w+)"', l)[1], l.rsplit(" : (", 1)[1])
           for l in text.splitlines() if "__gpu$xla.gpu.triton" in l]
  names = sorted(n.removeprefix("residual_block_tiled_") for n, _ in calls)
  if prologue:
    assert names == sorted(["fwd"] + ["fwd_act"] * 3 + ["bwd_da"] * 3 + ["bwd_dx"]
                           + ["bwd_dw"] + ["bwd_dw_act"] * 3)
    return
  assert names == sorted(["fwd"] * 4 + ["bwd_da"] * 3 + ["bwd_dx"] + ["bwd_dw"] * 4)
  operands = [sig.split(") -> ")[0] for n, sig in calls if n.endswith(("fwd", "bwd_dw"))]
  # Layer 0 reads x as given (f32); layers 1-3 read h (and dW its dz) in bf16.
  assert sum("tensor<256x512xf32>" in o for o in operands) == 2
  assert sum(o.count("256x512xbf16") == 1 and "256x512xf32" not in o for o in operands) == 3
  assert sum(o.count("256x512xbf16") == 2 for o in operands) == 3


@pytest.mark.parametrize("remat", [False, True])
def test_residual_stack_lowers_for_cuda_and_remat_recomputes_the_forward(remat):
  params = block_params(jax.random.PRNGKey(0), 256, blocks=3)

  def loss(x, p):
    return jnp.sum(kernels.fused_residual_stack(x, p, impl="pallas", remat=remat))

  text = _lower_for_cuda(jax.grad(loss, argnums=(0, 1)), jnp.zeros((256, 256)), params)
  # One scan over the blocks forward, one backward; with remat the backward's body runs the
  # block's forward kernel again before its two backward kernels.
  names = sorted(re.search(r'name = "(\w+)"', l)[1] for l in text.splitlines()
                 if "__gpu$xla.gpu.triton" in l)
  fwd = ["residual_block_fwd"] * (2 if remat else 1)
  assert names == sorted(fwd + ["residual_block_bwd_rows", "residual_block_bwd_weights"]), names


@pytest.mark.parametrize("batch,dim,energy", [
    (37, 16, "l2"), (4096, 64, "l2"), (300, 256, "l2_sq"), (64, 512, "dot")])
def test_infonce_forward_and_backward_lower_for_cuda(batch, dim, energy):
  def loss(a, b):
    return kernels.infonce_loss(a, b, energy=energy, variant="symmetric", impl="pallas")[0]

  x = jnp.zeros((batch, dim))
  text = _lower_for_cuda(jax.grad(loss, argnums=(0, 1)), x, x)
  # Row and column logsumexp passes, and d phi / d psi for each.
  assert _triton_calls(text) == 6


def test_forward_variant_runs_only_the_row_pass():
  def loss(a, b):
    return kernels.infonce_loss(a, b, variant="forward", impl="pallas")[0]

  x = jnp.zeros((512, 64))
  text = _lower_for_cuda(jax.grad(loss, argnums=(0, 1)), x, x)
  names = re.findall(r'name = "(infonce\w*)"', re.sub(r'ir = "(?:[^"\\]|\\.)*"', "", text))
  assert sorted(names) == ["infonce_bwd_dphi", "infonce_bwd_dpsi", "infonce_fwd"]
  # B = 512: 8 row tiles x 8 column splits (every column tile its own program).
  assert "grid_x = 8 : i32, grid_y = 8 : i32" in text


def test_vmapped_kernels_lower_for_cuda():
  params = block_params(jax.random.PRNGKey(0), 64)

  def block_loss(x, p):
    return jnp.sum(jax.vmap(lambda xi: kernels.fused_residual_block(xi, p, impl="pallas"))(x))

  def infonce_loss(a, b):
    per_item = jax.vmap(lambda x, y: kernels.infonce_loss(x, y, impl="pallas")[0])
    return jnp.sum(per_item(a, b))

  x = jnp.zeros((3, 40, 64))
  assert _triton_calls(_lower_for_cuda(jax.grad(block_loss, argnums=(0, 1)), x, params)) == 3
  x = jnp.zeros((3, 40, 16))
  assert _triton_calls(_lower_for_cuda(jax.grad(infonce_loss, argnums=(0, 1)), x, x)) == 3


def test_infonce_pallas_never_materialises_the_logit_matrix():
  batch = 512

  def grads(impl):
    def loss(a, b):
      return kernels.infonce_loss(a, b, variant="symmetric", logsumexp_penalty=0.1,
                                  impl=impl)[0]
    return jax.value_and_grad(loss, argnums=(0, 1))

  x = jnp.zeros((batch, 64))
  square = re.compile(rf"tensor<{batch}x{batch}x")
  assert square.search(_lower_for_cuda(grads("xla"), x, x))  # the check can see one
  assert not square.search(_lower_for_cuda(grads("pallas"), x, x))


def test_config_reaches_the_triton_launch():
  cfg = residual_block_pallas.BlockConfig(block_rows=32, num_warps=8)
  assert hash(cfg) == hash(residual_block_pallas.BlockConfig(block_rows=32, num_warps=8))
  params = block_params(jax.random.PRNGKey(0), 64)
  x = jnp.zeros((100, 64))

  def lowered(config):
    return _lower_for_cuda(lambda x, p: kernels.fused_residual_block(x, p, impl="pallas",
                                                                     config=config), x, params)

  assert "num_warps = 8" in lowered(cfg) and "grid_x = 4" in lowered(cfg)  # 100 rows -> 4 x 32
  assert "num_warps = 4" in lowered(None) and "grid_x = 7" in lowered(None)  # 7 x 16 rows
