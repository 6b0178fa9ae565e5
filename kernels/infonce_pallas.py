"""Pallas (Triton) InfoNCE: the B x B logits live only in registers, forward and backward.

One primitive, :func:`_lse`: the row logsumexp of ``logits[r, c] = energy(rows[r], cols[c])``
whose diagonal is replaced by exact positives ``pos`` computed outside (``[B]``, float32, from
the differences ``phi_i - psi_i``: the matmul expansion below loses the positives' accuracy when
the norms are large). Every energy is symmetric, so the column logsumexp is the same primitive
with ``phi`` and ``psi`` swapped; a variant computes only the logsumexp(s) it uses, and the
other one reported in ``aux`` is a separate call under ``stop_gradient`` that XLA removes when
nothing reads it.

Forward (``_lse_kernel``): a grid of ``(row tiles, splits)``; program ``(i, s)`` walks its
share of the column tiles, recomputing each ``[block_rows, block_cols]`` logits tile from one
tensor-core matmul (``||a-b||^2 = |a|^2 + |b|^2 - 2 a.b``, TF32 by default) and keeping an
online max and sum of exponentials per row (flash-attention style). XLA merges the ``splits``
partials (``[splits, B]``). Splitting the columns keeps >= 2 programs per SM at B = 4096.

Backward (``_grad_kernel``, the same grid): with ``P = exp(L - lse)`` off the diagonal, the
logits' cotangent is ``g_r P`` (row side); the kernel turns it into ``d rows`` through the
energy's derivative, per split, and the column side (``d cols``) is the same kernel on the
swapped inputs with the weights indexed by column. The diagonal's cotangent ``g P_ii`` goes to
``pos`` and on through XLA's autodiff of the exact positives.

The batch is zero-padded to a multiple of the tiles (masked inside), the feature dim to a power
of two >= 16 (zeros change no energy); both outside the ``custom_vjp``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from deepcrl_kernels import _pallas_common as common
from deepcrl_kernels.infonce import MIN_SQ_DIST, pairwise_energy

MAX_DIM = 512
SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16)
_PRECISIONS = {
    "highest": jax.lax.Precision.HIGHEST,  # IEEE f32 FMA on GPU, no tensor cores
    "tf32": jax.lax.Precision.DEFAULT,     # TF32 tensor cores on GPU (bf16 inputs: bf16 MMA)
}


@dataclasses.dataclass(frozen=True)
class InfoNCEConfig:
  """Tile sizes, matmul precision, grid split and Triton launch parameters.

  Attributes:
    block_rows, block_cols: logits tile handled per inner step (powers of two >= 16; Hopper's
      wgmma wants ``block_rows >= 64`` with 4 warps).
    precision: ``"tf32"`` (tensor cores, default; positives stay exact) or ``"highest"``.
    splits: how many programs share one row tile's columns (``0``: enough for ~2 programs per
      SM of the device).
    num_warps, num_stages: Triton launch parameters.
  """
  block_rows: int = 64
  block_cols: int = 64
  precision: str = "tf32"
  splits: int = 0
  num_warps: int = 4
  num_stages: int = 2


def default_infonce_config(dim: int, batch: int | None = None) -> InfoNCEConfig:
  """Heuristic tiles per feature dim (the grid split is sized from the device at launch)."""
  del batch  # the split, not the tile, adapts to the batch
  dim = max(16, common.next_power_of_2(dim))
  if dim <= 128:
    return InfoNCEConfig(block_rows=64, block_cols=64, num_warps=4)
  if dim <= 256:
    return InfoNCEConfig(block_rows=64, block_cols=32, num_warps=4)
  return InfoNCEConfig(block_rows=64, block_cols=32, num_warps=8)


def num_splits(config: InfoNCEConfig, padded_batch: int) -> int:
  """Programs per row tile: the smallest divisor of the column-tile count that reaches
  ``config.splits``, or by default ~2 programs per SM of the device."""
  col_tiles = padded_batch // config.block_cols
  want = config.splits or -(-2 * common.sm_count() // (padded_batch // config.block_rows))
  return next(d for d in range(1, col_tiles + 1) if col_tiles % d == 0 and (
      d >= want or d == col_tiles))


@dataclasses.dataclass(frozen=True)
class _Static:
  batch: int  # true batch: rows/columns at or beyond it are masked
  energy: str
  config: InfoNCEConfig
  interpret: bool


def check_supported(phi, psi, config: InfoNCEConfig | None = None) -> str | None:
  """Returns why the Pallas path cannot take these inputs, or None if it can."""
  dim = phi.shape[-1]
  if dim > MAX_DIM:
    return f"the Pallas InfoNCE kernel takes a feature dim of at most {MAX_DIM}, got {dim}"
  for name, a in (("phi", phi), ("psi", psi)):
    if jnp.dtype(a.dtype) not in SUPPORTED_DTYPES:
      return f"the Pallas InfoNCE kernel takes float32 or bfloat16 inputs, got {name} {a.dtype}"
  if config is not None:
    for name in ("block_rows", "block_cols"):
      if not common.is_power_of_2(getattr(config, name)) or getattr(config, name) < 16:
        return f"InfoNCEConfig.{name} must be a power of two >= 16, got {getattr(config, name)}"
    if config.precision not in _PRECISIONS:
      return f"InfoNCEConfig.precision must be one of {tuple(_PRECISIONS)}, got {config.precision!r}"
    if config.splits < 0:
      return f"InfoNCEConfig.splits must be >= 0, got {config.splits}"
  return None


# ---------------------------------------------------------------------------------------------
# Per-tile math.


def _logits_tile(a, b, a_sq, b_sq, *, energy: str, precision):
  """Energies of a ``[rows, dim]`` x ``[cols, dim]`` tile -> ``(logits, sq_dist or None)``."""
  dots = jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)
  if energy == "dot":
    return dots, None
  sq = jnp.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * dots, MIN_SQ_DIST)
  return (-sq if energy == "l2_sq" else -jnp.sqrt(sq)), sq


def _energy_factor(dlogits, logits, sq, *, energy: str):
  """``dlogits * d energy / d sq`` (or ``dlogits`` for the dot energy), zero where clamped."""
  if energy == "dot":
    return dlogits
  clamped = sq <= MIN_SQ_DIST
  if energy == "l2_sq":
    return jnp.where(clamped, 0.0, -dlogits)
  # logits = -sqrt(sq): d/dsq = -1 / (2 sqrt(sq)) = 0.5 / logits.
  return jnp.where(clamped, 0.0, dlogits * (0.5 / logits))


def _split_tiles(s, splits: int, n_tiles: int):
  """``(first tile, tiles per split)`` of split ``s``; ``splits`` divides ``n_tiles``."""
  per = n_tiles // splits
  return s * per, per


# ---------------------------------------------------------------------------------------------
# Forward: partial row max / sum of exponentials per split.


def _lse_kernel(a_ref, a_sq_ref, pos_ref, b_ref, b_sq_ref, m_ref, s_ref, *, st: _Static,
                splits: int):
  cfg = st.config
  bm, bn = cfg.block_rows, cfg.block_cols
  precision = _PRECISIONS[cfg.precision]
  i, s = pl.program_id(0), pl.program_id(1)
  a = a_ref[...]
  a_sq, pos = a_sq_ref[...], pos_ref[...]
  rows = i * bm + jnp.arange(bm)
  first, per = _split_tiles(s, splits, b_ref.shape[0] // bn)

  def body(jj, carry):
    j = first + jj
    m, acc = carry
    cols = j * bn + jnp.arange(bn)
    sl = common.chunk(j, bn)
    logits, _ = _logits_tile(a, b_ref[sl, :], a_sq, b_sq_ref[sl], energy=st.energy,
                             precision=precision)
    logits = jnp.where(rows[:, None] == cols[None, :], pos[:, None], logits)  # exact positives
    logits = jnp.where(cols[None, :] < st.batch, logits, common.MASK_VALUE)
    m_new = jnp.maximum(m, jnp.max(logits, axis=1))
    acc = acc * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
    return m_new, acc

  init = (jnp.full((bm,), common.MASK_VALUE, jnp.float32), jnp.zeros((bm,), jnp.float32))
  m, acc = jax.lax.fori_loop(0, per, body, init)
  m_ref[...] = m
  s_ref[...] = acc


def _squared_norms(a):
  return jnp.sum(jnp.square(a.astype(jnp.float32)), axis=-1)


def _lse_fwd(a, b, pos, st: _Static, name: str):
  """-> ``(lse, row_max)`` of the rows of ``a`` against the columns ``b``, ``[padded]`` f32."""
  padded, dim = a.shape
  cfg = st.config
  bm = cfg.block_rows
  splits = num_splits(cfg, padded)
  part = jax.ShapeDtypeStruct((splits, padded), jnp.float32)
  row_vec = pl.BlockSpec((bm,), lambda i, s: (i,))
  part_spec = pl.BlockSpec((None, bm), lambda i, s: (s, i))
  m, acc = pl.pallas_call(
      functools.partial(_lse_kernel, st=st, splits=splits),
      out_shape=[part, part],
      grid=(padded // bm, splits),
      in_specs=[pl.BlockSpec((bm, dim), lambda i, s: (i, 0)), row_vec, row_vec,
                pl.BlockSpec((padded, dim), lambda i, s: (0, 0)),
                pl.BlockSpec((padded,), lambda i, s: (0,))],
      out_specs=[part_spec, part_spec],
      compiler_params=common.triton_params(cfg.num_warps, cfg.num_stages, st.interpret),
      interpret=st.interpret,
      name=name,
  )(a, _squared_norms(a), pos, b, _squared_norms(b))
  row_max = jnp.max(m, axis=0)
  lse = row_max + jnp.log(jnp.sum(acc * jnp.exp(m - row_max[None, :]), axis=0))
  return lse, row_max


# ---------------------------------------------------------------------------------------------
# Backward: d rows of one side, per split.


def _grad_kernel(a_ref, a_sq_ref, wa_ref, ga_ref, b_ref, b_sq_ref, wb_ref, gb_ref, out_ref, *,
                 st: _Static, splits: int, weights_on_rows: bool):
  """``out[i] = sum_c f[i, c] * d energy(a_i, b_c) / d a_i`` over this split's columns, with
  ``dlogits = g * exp(logits - lse)`` and ``(lse, g)`` taken from the rows (``wa``/``ga``) or
  the columns (``wb``/``gb``). The diagonal is excluded (its cotangent goes to ``pos``)."""
  cfg = st.config
  bm, bn = cfg.block_rows, cfg.block_cols
  precision = _PRECISIONS[cfg.precision]
  i, s = pl.program_id(0), pl.program_id(1)
  a = a_ref[...]
  a_sq = a_sq_ref[...]
  rows = i * bm + jnp.arange(bm)
  first, per = _split_tiles(s, splits, b_ref.shape[0] // bn)
  if weights_on_rows:
    lse_r, g_r = wa_ref[...], ga_ref[...]

  def body(jj, carry):
    j = first + jj
    acc, fsum = carry
    cols = j * bn + jnp.arange(bn)
    sl = common.chunk(j, bn)
    b = b_ref[sl, :]
    logits, sq = _logits_tile(a, b, a_sq, b_sq_ref[sl], energy=st.energy, precision=precision)
    if weights_on_rows:
      dlogits = g_r[:, None] * jnp.exp(logits - lse_r[:, None])
    else:
      dlogits = gb_ref[sl][None, :] * jnp.exp(logits - wb_ref[sl][None, :])
    keep = (rows[:, None] != cols[None, :]) & (rows[:, None] < st.batch) & (
        cols[None, :] < st.batch)
    f = _energy_factor(jnp.where(keep, dlogits, 0.0), logits, sq, energy=st.energy)
    acc = acc + jnp.dot(f.astype(b.dtype), b, precision=precision,
                        preferred_element_type=jnp.float32)
    return acc, fsum + jnp.sum(f, axis=1)

  init = (jnp.zeros(a.shape, jnp.float32), jnp.zeros((bm,), jnp.float32))
  acc, fsum = jax.lax.fori_loop(0, per, body, init)
  if st.energy != "dot":  # d sq_ic / d a_i = 2 (a_i - b_c)
    acc = 2.0 * (fsum[:, None] * a.astype(jnp.float32) - acc)
  out_ref[...] = acc


def _grad_side(a, b, w_a, g_a, w_b, g_b, st: _Static, *, weights_on_rows: bool, name: str):
  padded, dim = a.shape
  cfg = st.config
  bm = cfg.block_rows
  splits = num_splits(cfg, padded)
  row_vec = pl.BlockSpec((bm,), lambda i, s: (i,))
  full_vec = pl.BlockSpec((padded,), lambda i, s: (0,))
  parts = pl.pallas_call(
      functools.partial(_grad_kernel, st=st, splits=splits, weights_on_rows=weights_on_rows),
      out_shape=jax.ShapeDtypeStruct((splits, padded, dim), jnp.float32),
      grid=(padded // bm, splits),
      in_specs=[pl.BlockSpec((bm, dim), lambda i, s: (i, 0)), row_vec, row_vec, row_vec,
                pl.BlockSpec((padded, dim), lambda i, s: (0, 0)), full_vec, full_vec, full_vec],
      out_specs=pl.BlockSpec((None, bm, dim), lambda i, s: (s, i, 0)),
      compiler_params=common.triton_params(cfg.num_warps, cfg.num_stages, st.interpret),
      interpret=st.interpret,
      name=name,
  )(a, _squared_norms(a), w_a, g_a, b, _squared_norms(b), w_b, g_b)
  return jnp.sum(parts, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _lse(a, b, pos, st: _Static, side: str):
  return _lse_fwd(a, b, pos, st, "infonce_fwd" if side == "row" else "infonce_fwd_cols")


def _lse_vjp_fwd(a, b, pos, st, side):
  lse, row_max = _lse_fwd(a, b, pos, st, "infonce_fwd" if side == "row" else "infonce_fwd_cols")
  return (lse, row_max), (a, b, pos, lse)


def _lse_vjp_bwd(st, side, residuals, cotangents):
  a, b, pos, lse = residuals
  g, _ = cotangents  # row_max is returned under stop_gradient
  g = g.astype(jnp.float32)
  zeros = jnp.zeros_like(g)
  # d a: rows of a, weights on the rows. d b: rows of b against columns a, weights on the
  # columns (the lse and cotangent belong to a's rows).
  names = ("infonce_bwd_dphi", "infonce_bwd_dpsi") if side == "row" else (
      "infonce_bwd_dpsi_cols", "infonce_bwd_dphi_cols")
  da = _grad_side(a, b, lse, g, zeros, zeros, st, weights_on_rows=True, name=names[0])
  db = _grad_side(b, a, zeros, zeros, lse, g, st, weights_on_rows=False, name=names[1])
  dpos = g * jnp.exp(pos - lse)
  return da.astype(a.dtype), db.astype(b.dtype), dpos


_lse.defvjp(_lse_vjp_fwd, _lse_vjp_bwd)


def infonce_stats(phi, psi, *, energy: str = "l2", interpret: bool = False,
                  config: InfoNCEConfig | None = None, rows: bool = True, cols: bool = True):
  """Per-row/column statistics of the logits, never materialising them.

  Returns ``(lse_row, lse_col, positive, row_max)``, each ``[batch]`` f32; ``lse_row`` and
  ``row_max`` are None unless ``rows``, ``lse_col`` is None unless ``cols``. ``row_max``
  carries no gradient.
  """
  batch, dim = phi.shape
  config = config or default_infonce_config(dim, batch)
  reason = check_supported(phi, psi, config)
  if reason:
    raise ValueError(reason)
  padded_dim = max(16, common.next_power_of_2(dim))
  padded = common.round_up(max(batch, 1), max(config.block_rows, config.block_cols))
  pad = ((0, padded - batch), (0, padded_dim - dim))
  st = _Static(batch=batch, energy=energy, config=config, interpret=bool(interpret))
  dtype = jnp.promote_types(phi.dtype, psi.dtype)
  phi, psi = phi.astype(dtype), psi.astype(dtype)
  # Exact positives from the differences, in f32 (their gradient is plain autodiff).
  pos = pairwise_energy(phi.astype(jnp.float32), psi.astype(jnp.float32), energy)
  a, b = jnp.pad(phi, pad), jnp.pad(psi, pad)
  pos_p = jnp.pad(pos, (0, padded - batch))
  lse_row = lse_col = row_max = None
  if rows:
    lse_row, row_max = _lse(a, b, pos_p, st, "row")
    lse_row, row_max = lse_row[:batch], jax.lax.stop_gradient(row_max[:batch])
  if cols:
    lse_col = _lse(b, a, pos_p, st, "col")[0][:batch]
  return lse_row, lse_col, pos, row_max


def infonce(phi, psi, *, energy: str = "l2", variant: str = "forward",
            logsumexp_penalty: float = 0.0, interpret: bool = False,
            config: InfoNCEConfig | None = None):
  """InfoNCE ``(loss, aux)`` with the semantics of :func:`kernels.infonce.infonce_reference`.

  Only the logsumexp(s) the variant uses enter the loss; the other one is reported in ``aux``
  under ``stop_gradient`` (for ``"forward"``, by a separate kernel call that XLA drops when
  nothing reads ``aux["logsumexp_col"]``).
  """
  use_row = variant in ("forward", "symmetric")
  use_col = variant in ("backward", "symmetric")
  kw = dict(energy=energy, interpret=interpret, config=config)
  lse, lse_col, pos, row_max = infonce_stats(phi, psi, rows=True, cols=use_col, **kw)
  if not use_row:
    lse = jax.lax.stop_gradient(lse)
  if not use_col:
    lse_col = jax.lax.stop_gradient(infonce_stats(
        jax.lax.stop_gradient(phi), jax.lax.stop_gradient(psi), rows=False, cols=True, **kw)[1])

  def term(l):
    return -jnp.mean(pos - l) + logsumexp_penalty * jnp.mean(jnp.square(l))

  if variant == "forward":
    loss = term(lse)
  elif variant == "backward":
    loss = term(lse_col)
  else:
    loss = 0.5 * (term(lse) + term(lse_col))
  aux = {
      "logsumexp": lse,
      "logsumexp_col": lse_col,
      "positive": pos,
      "accuracy": jnp.mean((pos >= row_max).astype(jnp.float32)),
  }
  return loss, aux


# ---------------------------------------------------------------------------------------------
# One-time self-check (impl="auto" on a GPU; see kernels/_dispatch.py).

# Max error relative to each array's scale against the XLA reference at precision "highest".
CHECK_TOLERANCES = {"value": 5e-3, "grad": 1e-2}


def self_check(phi, psi, energy: str, variant: str, config: InfoNCEConfig | None = None):
  """The :class:`~deepcrl_kernels._dispatch.SelfCheck` of the InfoNCE kernels for these inputs.

  Runs the loss and its gradients (all three kernels) with the same dim, dtype, energy,
  variant and tiles on two row tiles plus a ragged tail, against the jnp reference.
  """
  from deepcrl_kernels import _dispatch  # pylint: disable=g-import-not-at-top
  from deepcrl_kernels.infonce import infonce_reference  # pylint: disable=g-import-not-at-top
  batch, dim = phi.shape
  config = config or default_infonce_config(dim, batch)
  dtype = jnp.promote_types(phi.dtype, psi.dtype)
  key = ("infonce", dim, jnp.dtype(dtype).name, energy, variant, config)
  describe = (f"dim={dim} (called with batch {batch}), {jnp.dtype(dtype).name}, energy "
              f"{energy}, variant {variant}, {config}")
  tol = dict(CHECK_TOLERANCES)
  if dtype == jnp.bfloat16:
    tol = {"value": 3e-2, "grad": 5e-2}

  def run(impl: str):
    rows = 2 * max(config.block_rows, config.block_cols) + 3
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (rows, dim))
    b = (a + 0.5 * jax.random.normal(k2, (rows, dim))).astype(dtype)
    a = a.astype(dtype)

    def value_and_grads(fn):
      return jax.jit(jax.value_and_grad(lambda a, b: fn(a, b), argnums=(0, 1), has_aux=True))

    (loss, aux), (da, db) = value_and_grads(lambda a, b: infonce(
        a, b, energy=energy, variant=variant, logsumexp_penalty=0.1,
        interpret=(impl == "interpret"), config=config))(a, b)
    with jax.default_matmul_precision("highest"):
      (loss_r, aux_r), (da_r, db_r) = value_and_grads(lambda a, b: infonce_reference(
          a, b, energy=energy, variant=variant, logsumexp_penalty=0.1))(a, b)
    pairs = [("loss", loss, loss_r, "value"), ("positive", aux["positive"],
                                               aux_r["positive"], "value")]
    if variant in ("forward", "symmetric"):
      pairs.append(("logsumexp", aux["logsumexp"], aux_r["logsumexp"], "value"))
    if variant in ("backward", "symmetric"):
      pairs.append(("logsumexp_col", aux["logsumexp_col"], aux_r["logsumexp_col"], "value"))
    pairs += [("dphi", da, da_r, "grad"), ("dpsi", db, db_r, "grad")]
    return _dispatch.compare(pairs, tol)

  return _dispatch.SelfCheck(key=key, describe=describe, run=run)
