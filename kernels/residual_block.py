"""Residual block of four Dense -> LayerNorm -> Swish layers plus a skip connection.

``y = x + f4(f3(f2(f1(x))))`` with ``f_i(h) = swish(layernorm(h @ w[i] + b[i]) * scale[i] + offset[i])``
(LayerNorm: biased variance, eps 1e-5). Shapes: ``x [batch, width]``; params
``{"w": [4, width, width], "b": [4, width], "scale": [4, width], "offset": [4, width]}``.
The stacked form takes the same dict with a leading block axis and scans over it, so compile
time does not grow with the number of blocks.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from kernels._dispatch import check_impl, select_impl

LAYERS_PER_BLOCK = 4
LN_EPS = 1e-5
PARAM_NAMES = ("w", "b", "scale", "offset")


def layer_reference(h, w, b, scale, offset, matmul_dtype=None):
  """One Dense -> LayerNorm -> Swish layer in plain jnp. ``h [batch, width]``.

  ``matmul_dtype`` (e.g. ``jnp.bfloat16``) casts the matmul operands; accumulation, LayerNorm
  and Swish run in f32 either way.
  """
  dtype = matmul_dtype or jnp.promote_types(h.dtype, w.dtype)
  z = jnp.dot(h.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32) + b
  mean = jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
  z = (z - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + offset
  return (z * jax.nn.sigmoid(z)).astype(h.dtype)


def residual_block_reference(x, params: Mapping[str, jax.Array], matmul_dtype=None):
  """Plain-jnp residual block: ``x [batch, width]`` -> ``[batch, width]``."""
  h = x
  for i in range(LAYERS_PER_BLOCK):
    h = layer_reference(h, params["w"][i], params["b"][i], params["scale"][i], params["offset"][i],
                        matmul_dtype)
  return x + h


def check_block_params(x, params, *, stacked: bool = False) -> None:
  """Raises ValueError naming the first shape constraint that ``x``/``params`` break."""
  if x.ndim != 2:
    raise ValueError(f"x must be [batch, width], got shape {x.shape}")
  width = x.shape[-1]
  missing = [k for k in PARAM_NAMES if k not in params]
  if missing:
    raise ValueError(f"params is missing {missing}; expected keys {PARAM_NAMES}")
  lead = (params["w"].shape[0],) if stacked else ()
  expected = {
      "w": lead + (LAYERS_PER_BLOCK, width, width),
      "b": lead + (LAYERS_PER_BLOCK, width),
      "scale": lead + (LAYERS_PER_BLOCK, width),
      "offset": lead + (LAYERS_PER_BLOCK, width),
  }
  for k, shape in expected.items():
    if tuple(params[k].shape) != shape:
      raise ValueError(
          f"params[{k!r}] must have shape {shape} for x of width {width}"
          f"{' (leading axis = number of blocks)' if stacked else ''}, got {tuple(params[k].shape)}")


def fused_residual_block(x, params, *, impl: str = "auto", config=None, matmul_dtype=None):
  """Applies one residual block. See the module docstring for shapes.

  Args:
    x: ``[batch, width]``, any batch (ragged sizes are padded inside the Pallas path).
    params: ``{"w": [4, width, width], "b" | "scale" | "offset": [4, width]}``.
    impl: ``"pallas"`` | ``"interpret"`` | ``"xla"`` | ``"auto"`` (see :mod:`kernels`).
    config: a :class:`kernels.residual_block_pallas.BlockConfig` (tiles, warps, stages) for the
      Pallas path; ``None`` picks a default per width. Ignored by ``"xla"``.
    matmul_dtype: dtype of the matmul operands, e.g. ``jnp.bfloat16``; ``None`` keeps the
      weights' dtype. Accumulation, LayerNorm and Swish stay in f32.

  Raises:
    ValueError: bad shapes, or inputs the Pallas path cannot take with ``impl`` = ``"pallas"``
      or ``"interpret"`` (``"auto"`` falls back to ``"xla"`` with a logged warning).
  """
  check_impl(impl)
  check_block_params(x, params)
  from kernels import residual_block_pallas  # pylint: disable=g-import-not-at-top
  impl = select_impl(impl, "fused_residual_block",
                     lambda: residual_block_pallas.check_supported(x, params, config))
  if impl == "xla":
    return residual_block_reference(x, params, matmul_dtype)
  return residual_block_pallas.residual_block(x, params, interpret=(impl == "interpret"),
                                              config=config, matmul_dtype=matmul_dtype)


def fused_residual_stack(x, stacked_params, *, impl: str = "auto", remat: bool = False,
                         config=None, matmul_dtype=None):
  """Applies ``n`` residual blocks whose params carry a leading axis of size ``n``.

  Uses ``lax.scan`` so compile time is flat in ``n``; ``remat=True`` rematerialises each block
  in the backward pass so activation memory is flat in ``n`` too (the Pallas backward already
  recomputes inside a block, so this only drops the block inputs saved by the scan).
  ``config``/``matmul_dtype`` as in :func:`fused_residual_block`.
  """
  check_impl(impl)
  check_block_params(x, stacked_params, stacked=True)

  def block(h, p):
    return fused_residual_block(h, p, impl=impl, config=config, matmul_dtype=matmul_dtype)

  if remat:
    block = jax.checkpoint(block)

  def body(h, p):
    return block(h, p), None

  y, _ = jax.lax.scan(body, x, stacked_params)
  return y
