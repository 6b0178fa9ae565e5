"""Pallas (Triton) residual block: forward and fused backward, wrapped in a ``custom_vjp``.

Layout. The batch is cut into row tiles of ``block_rows``; one program owns a tile and the full
width (LayerNorm needs whole rows). Each matmul streams ``w[l]`` in K-chunks of ``block_k``
rows (a 256x256 f32 weight is 256 KB, more than Hopper's ~227 KB of shared memory) into one
``[rows, width]`` f32 accumulator, the only full-width array a program keeps in registers: the
row statistics of LayerNorm are reduced from it, and LayerNorm, Swish and their backward then
run in ``block_k``-column chunks through per-tile scratch in global memory (L2-resident),
guarded by block barriers. With ``matmul_dtype=bfloat16`` the weights are cast once, outside
the kernels, so they stream half the bytes.

Backward. By default (``BlockConfig.save_preactivations``) the forward also writes the four
pre-norm ``z[l]`` (what the XLA path saves), so each program streams the weights once in the
backward instead of twice; with ``save_preactivations=False`` it saves only ``x`` and the
backward recomputes the four matmuls (flash-style).

1. ``_block_bwd_rows``: one program per row tile rebuilds each layer's input ``h[l]`` and
   pre-norm ``z[l]`` for its own rows (from the saved ``z``, or by recomputing the layers; the
   row statistics in registers), then walks back through the layers: Swish and LayerNorm
   backward in two chunked passes (row sums, then ``dz``), ``dz[l]`` overwrites ``z[l]``,
   ``dh = dz @ w[l].T`` (streamed). It writes ``dx`` and per-tile partial sums of ``db``,
   ``dscale`` and ``doffset``.
2. ``_block_bwd_weights``: ``dw[l] = h[l].T @ dz[l]``, one program per ``[block_w, block_w]``
   tile of ``dw``, reducing over the batch in chunks (no atomics: deterministic).

Above width 256 (or with a ``TiledBlockConfig``) :func:`residual_block` hands over to the tiled
kernels of :mod:`residual_block_tiled`, whose per-layer GEMM tiles keep wgmma and enough
programs where whole rows no longer fit one program.

Widths that are not a power of two are zero-padded to one (Triton tiles must be powers of two)
with the LayerNorm statistics masked to the true width; ragged batches are zero-padded to a
multiple of the row tile. Both paddings happen outside the ``custom_vjp``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from deepcrl_kernels import _pallas_common as common
from deepcrl_kernels.residual_block import LAYERS_PER_BLOCK as LAYERS
from deepcrl_kernels.residual_block import LN_EPS

MAX_WIDTH = 1024
MIN_WIDTH = 16
SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16)


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Tile sizes and Triton launch parameters of the residual-block kernels.

  Attributes:
    block_rows: batch rows per program (forward and row-parallel backward). Hopper tensor
      cores (wgmma) want >= 64; wide layers need fewer to keep the ``[rows, width]`` f32
      accumulator in registers.
    block_k: K-chunk (rows of ``w[l]``) streamed per matmul step; must divide the padded width.
    block_w: side of the square ``dw`` tile of the weight-gradient kernel.
    block_batch: batch chunk the weight-gradient kernel reduces over per step.
    num_warps, num_stages: Triton launch parameters of the row kernels.
    num_warps_dw, num_stages_dw: the same for the weight-gradient kernel.
    save_preactivations: the forward also writes each layer's pre-norm ``z`` (4 arrays of
      ``[batch, width]`` f32 per block, what the XLA path saves) and the backward reads them
      instead of recomputing the four matmuls, so each program streams the weights once, not
      twice; ``False`` saves only ``x`` (activation memory of one array per block).
  """
  block_rows: int = 64
  block_k: int = 32
  block_w: int = 64
  block_batch: int = 32
  num_warps: int = 4
  num_stages: int = 2
  num_warps_dw: int = 4
  num_stages_dw: int = 3
  save_preactivations: bool = True


