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
from jax.ad_checkpoint import checkpoint_name

from deepcrl_kernels._dispatch import check_impl, select_impl

LAYERS_PER_BLOCK = 4
LN_EPS = 1e-5
PARAM_NAMES = ("w", "b", "scale", "offset")
# Name of each layer's matmul output ``h @ w + b`` (a ``jax.checkpoint`` policy name; the XLA
# stack saves only these for the backward pass, see residual_stack_xla.py).
MATMUL_OUTPUT = "deepcrl_block_matmul_output"


def layer_reference(h, w, b, scale, offset, matmul_dtype=None):
  """One Dense -> LayerNorm -> Swish layer in plain jnp. ``h [batch, width]``.

  ``matmul_dtype`` (e.g. ``jnp.bfloat16``) casts the matmul operands; accumulation, LayerNorm
  and Swish run in f32 either way.
  """
  dtype = matmul_dtype or jnp.promote_types(h.dtype, w.dtype)
  z = jnp.dot(h.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32) + b
  z = checkpoint_name(z, MATMUL_OUTPUT)
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
    config: a :class:`kernels.BlockConfig` (whole-row kernels) or
      :class:`kernels.TiledBlockConfig` (tiled kernels) for the Pallas path; ``None`` picks
      the whole-row kernels up to width 256 and the tiled ones above, with default tiles
      (:func:`kernels.default_config`). Ignored by ``"xla"``.
    matmul_dtype: dtype of the matmul operands, e.g. ``jnp.bfloat16``; ``None`` keeps the
      weights' dtype. Accumulation, LayerNorm and Swish stay in f32.

  Raises:
    ValueError: bad shapes, or inputs the Pallas path cannot take with ``impl`` = ``"pallas"``
      or ``"interpret"`` (``"auto"`` falls back to ``"xla"`` with a logged warning).
  """
  check_impl(impl)
  check_block_params(x, params)
  from deepcrl_kernels import residual_block_pallas  # pylint: disable=g-import-not-at-top
  impl = select_impl(impl, "fused_residual_block",
                     lambda: residual_block_pallas.check_supported(x, params, config),
                     lambda: residual_block_pallas.self_check(x, params, config, matmul_dtype),
                     lambda: residual_block_pallas.auto_prefers_xla(x, config))
  if impl == "xla":
    return residual_block_reference(x, params, matmul_dtype)
  return residual_block_pallas.residual_block(x, params, interpret=(impl == "interpret"),
                                              config=config, matmul_dtype=matmul_dtype)


def fused_residual_stack(x, stacked_params, *, impl: str = "auto", remat=False,
                         config=None, matmul_dtype=None, unroll=None):
  """Applies ``n`` residual blocks whose params carry a leading axis of size ``n``.

  Uses ``lax.scan`` so compile time is flat in ``n``. ``remat``:

  * ``False``: the scan saves each block's input and each layer's pre-norm matmul output for
    the backward pass (5 arrays per block on every path; LayerNorm and Swish are recomputed
    from them; the Pallas whole-row kernels keep only the input with
    ``BlockConfig(save_preactivations=False)`` and recompute the matmuls instead).
  * ``True`` / ``"block"``: each block is rematerialised; only block inputs are kept
    (``n`` activations of ``[batch, width]``).
  * ``"nested"``: two-level rematerialisation over groups of ~``sqrt(n)`` blocks; only group
    inputs and one group's block inputs are live (``~2 sqrt(n)`` activations) at the cost of
    one more forward pass -- activation memory nearly flat in depth.

  ``config``/``matmul_dtype`` as in :func:`fused_residual_block`. ``unroll``: blocks per scan
  iteration on the XLA path (``None``: 1, or the :func:`residual_stack_xla.scan_unroll` context's
  value; ``True``: all, compile time then grows with ``n``); the Pallas path ignores it.
  """
  check_impl(impl)
  check_block_params(x, stacked_params, stacked=True)
  if remat not in (False, True, "block", "nested"):
    raise ValueError(f"remat must be False, True, 'block' or 'nested', got {remat!r}")
  from deepcrl_kernels import residual_block_pallas  # pylint: disable=g-import-not-at-top
  from deepcrl_kernels import residual_stack_xla  # pylint: disable=g-import-not-at-top
  if unroll is not None:
    residual_stack_xla.check_unroll(unroll)
  # One choice for the whole stack, made as fused_residual_block makes it for one block.
  one = jax.tree.map(lambda a: a[0], stacked_params)
  impl = select_impl(impl, "fused_residual_block",
                     lambda: residual_block_pallas.check_supported(x, one, config),
                     lambda: residual_block_pallas.self_check(x, one, config, matmul_dtype),
                     lambda: residual_block_pallas.auto_prefers_xla(x, config))
  if impl == "xla":
    return residual_stack_xla.residual_stack(x, stacked_params, remat=remat,
                                             matmul_dtype=matmul_dtype, unroll=unroll)

  def block(h, p):
    return fused_residual_block(h, p, impl=impl, config=config, matmul_dtype=matmul_dtype)

  if remat:
    block = jax.checkpoint(block)

  def run_blocks(h, params):
    return jax.lax.scan(lambda h, p: (block(h, p), None), h, params)[0]

  n = stacked_params["w"].shape[0]
  group = nested_group_size(n) if remat == "nested" else 1
  if group == 1:
    return run_blocks(x, stacked_params)
  grouped = jax.tree.map(lambda a: a.reshape((n // group, group) + a.shape[1:]), stacked_params)
  run_group = jax.checkpoint(run_blocks)
  return jax.lax.scan(lambda h, p: (run_group(h, p), None), x, grouped)[0]


def nested_group_size(num_blocks: int) -> int:
  """The divisor of ``num_blocks`` closest to its square root (1 for fewer than 4 blocks)."""
  if num_blocks < 4:
    return 1
  divisors = [d for d in range(1, num_blocks + 1) if num_blocks % d == 0]
  return min(divisors, key=lambda d: (abs(d - num_blocks ** 0.5), -d))
