"""Pallas (Triton) residual block for wide layers: per-layer tiled GEMMs with fused LayerNorm.

The whole-row kernels of :mod:`residual_block_pallas` keep full rows in one program, so each
program re-streams all four ``width x width`` weights and holds at most 16 rows at width 1024
(no wgmma, a few dozen programs). Here every layer is a GEMM tiled over ``[block_m, block_n]``
output tiles (grid ``batch / block_m x width / block_n``: hundreds of programs at the paper's
wide shapes, 64-128-row tiles for Hopper's wgmma), and LayerNorm is fused into the GEMMs around
it instead of running as separate passes over memory:

* **Forward, layer l:** the GEMM's *epilogue* adds the bias, writes the tile of ``z[l]`` and the
  tile's partial row statistics (sum and sum of squared deviations from the tile mean). A tiny
  XLA reduction merges the partials (Chan's parallel variance, exact for any split) into each
  row's mean and ``rsqrt(var + eps)``. The block's output ``x + swish(LN(z[3]) ...)`` is one
  XLA elementwise fusion. Saved for the backward: ``x``, the four ``z`` and their row
  statistics (the XLA path saves the same matmul outputs).
* **Backward, layer l (last to first):** ``du[l]`` (the gradient at the LayerNorm output,
  after Swish) and its two row sums are given; one XLA fusion forms
  ``dz = rstd * (du * scale - mean(du * scale) - zhat * mean(du * scale * zhat))`` and the
  column sums ``db``, ``dscale``, ``doffset``. The ``dA = dz @ w[l]^T`` GEMM's epilogue applies
  the previous layer's Swish and LayerNorm-scale backward, writing ``du[l-1]`` and its partial
  row sums (or, at the first layer, ``dx = dy + dA``). The ``dW = h[l-1]^T dz`` GEMM reduces
  over the batch (split into ``dw_splits`` parts summed by XLA where that pays).
* **The activation** ``h[l] = swish(LN(z[l]) * scale + offset)``, the next forward GEMM's and
  the ``dW`` GEMM's operand (``TiledBlockConfig.activation_prologue``): by default formed once
  per element in the matmul dtype, by the XLA fusion after the statistics merge (forward) and
  by layer l's LayerNorm-backward fusion from the ``zhat`` it forms anyway (backward; layer
  l+1's ``dW`` waits for it), so those GEMMs read a plain operand; or recomputed from ``z[l]``
  in their *prologue*, chunk by chunk before the tensor-core dot, once per column tile.
  ``dz`` is written in the matmul dtype (both GEMMs that read it cast to it).

Layer 3's ``du`` (from the block's output gradient) and every merge of partial sums are plain
``jnp`` between the kernels; XLA fuses them. Padding: the width to a multiple of the tiles
(zero weights, biases, scales and offsets, so padded columns are exactly 0 and the statistics
count only the true width), the batch to a multiple of the row tiles (zero rows, sliced off).
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

MIN_WIDTH = 16
MAX_WIDTH = 8192


@dataclasses.dataclass(frozen=True)
class TiledBlockConfig:
  """Tiles and Triton launch parameters of the tiled (wide-layer) residual-block kernels.

  Attributes:
    block_m, block_n: the output tile of the forward and ``dA`` GEMMs (batch rows x columns).
      Hopper's wgmma wants ``block_m >= 64``.
    block_k: contraction chunk of those GEMMs.
    dw_block: side of the square ``dW`` output tile.
    dw_block_batch: batch chunk the ``dW`` GEMM reduces over per step.
    dw_splits: parts the ``dW`` reduction over the batch is split into (partial ``dW`` summed
      by XLA); more programs when ``(width / dw_block)^2`` alone would leave SMs idle.
    num_warps, num_stages: Triton launch parameters of every kernel.
    activation_prologue: where each layer's activation ``swish(LN(z) * scale + offset)`` is
      formed for the next GEMM. ``False`` (default): once per element, by an XLA fusion in the
      forward and by the LayerNorm-backward fusion in the backward, written in the matmul
      dtype; the forward and ``dW`` GEMMs then read it as a plain operand (straight from
      shared memory into wgmma). ``True``: recomputed from ``z`` in those GEMMs' prologues,
      once per column tile (``width / block_n`` times per element), saving that HBM round
      trip.
  """
  block_m: int = 128
  block_n: int = 128
  block_k: int = 32
  dw_block: int = 128
  dw_block_batch: int = 32
  dw_splits: int = 1
  num_warps: int = 8
  num_stages: int = 3
  activation_prologue: bool = False

  @property
  def width_multiple(self) -> int:
    return max(self.block_n, self.block_k, self.dw_block)

  @property
  def batch_multiple(self) -> int:
    return max(self.block_m, self.dw_block_batch * self.dw_splits)


# Relative costs the tile heuristic weighs (H100 SXM datasheet / measured orders of
# magnitude): one SM's TF32 tensor-core rate, FLOP/s, the chip's aggregate L2 and HBM
# bandwidths, and the launch gap of one more kernel.
_SM_TENSOR_FLOPS = 494.7e12 / 132
_L2_BYTES_PER_S = 5.5e12
_HBM_BYTES_PER_S = 3.35e12
_LAUNCH_S = 2e-6


def _gemm_estimate_s(rows: int, cols: int, depth: int, bm: int, bn: int, sms: int,
                     splits: int = 1) -> float:
  """Seconds of a ``[rows, depth] @ [depth, cols]`` f32 GEMM in ``bm x bn`` tiles, its
  contraction split ``splits`` ways: whole waves of programs at one SM's tensor-core rate, or
  the L2 re-reads of both operands, whichever binds; plus summing the split outputs."""
  programs = -(-rows // bm) * -(-cols // bn) * splits
  compute = -(-programs // sms) * 2.0 * bm * bn * (depth / splits) / _SM_TENSOR_FLOPS
  l2 = 4.0 * depth * (rows * -(-cols // bn) + cols * -(-rows // bm)) / _L2_BYTES_PER_S
  merge = (splits + 1) * rows * cols * 4.0 / _HBM_BYTES_PER_S + _LAUNCH_S if splits > 1 else 0.0
  return max(compute, l2) + merge


def default_tiled_config(width: int, batch: int | None = None,
                         sms: int | None = None) -> TiledBlockConfig:
  """Tiles for ``[batch, width]`` sized from the device's SM count: the output tile (128 x 128,
  64 x 128, 128 x 64 or 64 x 64; all compile for sm_90a without spills) whose forward GEMM is
  estimated fastest (whole waves of tiles vs L2 re-reads), and the ``dW`` batch split (1-8
  parts of >= 4 chunks) whose extra programs gain more than summing the parts costs."""
  sms = sms or common.sm_count()
  padded = common.round_up(width, 128)
  rows = common.round_up(max(batch or 4096, 1), 64)
  candidates = [(128, 128), (64, 128), (128, 64), (64, 64)]
  bm, bn = min(candidates, key=lambda t: (_gemm_estimate_s(rows, padded, padded, *t, sms),
                                          -t[0] * t[1]))
  splits = [s for s in (1, 2, 4, 8) if s == 1 or rows // (32 * s) >= 4]
  best = min(splits, key=lambda s: (_gemm_estimate_s(padded, padded, rows, 128, 128, sms, s), s))
  return TiledBlockConfig(block_m=bm, block_n=bn, dw_splits=best)


def check_config(config: TiledBlockConfig) -> str | None:
  for name in ("block_m", "block_n", "block_k", "dw_block", "dw_block_batch", "dw_splits"):
    if not common.is_power_of_2(getattr(config, name)):
      return f"TiledBlockConfig.{name} must be a power of two, got {getattr(config, name)}"
  if min(config.block_m, config.block_n, config.block_k, config.dw_block,
         config.dw_block_batch) < 16:
    return "TiledBlockConfig tiles must be >= 16 (tensor-core operands)"
  return None


@dataclasses.dataclass(frozen=True)
class _Static:
  width: int  # true width (the statistics count it)
  config: TiledBlockConfig
  interpret: bool
  matmul_dtype: jnp.dtype
  weight_dtype: jnp.dtype


def _params(st: _Static, name: str):
  cfg = st.config
  return dict(compiler_params=common.triton_params(cfg.num_warps, cfg.num_stages, st.interpret),
              interpret=st.interpret, name=name)


def _row_partials(rows: int, padded: int, cfg: TiledBlockConfig):
  """Shape and spec of a per-tile partial row sum: ``[width / block_n, rows]`` f32, written by
  the program of output tile ``(i, j)`` at ``[j, i*block_m:(i+1)*block_m]``."""
  return (jax.ShapeDtypeStruct((padded // cfg.block_n, rows), jnp.float32),
          pl.BlockSpec((None, cfg.block_m), lambda i, j: (j, i)))


def _act(z, mean, rstd, scale, offset):
  """``(h, zhat, u, sig)``: ``h = swish(((z - mean) * rstd) * scale + offset)`` (f32)."""
  zhat = (z - mean[:, None]) * rstd[:, None]
  u = zhat * scale[None, :] + offset[None, :]
  sig = jax.nn.sigmoid(u)
  return u * sig, zhat, u, sig


def _col_mask(start, size: int, width: int):
  return (start + jnp.arange(size) < width)[None, :]


# ---------------------------------------------------------------------------------------------
# Forward: z[l] = act(z[l-1]) @ w[l] + b[l] (act = identity on x for l = 0), plus the partial
# row statistics of each [block_m, block_n] tile.


def _fwd_kernel(src_ref, mean_ref, rstd_ref, scale_ref, offset_ref, w_ref, b_ref,
                z_ref, psum_ref, pm2_ref, *, st: _Static, prologue: bool):
  bm, bn = z_ref.shape
  bk = st.config.block_k
  f32 = jnp.float32
  if prologue:
    mean, rstd = mean_ref[...], rstd_ref[...]

  def body(k, acc):
    cols = common.chunk(k, bk)
    a = src_ref[:, cols].astype(f32)
    if prologue:  # padded columns: scale = offset = 0, so the activation is exactly 0
      a, _, _, _ = _act(a, mean, rstd, scale_ref[cols].astype(f32), offset_ref[cols].astype(f32))
    return acc + jnp.dot(a.astype(st.matmul_dtype), w_ref[cols, :].astype(st.matmul_dtype),
                         preferred_element_type=f32)

  acc = jax.lax.fori_loop(0, src_ref.shape[1] // bk, body, jnp.zeros((bm, bn), f32))
  z = acc + b_ref[...].astype(f32)[None, :]
  z_ref[...] = z
  mask = _col_mask(pl.program_id(1) * bn, bn, st.width)
  count = jnp.maximum(jnp.sum(mask.astype(f32)), 1.0)
  s = jnp.sum(jnp.where(mask, z, 0.0), axis=1)
  dev = jnp.where(mask, z - (s / count)[:, None], 0.0)
  psum_ref[...] = s
  pm2_ref[...] = jnp.sum(dev * dev, axis=1)


def _fwd_layer(src, mean, rstd, scale, offset, w, b, st: _Static, prologue: bool):
  """One layer's GEMM -> ``(z [B, Wp] f32, psum [Wp/bn, B], pm2 [Wp/bn, B])``."""
  rows, padded = src.shape
  cfg = st.config
  bm, bn = cfg.block_m, cfg.block_n
  tiles_n = padded // bn
  f32 = jnp.float32
  row = pl.BlockSpec((bm,), lambda i, j: (i,))
  full_vec = pl.BlockSpec((padded,), lambda i, j: (0,))
  part, part_spec = _row_partials(rows, padded, cfg)
  return pl.pallas_call(
      functools.partial(_fwd_kernel, st=st, prologue=prologue),
      out_shape=[jax.ShapeDtypeStruct((rows, padded), f32), part, part],
      grid=(rows // bm, tiles_n),
      in_specs=[pl.BlockSpec((bm, padded), lambda i, j: (i, 0)), row, row, full_vec, full_vec,
                pl.BlockSpec((padded, bn), lambda i, j: (0, j)),
                pl.BlockSpec((bn,), lambda i, j: (j,))],
      out_specs=[pl.BlockSpec((bm, bn), lambda i, j: (i, j)), part_spec, part_spec],
      **_params(st, "residual_block_tiled_fwd_act" if prologue else "residual_block_tiled_fwd"),
  )(src, mean, rstd, scale, offset, w, b)


def _merge_stats(psum, pm2, st: _Static):
  """Row mean and ``rsqrt(var + eps)`` from per-tile sums and squared deviations (Chan)."""
  tiles_n = psum.shape[0]
  bn = st.config.block_n
  counts = jnp.clip(st.width - bn * jnp.arange(tiles_n), 0, bn).astype(jnp.float32)[:, None]
  mean = jnp.sum(psum, axis=0) / st.width
  tile_mean = psum / jnp.maximum(counts, 1.0)
  m2 = jnp.sum(pm2, axis=0) + jnp.sum(counts * jnp.square(tile_mean - mean[None, :]), axis=0)
  return mean, jax.lax.rsqrt(m2 / st.width + LN_EPS)


def _forward(x, w, b, scale, offset, st: _Static):
  """``(y, residuals)``; ``w`` already in the matmul dtype."""
  f32 = jnp.float32
  rows = x.shape[0]
  dummy = jnp.zeros((rows,), f32)
  prologue = st.config.activation_prologue
  zs, means, rstds = [], [], []
  src, mean, rstd = x, dummy, dummy
  for layer in range(LAYERS):
    prev = max(layer - 1, 0)
    z, psum, pm2 = _fwd_layer(src, mean, rstd, scale[prev], offset[prev], w[layer], b[layer],
                              st, prologue=prologue and layer > 0)
    mean, rstd = _merge_stats(psum, pm2, st)
    zs.append(z)
    means.append(mean)
    rstds.append(rstd)
    if prologue or layer == LAYERS - 1:
      src = z
    else:  # the next GEMM's operand, once per element (one XLA fusion with the merge)
      src = _act(z, mean, rstd, scale[layer].astype(f32),
                 offset[layer].astype(f32))[0].astype(st.matmul_dtype)
  h, _, _, _ = _act(zs[-1], mean, rstd, scale[-1].astype(f32), offset[-1].astype(f32))
  y = (x.astype(f32) + h).astype(x.dtype)
  return y, (jnp.stack(zs), jnp.stack(means), jnp.stack(rstds))


# ---------------------------------------------------------------------------------------------
# Backward.


def _ln_backward(du, z, mean, rstd, s1, s2, scale, offset, st: _Static, emit_h: bool):
  """LayerNorm backward of one layer in XLA (one fusion): ``dz`` from ``du`` (the gradient at
  the LN output after scale/offset) and its row sums ``s1 = sum(du*scale)``,
  ``s2 = sum(du*scale*zhat)``; plus ``db``, ``dscale``, ``doffset``, and with ``emit_h`` the
  layer's activation (the next layer's ``dW`` operand) from the ``zhat`` it forms anyway.
  ``dz`` and ``h`` in the matmul dtype (the GEMMs that read them cast to it). Padded columns:
  0."""
  f32 = jnp.float32
  zhat = (z - mean[:, None]) * rstd[:, None]
  m1, m2 = (s1 / st.width)[:, None], (s2 / st.width)[:, None]
  dz = rstd[:, None] * (du * scale.astype(f32)[None, :] - m1 - zhat * m2)
  if z.shape[1] != st.width:
    dz = jnp.where(jnp.arange(z.shape[1])[None, :] < st.width, dz, 0.0)
  h = None
  if emit_h:  # same zhat: XLA computes it once for both outputs
    h = _act(z, mean, rstd, scale.astype(f32), offset.astype(f32))[0].astype(st.matmul_dtype)
  return (dz.astype(st.matmul_dtype), jnp.sum(dz, axis=0), jnp.sum(du * zhat, axis=0),
          jnp.sum(du, axis=0), h)


def _da_kernel(dz_ref, w_ref, *refs, st: _Static, first: bool):
  """``G = dz[l] @ w[l]^T`` tile; epilogue: ``dx = dy + G`` (first layer) or the previous
  layer's Swish and LayerNorm-scale backward (``du[l-1]`` and its partial row sums)."""
  bk = st.config.block_k
  f32 = jnp.float32
  bm = dz_ref.shape[0]
  bn = w_ref.shape[0]

  def body(k, acc):
    cols = common.chunk(k, bk)
    return acc + jax.lax.dot_general(dz_ref[:, cols].astype(st.matmul_dtype),
                                     w_ref[:, cols].astype(st.matmul_dtype),
                                     (((1,), (1,)), ((), ())), preferred_element_type=f32)

  acc = jax.lax.fori_loop(0, dz_ref.shape[1] // bk, body, jnp.zeros((bm, bn), f32))
  if first:
    dy_ref, dx_ref = refs
    dx_ref[...] = (dy_ref[...].astype(f32) + acc).astype(dx_ref.dtype)
    return
  pz_ref, pmean_ref, prstd_ref, pscale_ref, poffset_ref, du_prev_ref, ps1_ref, ps2_ref = refs
  pscale = pscale_ref[...].astype(f32)
  pmean, prstd = pmean_ref[...][:, None], prstd_ref[...][:, None]
  # sum(du * scale * zhat) is taken as sum(du * (u - offset)): zhat need not stay live next to
  # the accumulator, u and sig (which keeps the epilogue within the register file).
  poffset = poffset_ref[...].astype(f32)[None, :]
  u = ((pz_ref[...] - pmean) * prstd) * pscale[None, :] + poffset
  sig = jax.nn.sigmoid(u)
  du = acc * sig * (1.0 + u * (1.0 - sig))  # padded columns: acc = 0 (zero rows of w[l])
  du_prev_ref[...] = du
  ps1_ref[...] = jnp.sum(du * pscale[None, :], axis=1)
  ps2_ref[...] = jnp.sum(du * (u - poffset), axis=1)


def _da_layer(dz, w, st: _Static, *, dy=None, prev=None):
  rows, padded = dz.shape
  cfg = st.config
  bm, bn = cfg.block_m, cfg.block_n
  tiles_n = padded // bn
  f32 = jnp.float32
  row = pl.BlockSpec((bm,), lambda i, j: (i,))
  tile = pl.BlockSpec((bm, bn), lambda i, j: (i, j))
  col = pl.BlockSpec((bn,), lambda i, j: (j,))
  in_specs = [pl.BlockSpec((bm, padded), lambda i, j: (i, 0)),
              pl.BlockSpec((bn, padded), lambda i, j: (j, 0))]
  args = [dz, w]
  if dy is not None:
    kernel = functools.partial(_da_kernel, st=st, first=True)
    in_specs, args = in_specs + [tile], args + [dy]
    out_shape, out_specs = jax.ShapeDtypeStruct(dy.shape, dy.dtype), tile
    name = "residual_block_tiled_bwd_dx"
  else:
    kernel = functools.partial(_da_kernel, st=st, first=False)
    in_specs = in_specs + [tile, row, row, col, col]
    args = args + list(prev)
    part, part_spec = _row_partials(rows, padded, cfg)
    out_shape = [jax.ShapeDtypeStruct((rows, padded), f32), part, part]
    out_specs = [tile, part_spec, part_spec]
    name = "residual_block_tiled_bwd_da"
  return pl.pallas_call(kernel, out_shape=out_shape, grid=(rows // bm, tiles_n),
                        in_specs=in_specs, out_specs=out_specs, **_params(st, name))(*args)


def _dw_kernel(src_ref, pmean_ref, prstd_ref, pscale_ref, poffset_ref, dz_ref, dw_ref, *,
               st: _Static, prologue: bool):
  """``dw[I, J] = h[:, I]^T dz[:, J]`` over this program's share of the batch, ``h`` being
  the layer's input (``x``, or the previous layer's activation recomputed from its ``z``)."""
  cfg = st.config
  bb = cfg.dw_block_batch
  f32 = jnp.float32
  bw_i, bw_j = dw_ref.shape
  chunks = src_ref.shape[0] // (bb * cfg.dw_splits)
  first_chunk = pl.program_id(2) * chunks
  if prologue:
    pscale, poffset = pscale_ref[...].astype(f32), poffset_ref[...].astype(f32)

  def body(c, acc):
    rows = common.chunk(first_chunk + c, bb)
    h = src_ref[rows, :].astype(f32)
    if prologue:
      h, _, _, _ = _act(h, pmean_ref[rows], prstd_ref[rows], pscale, poffset)
    return acc + jax.lax.dot_general(h.astype(st.matmul_dtype),
                                     dz_ref[rows, :].astype(st.matmul_dtype),
                                     (((0,), (0,)), ((), ())), preferred_element_type=f32)

  dw_ref[...] = jax.lax.fori_loop(0, chunks, body, jnp.zeros((bw_i, bw_j), f32))


def _dw_layer(src, pmean, prstd, pscale, poffset, dz, st: _Static, prologue: bool):
  rows, padded = dz.shape
  cfg = st.config
  bw, splits = cfg.dw_block, cfg.dw_splits
  full_rows = pl.BlockSpec((rows,), lambda i, j, s: (0,))
  vec_i = pl.BlockSpec((bw,), lambda i, j, s: (i,))
  dw = pl.pallas_call(
      functools.partial(_dw_kernel, st=st, prologue=prologue),
      out_shape=jax.ShapeDtypeStruct((splits, padded, padded), jnp.float32),
      grid=(padded // bw, padded // bw, splits),
      in_specs=[pl.BlockSpec((rows, bw), lambda i, j, s: (0, i)), full_rows, full_rows, vec_i,
                vec_i, pl.BlockSpec((rows, bw), lambda i, j, s: (0, j))],
      out_specs=pl.BlockSpec((None, bw, bw), lambda i, j, s: (s, i, j)),
      **_params(st, "residual_block_tiled_bwd_dw_act" if prologue
                else "residual_block_tiled_bwd_dw"),
  )(src, pmean, prstd, pscale, poffset, dz)
  return jnp.sum(dw, axis=0) if splits > 1 else dw[0]


def _backward(st: _Static, residuals, dy):
  x, w, b, scale, offset, zs, means, rstds = residuals
  f32 = jnp.float32
  rows = x.shape[0]
  dummy = jnp.zeros((rows,), f32)
  sc = scale.astype(f32)
  prologue = st.config.activation_prologue
  # Layer 3: the output's Swish and LayerNorm-scale backward, and its row sums (XLA).
  _, zhat, u, sig = _act(zs[3], means[3], rstds[3], sc[3], offset[3].astype(f32))
  du = dy.astype(f32) * sig * (1.0 + u * (1.0 - sig))
  s1 = jnp.sum(du * sc[3][None, :], axis=1)
  s2 = jnp.sum(du * sc[3][None, :] * zhat, axis=1)
  grads = {"w": [None] * LAYERS, "b": [None] * LAYERS, "scale": [None] * LAYERS,
           "offset": [None] * LAYERS}
  dx = None
  waiting = None  # materialised: (layer, dz) whose dW waits for h[layer - 1]
  for layer in reversed(range(LAYERS)):
    dz, db, dsc, doff, h = _ln_backward(du, zs[layer], means[layer], rstds[layer], s1, s2,
                                        scale[layer], offset[layer], st,
                                        emit_h=not prologue and layer < LAYERS - 1)
    grads["b"][layer], grads["scale"][layer], grads["offset"][layer] = db, dsc, doff
    if waiting:
      above, dz_above = waiting
      grads["w"][above] = _dw_layer(h, dummy, dummy, scale[layer], offset[layer], dz_above, st,
                                    prologue=False)
      waiting = None
    if layer == 0:
      dx = _da_layer(dz, w[0], st, dy=dy)
      grads["w"][0] = _dw_layer(x, dummy, dummy, scale[0], offset[0], dz, st, prologue=False)
      continue
    prev = layer - 1
    du, ps1, ps2 = _da_layer(dz, w[layer], st, prev=(zs[prev], means[prev], rstds[prev],
                                                     scale[prev], offset[prev]))
    s1, s2 = jnp.sum(ps1, axis=0), jnp.sum(ps2, axis=0)
    if prologue:  # h[l-1] recomputed from z[l-1] in the dW GEMM's prologue
      grads["w"][layer] = _dw_layer(zs[prev], means[prev], rstds[prev], scale[prev],
                                    offset[prev], dz, st, prologue=True)
    else:
      waiting = (layer, dz)
  out = {k: jnp.stack(v) for k, v in grads.items()}
  return (dx, out["w"].astype(st.weight_dtype), out["b"].astype(b.dtype),
          out["scale"].astype(scale.dtype), out["offset"].astype(offset.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _block_padded(x, w, b, scale, offset, st: _Static):
  return _forward(x, w.astype(st.matmul_dtype), b, scale, offset, st)[0]


def _block_padded_fwd(x, w, b, scale, offset, st):
  w_mm = w.astype(st.matmul_dtype)  # cast once: the kernels stream the matmul dtype
  y, (zs, means, rstds) = _forward(x, w_mm, b, scale, offset, st)
  return y, (x, w_mm, b, scale, offset, zs, means, rstds)


_block_padded.defvjp(_block_padded_fwd, _backward)


def residual_block(x, params, *, interpret: bool = False, config: TiledBlockConfig | None = None,
                   matmul_dtype=None):
  """Tiled residual block on ``x [batch, width]`` (same contract as
  :func:`residual_block_pallas.residual_block`)."""
  batch, width = x.shape
  config = config or default_tiled_config(width, batch)
  reason = check_config(config)
  if reason:
    raise ValueError(reason)
  matmul_dtype = jnp.dtype(matmul_dtype or params["w"].dtype)
  st = _Static(width=width, config=config, interpret=bool(interpret), matmul_dtype=matmul_dtype,
               weight_dtype=jnp.dtype(params["w"].dtype))
  rows = common.round_up(max(batch, 1), config.batch_multiple)
  padded = common.round_up(width, config.width_multiple)
  pad_w = padded - width
  xp = jnp.pad(x, ((0, rows - batch), (0, pad_w)))
  w = jnp.pad(params["w"], ((0, 0), (0, pad_w), (0, pad_w)))
  vecs = [jnp.pad(params[k], ((0, 0), (0, pad_w))) for k in ("b", "scale", "offset")]
  return _block_padded(xp, w, *vecs, st)[:batch, :width]