def default_block_config(width: int, batch: int | None = None) -> BlockConfig:
  """Heuristic tiles per (padded) width; tune with ``profiling/kernel_bench.py --tune``.

  The row tile is capped by the width (the ``[rows, width]`` f32 accumulator is the one
  full-width array in registers) and shrunk for small batches so that at least ~32 programs
  share the GPU. Each choice compiles for sm_90a without register spills
  (``profiling/kernel_ptx.py``); 64-row tiles (width <= 256) get Hopper's wgmma.
  """
  width = common.next_power_of_2(width)
  if width <= 128:
    cfg = BlockConfig(block_rows=64, block_k=min(width, 16), block_w=min(64, width),
                      num_warps=8 if width == 128 else 4)
  elif width <= 256:
    cfg = BlockConfig(block_rows=64, block_k=16, num_warps=8)
  else:  # thinner K-chunks at 1024 keep the backward's registers under the cap
    cfg = BlockConfig(block_rows=16, block_k=16 if width <= 512 else 8, num_warps=8)
  if batch is not None:
    rows = max(16, min(cfg.block_rows, common.next_power_of_2(max(batch // 32, 1))))
    if width == 256 and rows == 32:  # 32-row tiles spill in the backward at width 256
      rows = 16
    cfg = dataclasses.replace(cfg, block_rows=rows, block_batch=min(cfg.block_batch, rows))
  return cfg


def default_config(width: int, batch: int | None = None):
  """The config ``impl="pallas"`` uses for ``[batch, width]`` without one: a
  :class:`BlockConfig` (whole-row kernels) up to width 256, else a ``TiledBlockConfig``."""
  if uses_tiled_block(width):
    from deepcrl_kernels import residual_block_tiled as tiled  # pylint: disable=g-import-not-at-top
    return tiled.default_tiled_config(width, batch)
  return default_block_config(width, batch)


@dataclasses.dataclass(frozen=True)
class _Static:
  """Everything the kernels need that is not an array (hashable: a custom_vjp static arg)."""
  width: int  # true width (LayerNorm statistics run over it)
  config: BlockConfig
  interpret: bool
  matmul_dtype: jnp.dtype
  weight_dtype: jnp.dtype  # dtype of the caller's w (and so of dw)


# Widest width the whole-row kernels take by default; wider layers use the tiled kernels of
# residual_block_tiled (per-layer tiled GEMMs with LayerNorm fused around them), which keep
# wgmma-sized tiles and hundreds of programs where whole rows no longer fit one program.
WHOLE_ROW_MAX_WIDTH = 256


def uses_tiled_block(width: int, config=None) -> bool:
  """Whether the Pallas path runs the tiled kernels (:mod:`residual_block_tiled`) for this
  width and ``config``: a ``TiledBlockConfig``, or no config and width > 256."""
  from deepcrl_kernels import residual_block_tiled as tiled  # pylint: disable=g-import-not-at-top
  if config is not None:
    return isinstance(config, tiled.TiledBlockConfig)
  return width > WHOLE_ROW_MAX_WIDTH


def check_supported(x, params, config=None) -> str | None:
  """Returns why the Pallas path cannot take these inputs, or None if it can."""
  from deepcrl_kernels import residual_block_tiled as tiled  # pylint: disable=g-import-not-at-top
  width = x.shape[-1]
  tiled_path = uses_tiled_block(width, config)
  lo, hi = (tiled.MIN_WIDTH, tiled.MAX_WIDTH) if tiled_path else (MIN_WIDTH, MAX_WIDTH)
  if width % 16 or not lo <= width <= hi:
    which = "tiled" if tiled_path else "whole-row"
    return (f"the Pallas residual block ({which} kernels) needs a width that is a multiple of "
            f"16 in [{lo}, {hi}], got {width}")
  for name, a in [("x", x)] + [(f"params[{k!r}]", v) for k, v in params.items()]:
    if jnp.dtype(a.dtype) not in SUPPORTED_DTYPES:
      return f"the Pallas residual block takes float32 or bfloat16 arrays, got {name} {a.dtype}"
  if config is not None and tiled_path:
    return tiled.check_config(config)
  if config is not None:
    if not isinstance(config, BlockConfig):
      return f"config must be a BlockConfig or TiledBlockConfig, got {type(config).__name__}"
    padded = common.next_power_of_2(width)
    for name in ("block_rows", "block_k", "block_w", "block_batch"):
      if not common.is_power_of_2(getattr(config, name)):
        return f"BlockConfig.{name} must be a power of two, got {getattr(config, name)}"
    if config.block_k > padded or config.block_w > padded:
      return (f"BlockConfig.block_k ({config.block_k}) and block_w ({config.block_w}) must not "
              f"exceed the padded width {padded}")
  return None


def auto_prefers_xla(x, config=None) -> str | None:
  """Why ``impl="auto"`` should keep XLA for ``x`` (None: use the kernels). An explicit
  ``config`` is taken as a request for the kernels.

  Above width 256 the Pallas path is the tiled kernels, which the roofline model of
  ``profiling/kernel_bench.py --model`` puts at 0.88-1.26x of XLA (the layers' GEMMs dominate
  and the fused LayerNorm/Swish recompute costs about what the saved memory passes do), so
  ``auto`` keeps XLA there until a GPU measurement says otherwise."""
  if config is None and x.shape[-1] > WHOLE_ROW_MAX_WIDTH:
    return (f"the fused block is modelled no faster than XLA at width {x.shape[-1]} (> "
            f"{WHOLE_ROW_MAX_WIDTH}: tiled kernels, GEMM-bound); impl='pallas' forces it")
  return None


# ---------------------------------------------------------------------------------------------
# Per-tile math shared by the forward and backward kernels.


def _matmul_streamed(load_a_chunk, w_ref, layer: int, *, rows: int, width: int, block_k: int,
                     transpose_w: bool, dtype):
  """``A @ w[layer]`` (or ``A @ w[layer].T``) with ``w`` streamed in K-chunks -> f32 ``[rows, width]``.

  ``load_a_chunk(k)`` returns the ``[rows, block_k]`` columns ``k*block_k:(k+1)*block_k`` of A.
  """

  def body(k, acc):
    a = load_a_chunk(k).astype(dtype)
    if transpose_w:  # columns of w[layer]: contract A's chunk with w's second axis
      wk = w_ref[layer, :, common.chunk(k, block_k)].astype(dtype)
      prod = jax.lax.dot_general(a, wk, (((1,), (1,)), ((), ())),
                                 preferred_element_type=jnp.float32)
    else:
      wk = w_ref[layer, common.chunk(k, block_k), :].astype(dtype)
      prod = jnp.dot(a, wk, preferred_element_type=jnp.float32)
    return acc + prod

  acc = jnp.zeros((rows, width), jnp.float32)
  return jax.lax.fori_loop(0, width // block_k, body, acc)


def _column_mask(padded: int, width: int):
  return None if padded == width else (jnp.arange(padded) < width)[None, :]


def _row_stats(z, *, width: int, mask):
  """LayerNorm mean and ``rsqrt(var + eps)`` per row of f32 ``z [rows, padded]`` (exact zeros in
  padded columns; statistics over the true ``width``)."""
  mean = jnp.sum(z, axis=1, keepdims=True) / width
  zc = z - mean
  if mask is not None:
    zc = jnp.where(mask, zc, 0.0)
  var = jnp.sum(zc * zc, axis=1, keepdims=True) / width
  return mean, jax.lax.rsqrt(var + LN_EPS)


def _chunk_mask(k, block_k: int, width: int, padded: int):
  return None if padded == width else (k * block_k + jnp.arange(block_k) < width)[None, :]


def _ln_swish_chunk(z, mean, rstd, scale, offset, mask):
  """``(h, zhat, u, sig)`` of one ``[rows, block_k]`` column chunk of the pre-norm ``z``."""
  zhat = (z - mean) * rstd
  if mask is not None:
    zhat = jnp.where(mask, zhat, 0.0)
  u = zhat * scale[None, :] + offset[None, :]
  sig = jax.nn.sigmoid(u)
  return u * sig, zhat, u, sig


# ---------------------------------------------------------------------------------------------
# Forward.
#
# Per layer: the streamed matmul leaves ``z`` in registers (the only [rows, width] array a
# program holds), its row statistics are reduced there, ``z`` goes to a per-tile scratch and
# LayerNorm + Swish run chunk by chunk from it into the activation scratch (``y``, f32), which
# the next layer's matmul streams. Chunking keeps register pressure at one accumulator.


def _block_fwd_kernel(x_ref, w_ref, b_ref, scale_ref, offset_ref, y_ref, z_ref, *,
                      st: _Static):
  rows, padded = x_ref.shape
  cfg = st.config
  bk = cfg.block_k
  mask = _column_mask(padded, st.width)
  f32 = jnp.float32
  for layer in range(LAYERS):
    src = x_ref if layer == 0 else y_ref
    z = _matmul_streamed(lambda k, src=src: src[:, common.chunk(k, bk)], w_ref, layer,
                         rows=rows, width=padded, block_k=bk, transpose_w=False,
                         dtype=st.matmul_dtype)
    z = z + b_ref[layer].astype(f32)[None, :]
    mean, rstd = _row_stats(z, width=st.width, mask=mask)
    if cfg.save_preactivations:  # the saved z of this layer, else one scratch for all
      z_ref[layer] = z  # read only after the barrier below
    else:
      z_ref[...] = z
    common.block_barrier(st.interpret)  # z complete, and every thread done reading y (src)

    def norm(k, carry, layer=layer, mean=mean, rstd=rstd):
      cols = common.chunk(k, bk)
      zc = z_ref[layer, :, cols] if cfg.save_preactivations else z_ref[:, cols]
      h, _, _, _ = _ln_swish_chunk(zc, mean, rstd,
                                   scale_ref[layer, cols].astype(f32),
                                   offset_ref[layer, cols].astype(f32),
                                   _chunk_mask(k, bk, st.width, padded))
      if layer == LAYERS - 1:
        h = x_ref[:, cols].astype(f32) + h
      y_ref[:, cols] = h
      return carry

    jax.lax.fori_loop(0, padded // bk, norm, 0)
    common.block_barrier(st.interpret)  # y complete before the next layer streams it


def _row_specs(rows: int, padded: int):
  return pl.BlockSpec((rows, padded), lambda i: (i, 0))


def _param_specs(padded: int):
  full3 = pl.BlockSpec((LAYERS, padded, padded), lambda i: (0, 0, 0))
  full2 = pl.BlockSpec((LAYERS, padded), lambda i: (0, 0))
  return [full3, full2, full2, full2]


def _block_fwd(x, w, b, scale, offset, st: _Static):
  """``(y, zs)``: zs the four pre-norm ``z`` ``[4, batch, padded]`` f32 when the config saves
  them, else None."""
  batch, padded = x.shape
  cfg = st.config
  act = jax.ShapeDtypeStruct((batch, padded), jnp.float32)
  if cfg.save_preactivations:
    z_shape = jax.ShapeDtypeStruct((LAYERS, batch, padded), jnp.float32)
    z_spec = pl.BlockSpec((LAYERS, cfg.block_rows, padded), lambda i: (0, i, 0))
  else:
    z_shape, z_spec = act, _row_specs(cfg.block_rows, padded)
  y, zs = pl.pallas_call(
      functools.partial(_block_fwd_kernel, st=st),
      out_shape=[act, z_shape],  # y (also the activation scratch) and z (saved or scratch)
      grid=(batch // cfg.block_rows,),
      in_specs=[_row_specs(cfg.block_rows, padded)] + _param_specs(padded),
      out_specs=[_row_specs(cfg.block_rows, padded), z_spec],
      compiler_params=common.triton_params(cfg.num_warps, cfg.num_stages, st.interpret),
      interpret=st.interpret,
      name="residual_block_fwd",
  )(x, w, b, scale, offset)
  return y.astype(x.dtype), (zs if cfg.save_preactivations else None)


# ---------------------------------------------------------------------------------------------
# Backward.


def _block_bwd_rows_kernel(x_ref, dy_ref, w_ref, b_ref, scale_ref, offset_ref, *refs,
                           st: _Static):
  """Row tile: rebuild the layer inputs ``hs`` and pre-norm ``zd`` (from the saved ``z`` when
  the config saves them, else by recomputing the forward), then walk back; ``zd`` ends holding
  ``dz``, ``g`` is the scratch for the incoming gradient."""
  if st.config.save_preactivations:
    zs_ref, *refs = refs
  else:
    zs_ref = None
  dx_ref, hs_ref, zd_ref, g_ref, db_ref, dscale_ref, doffset_ref = refs
  rows, padded = x_ref.shape
  cfg = st.config
  bk = cfg.block_k
  n_chunks = padded // bk
  mask = _column_mask(padded, st.width)
  f32 = jnp.float32

  def params(layer, cols):
    return scale_ref[layer, cols].astype(f32), offset_ref[layer, cols].astype(f32)

  # Forward recomputation, keeping each layer's row statistics (vectors) in registers.
  hs_ref[0] = x_ref[...].astype(f32)
  common.block_barrier(st.interpret)
  stats = []
  for layer in range(LAYERS):
    if zs_ref is not None:  # saved by the forward: no matmul, the weights stream once
      z = zs_ref[layer]
    else:
      z = _matmul_streamed(lambda k, layer=layer: hs_ref[layer, :, common.chunk(k, bk)], w_ref,
                           layer, rows=rows, width=padded, block_k=bk, transpose_w=False,
                           dtype=st.matmul_dtype)
      z = z + b_ref[layer].astype(f32)[None, :]
    mean, rstd = _row_stats(z, width=st.width, mask=mask)
    stats.append((mean, rstd))
    zd_ref[layer] = z
    if layer < LAYERS - 1:
      common.block_barrier(st.interpret)

      def norm(k, carry, layer=layer, mean=mean, rstd=rstd):
        cols = common.chunk(k, bk)
        h, _, _, _ = _ln_swish_chunk(zd_ref[layer, :, cols], mean, rstd, *params(layer, cols),
                                     _chunk_mask(k, bk, st.width, padded))
        hs_ref[layer + 1, :, cols] = h
        return carry

      jax.lax.fori_loop(0, n_chunks, norm, 0)
      common.block_barrier(st.interpret)

  # Backward through the layers, last to first; g holds d(output of the current layer).
  g_ref[...] = dy_ref[...].astype(f32)
  common.block_barrier(st.interpret)
  dh = None
  for layer in reversed(range(LAYERS)):
    mean, rstd = stats[layer]

    def swish_bwd(k, layer=layer, mean=mean, rstd=rstd):
      cols = common.chunk(k, bk)
      scale, offset = params(layer, cols)
      _, zhat, u, sig = _ln_swish_chunk(zd_ref[layer, :, cols], mean, rstd, scale, offset,
                                        _chunk_mask(k, bk, st.width, padded))
      du = g_ref[:, cols] * sig * (1.0 + u * (1.0 - sig))
      return cols, zhat, du, du * scale[None, :]

    def sums(k, carry, layer=layer):
      s1, s2 = carry
      cols, zhat, du, dzhat = swish_bwd(k)
      dscale_ref[layer, cols] = jnp.sum(du * zhat, axis=0)
      doffset_ref[layer, cols] = jnp.sum(du, axis=0)
      return (s1 + jnp.sum(dzhat, axis=1, keepdims=True),
              s2 + jnp.sum(dzhat * zhat, axis=1, keepdims=True))

    zero = jnp.zeros((rows, 1), f32)
    s1, s2 = jax.lax.fori_loop(0, n_chunks, sums, (zero, zero))
    m1, m2 = s1 / st.width, s2 / st.width

    def write_dz(k, carry, layer=layer, rstd=rstd, m1=m1, m2=m2):
      cols, zhat, _, dzhat = swish_bwd(k)
      dz = rstd * (dzhat - m1 - zhat * m2)
      chunk_mask = _chunk_mask(k, bk, st.width, padded)
      if chunk_mask is not None:
        dz = jnp.where(chunk_mask, dz, 0.0)
      db_ref[layer, cols] = jnp.sum(dz, axis=0)
      common.block_barrier(st.interpret)  # this chunk of z is read by all: now overwrite it
      zd_ref[layer, :, cols] = dz
      return carry

    jax.lax.fori_loop(0, n_chunks, write_dz, 0)
    common.block_barrier(st.interpret)
    dh = _matmul_streamed(lambda k, layer=layer: zd_ref[layer, :, common.chunk(k, bk)], w_ref,
                          layer, rows=rows, width=padded, block_k=bk, transpose_w=True,
                          dtype=st.matmul_dtype)
    if layer > 0:
      g_ref[...] = dh  # g was last read before the barrier above
      common.block_barrier(st.interpret)
  dx_ref[...] = (dy_ref[...].astype(f32) + dh).astype(dx_ref.dtype)


def _block_bwd_weights_kernel(hs_ref, dz_ref, dw_ref, *, block_batch: int, dtype):
  """``dw[l][I, J] = sum_batch hs[l][:, I].T @ dz[l][:, J]`` for one ``[block_w, block_w]`` tile."""
  batch = hs_ref.shape[0]
  bw_i, bw_j = dw_ref.shape

  def body(c, acc):
    h = hs_ref[common.chunk(c, block_batch), :].astype(dtype)
    d = dz_ref[common.chunk(c, block_batch), :].astype(dtype)
    return acc + jax.lax.dot_general(h, d, (((0,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32)

  acc = jax.lax.fori_loop(0, batch // block_batch, body, jnp.zeros((bw_i, bw_j), jnp.float32))
  dw_ref[...] = acc.astype(dw_ref.dtype)


def _block_bwd(st: _Static, residuals, dy):
  x, w, b, scale, offset, zs = residuals
  batch, padded = x.shape
  cfg = st.config
  tiles = batch // cfg.block_rows
  f32 = jnp.float32
  act = jax.ShapeDtypeStruct((LAYERS, batch, padded), f32)
  part = jax.ShapeDtypeStruct((tiles, LAYERS, padded), f32)
  act_spec = pl.BlockSpec((LAYERS, cfg.block_rows, padded), lambda i: (0, i, 0))
  part_spec = pl.BlockSpec((None, LAYERS, padded), lambda i: (i, 0, 0))
  dx, hs, dz, _, db, dscale, doffset = pl.pallas_call(
      functools.partial(_block_bwd_rows_kernel, st=st),
      out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype), act, act,
                 jax.ShapeDtypeStruct((batch, padded), f32), part, part, part],
      grid=(tiles,),
      in_specs=[_row_specs(cfg.block_rows, padded), _row_specs(cfg.block_rows, padded)]
      + _param_specs(padded) + ([act_spec] if zs is not None else []),
      out_specs=[_row_specs(cfg.block_rows, padded), act_spec, act_spec,
                 _row_specs(cfg.block_rows, padded), part_spec, part_spec, part_spec],
      compiler_params=common.triton_params(cfg.num_warps, cfg.num_stages, st.interpret),
      interpret=st.interpret,
      name="residual_block_bwd_rows",
  )(x, dy, w, b, scale, offset, *([zs] if zs is not None else []))

  bw = min(cfg.block_w, padded)
  dw = pl.pallas_call(
      functools.partial(_block_bwd_weights_kernel, block_batch=cfg.block_batch,
                        dtype=st.matmul_dtype),
      out_shape=jax.ShapeDtypeStruct(w.shape, st.weight_dtype),
      grid=(LAYERS, padded // bw, padded // bw),
      in_specs=[pl.BlockSpec((None, batch, bw), lambda l, i, j: (l, 0, i)),
                pl.BlockSpec((None, batch, bw), lambda l, i, j: (l, 0, j))],
      out_specs=pl.BlockSpec((None, bw, bw), lambda l, i, j: (l, i, j)),
      compiler_params=common.triton_params(cfg.num_warps_dw, cfg.num_stages_dw, st.interpret),
      interpret=st.interpret,
      name="residual_block_bwd_weights",
  )(hs, dz)

  def total(p, like):
    return jnp.sum(p, axis=0).astype(like.dtype)

  return dx, dw, total(db, b), total(dscale, scale), total(doffset, offset)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _block_padded(x, w, b, scale, offset, st: _Static):
  return _block_fwd(x, w.astype(st.matmul_dtype), b, scale, offset, st)[0]


def _block_padded_fwd(x, w, b, scale, offset, st):
  # The matmul copy of the weights (bf16 with matmul_dtype=bfloat16) is made once, here, so
  # the kernels stream half the bytes; the backward reuses it and still returns dw in w's dtype.
  w_mm = w.astype(st.matmul_dtype)
  y, zs = _block_fwd(x, w_mm, b, scale, offset, st)
  return y, (x, w_mm, b, scale, offset, zs)


_block_padded.defvjp(_block_padded_fwd, _block_bwd)


def residual_block(x, params, *, interpret: bool = False, config: BlockConfig | None = None,
                   matmul_dtype=None):
  """Fused residual block on ``x [batch, width]``; see :mod:`kernels.residual_block`.

  Args:
    x: ``[batch, width]`` float32 or bfloat16.
    params: ``{"w": [4, width, width], "b", "scale", "offset": [4, width]}``.
    interpret: run the Pallas interpreter (CPU) instead of compiling with Triton.
    config: tiles and launch parameters; ``None`` picks :func:`default_block_config`.
    matmul_dtype: dtype of the matmul operands (``jnp.bfloat16`` for bf16 tensor cores);
      ``None`` uses the weights' dtype. Accumulation, LayerNorm and Swish stay in f32.

  Raises:
    ValueError: naming the constraint when the shapes, dtypes or config are unsupported.
  """
  batch, width = x.shape
  if uses_tiled_block(width, config):
    reason = check_supported(x, params, config)
    if reason:
      raise ValueError(reason)
    from deepcrl_kernels import residual_block_tiled as tiled  # pylint: disable=g-import-not-at-top
    return tiled.residual_block(x, params, interpret=interpret, config=config,
                                matmul_dtype=matmul_dtype)
  config = config or default_block_config(width, batch)
  reason = check_supported(x, params, config)
  if reason:
    raise ValueError(reason)
  padded = common.next_power_of_2(width)
  matmul_dtype = jnp.dtype(matmul_dtype or params["w"].dtype)
  st = _Static(width=width, config=config, interpret=bool(interpret), matmul_dtype=matmul_dtype,
               weight_dtype=jnp.dtype(params["w"].dtype))

  rows = common.round_up(max(batch, 1), max(config.block_rows, config.block_batch))
  pad_w = padded - width
  xp = jnp.pad(x, ((0, rows - batch), (0, pad_w)))
  w = jnp.pad(params["w"], ((0, 0), (0, pad_w), (0, pad_w)))
  vecs = [jnp.pad(params[k], ((0, 0), (0, pad_w))) for k in ("b", "scale", "offset")]
  y = _block_padded(xp, w, *vecs, st)
  return y[:batch, :width]


# ---------------------------------------------------------------------------------------------
# One-time self-check (impl="auto" on a GPU; see kernels/_dispatch.py).

# Max error relative to each array's scale against the XLA reference at precision "highest":
# TF32 matmuls (~1e-3 per product, renormalised by each LayerNorm) or bf16 matmul operands.
CHECK_TOLERANCES = {
    "float32": {"value": 5e-3, "grad": 1e-2},
    "bfloat16": {"value": 3e-2, "grad": 5e-2},
}


def self_check(x, params, config: BlockConfig | None = None, matmul_dtype=None):
  """The :class:`~deepcrl_kernels._dispatch.SelfCheck` of the block kernels for these inputs.

  Runs forward and backward (all three kernels) with the same width, dtypes, tiles and
  matmul dtype on two row tiles plus a ragged tail, against the jnp reference.
  """
  from deepcrl_kernels import _dispatch  # pylint: disable=g-import-not-at-top
  from deepcrl_kernels.residual_block import PARAM_NAMES, residual_block_reference  # pylint: disable=g-import-not-at-top
  batch, width = x.shape
  config = config or default_config(width, batch)
  mm = jnp.dtype(matmul_dtype or params["w"].dtype)
  dtypes = {k: jnp.dtype(params[k].dtype) for k in PARAM_NAMES}
  key = ("residual_block", width, jnp.dtype(x.dtype).name,
         tuple(d.name for d in dtypes.values()), mm.name, config)
  describe = (f"width={width} (called with batch {batch}), x {jnp.dtype(x.dtype).name}, "
              f"matmul {mm.name}, {config}")
  tol = CHECK_TOLERANCES["bfloat16" if jnp.bfloat16 in (mm, jnp.dtype(x.dtype)) else "float32"]

  def run(impl: str):
    tile = (config.batch_multiple if uses_tiled_block(width, config)
            else max(config.block_rows, config.block_batch))
    rows = 2 * tile + 3
    k = jax.random.split(jax.random.PRNGKey(0), 6)
    xs = jax.random.normal(k[0], (rows, width)).astype(x.dtype)
    p = {"w": jax.random.normal(k[1], (LAYERS, width, width)) / jnp.sqrt(width),
         "b": 0.1 * jax.random.normal(k[2], (LAYERS, width)),
         "scale": 1.0 + 0.2 * jax.random.normal(k[3], (LAYERS, width)),
         "offset": 0.1 * jax.random.normal(k[4], (LAYERS, width))}
    p = {n: v.astype(dtypes[n]) for n, v in p.items()}
    ct = jax.random.normal(k[5], (rows, width)).astype(x.dtype)

    def value_and_vjp(fn):
      def f(xs, p, ct):
        y, back = jax.vjp(fn, xs, p)
        return y, back(ct)
      return jax.jit(f)

    got = value_and_vjp(lambda a, q: residual_block(
        a, q, interpret=(impl == "interpret"), config=config, matmul_dtype=matmul_dtype))(
            xs, p, ct)
    with jax.default_matmul_precision("highest"):
      want = value_and_vjp(lambda a, q: residual_block_reference(a, q, matmul_dtype))(xs, p, ct)
    (y, (dx, dp)), (y_ref, (dx_ref, dp_ref)) = got, want
    pairs = [("y", y, y_ref, "value"), ("dx", dx, dx_ref, "grad")]
    pairs += [(f"d{n}", dp[n], dp_ref[n], "grad") for n in PARAM_NAMES]
    return _dispatch.compare(pairs, tol)

  return _dispatch.SelfCheck(key=key, describe=describe, run=run)
