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

from kernels._dispatch import check_impl, resolve_impl

LAYERS_PER_BLOCK = 4
LN_EPS = 1e-5
PARAM_NAMES = ("w", "b", "scale", "offset")


def layer_reference(h, w, b, scale, offset):
  """One Dense -> LayerNorm -> Swish layer in plain jnp. ``h [batch, width]``."""
  z = jnp.dot(h, w, preferred_element_type=jnp.float32) + b
  mean = jnp.mean(z, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(z - mean), axis=-1, keepdims=True)
  z = (z - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + offset
  return (z * jax.nn.sigmoid(z)).astype(h.dtype)


def residual_block_reference(x, params: Mapping[str, jax.Array]):
  """Plain-jnp residual block: ``x [batch, width]`` -> ``[batch, width]``."""
  h = x
  for i in range(LAYERS_PER_BLOCK):
    h = layer_reference(h, params["w"][i], params["b"][i], params["scale"][i], params["offset"][i])
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


def fused_residual_block(x, params, *, impl: str = "auto"):
  """Applies one residual block. See the module docstring for shapes."""
  check_impl(impl)
  check_block_params(x, params)
  impl = resolve_impl(impl)
  if impl == "xla":
    return residual_block_reference(x, params)
  from kernels import residual_block_pallas  # pylint: disable=g-import-not-at-top
  return residual_block_pallas.residual_block(x, params, interpret=(impl == "interpret"))


def fused_residual_stack(x, stacked_params, *, impl: str = "auto", remat: bool = False):
  """Applies ``n`` residual blocks whose params carry a leading axis of size ``n``.

  Uses ``lax.scan`` so compile time is flat in ``n``; ``remat=True`` rematerialises each block
  in the backward pass so activation memory is flat in ``n`` too.
  """
  check_impl(impl)
  check_block_params(x, stacked_params, stacked=True)

  def block(h, p):
    return fused_residual_block(h, p, impl=impl)

  if remat:
    block = jax.checkpoint(block)

  def body(h, p):
    return block(h, p), None

  y, _ = jax.lax.scan(body, x, stacked_params)
  return y
