"""Pallas (Triton) InfoNCE: the B x B logits live only in registers, forward and backward.

Forward (``_stats_fwd``): one program per ``block_rows`` rows of ``phi`` walks over ``psi`` in
``block_cols`` tiles, recomputing each logits tile from one matmul (``||a-b||^2 = |a|^2 +
|b|^2 - 2 a.b``), and keeps an online logsumexp per row (flash-attention style). The same pass
writes, per row tile, each column's max and sum of exponentials, which XLA folds into the column
logsumexp (``[row_tiles, B]`` partials: far smaller than ``[B, B]``). The positive logits are
picked off the diagonal of the tiles they fall in, so ``positive <= row max`` holds exactly.

Backward: with ``P_row = exp(L - lse_row)`` and ``P_col = exp(L - lse_col)`` the logits'
cotangent is ``dL = g_row * P_row + g_col * P_col + diag(g_pos)``. Two programs recompute the
tiles: ``_dphi`` (row tiles, loop over columns) and ``_dpsi`` (column tiles, loop over rows),
each turning ``dL`` into ``dphi``/``dpsi`` through the energy's derivative.

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
from deepcrl_kernels.infonce import MIN_SQ_DIST

MAX_DIM = 512
SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16)
_PRECISIONS = {
    "highest": jax.lax.Precision.HIGHEST,  # IEEE f32 FMA on GPU, like the XLA reference
    "tf32": jax.lax.Precision.DEFAULT,     # TF32 tensor cores on GPU (~1e-3 relative error)
}


@dataclasses.dataclass(frozen=True)
class InfoNCEConfig:
  """Tile sizes, matmul precision and Triton launch parameters of the InfoNCE kernels.

  Attributes:
    block_rows, block_cols: logits tile handled per inner step (powers of two).
    precision: ``"highest"`` (f32, matches the XLA reference, default) or ``"tf32"``.
    num_warps, num_stages: Triton launch parameters.
  """
  block_rows: int = 64
  block_cols: int = 64
  precision: str = "highest"
  num_warps: int = 4
  num_stages: int = 2


def default_infonce_config(dim: int, batch: int | None = None) -> InfoNCEConfig:
  """Heuristic tiles per feature dim; row tiles shrink until ~128 programs share the GPU."""
  dim = max(16, common.next_power_of_2(dim))
  if dim <= 64:
    cfg = InfoNCEConfig(block_rows=64, block_cols=64, num_warps=4)
  elif dim <= 256:
    cfg = InfoNCEConfig(block_rows=64, block_cols=32, num_warps=4)
  else:
    cfg = InfoNCEConfig(block_rows=32, block_cols=32, num_warps=8)
  if batch is not None:
    rows = max(16, min(cfg.block_rows, common.next_power_of_2(max(batch // 128, 1))))
    cfg = dataclasses.replace(cfg, block_rows=rows)
  return cfg


@dataclasses.dataclass(frozen=True)
class _Static:
  batch: int  # true batch: rows/columns at or beyond it are masked
  energy: str
  config: InfoNCEConfig
  interpret: bool
  grad_row: bool  # whether the row logsumexp can carry a cotangent
  grad_col: bool  # whether the column logsumexp can carry a cotangent


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
  return None


# ---------------------------------------------------------------------------------------------
# Per-tile math.


def _logits_tile(p, q, p_sq, q_sq, *, energy: str, precision):
  """Energies of a ``[rows, dim]`` x ``[cols, dim]`` tile -> ``(logits, sq_dist or None)``."""
  dots = jax.lax.dot_general(p, q, (((1,), (1,)), ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)
  if energy == "dot":
    return dots, None
  sq = jnp.maximum(p_sq[:, None] + q_sq[None, :] - 2.0 * dots, MIN_SQ_DIST)
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


def _valid(rows, cols, batch: int):
  return (rows[:, None] < batch) & (cols[None, :] < batch)


# ---------------------------------------------------------------------------------------------
# Forward.


def _stats_kernel(phi_ref, phi_sq_ref, psi_ref, psi_sq_ref,
                  lse_ref, max_ref, pos_ref, col_max_ref, col_sum_ref, *, st: _Static):
  cfg = st.config
  bm, bn = cfg.block_rows, cfg.block_cols
  precision = _PRECISIONS[cfg.precision]
  i = pl.program_id(0)
  p = phi_ref[...]
  p_sq = phi_sq_ref[...]
  rows = i * bm + jnp.arange(bm)
  n_col_tiles = psi_ref.shape[0] // bn

  def body(j, carry):
    m, s, pos = carry
    cols = j * bn + jnp.arange(bn)
    q = psi_ref[common.chunk(j, bn), :]
    q_sq = psi_sq_ref[common.chunk(j, bn)]
    logits, _ = _logits_tile(p, q, p_sq, q_sq, energy=st.energy, precision=precision)
    logits = jnp.where(_valid(rows, cols, st.batch), logits, common.MASK_VALUE)
    pos = pos + jnp.sum(jnp.where(rows[:, None] == cols[None, :], logits, 0.0), axis=1)
    m_new = jnp.maximum(m, jnp.max(logits, axis=1))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
    c_max = jnp.max(logits, axis=0)
    col_max_ref[common.chunk(j, bn)] = c_max
    col_sum_ref[common.chunk(j, bn)] = jnp.sum(jnp.exp(logits - c_max[None, :]), axis=0)
    return m_new, s, pos

  init = (jnp.full((bm,), common.MASK_VALUE, jnp.float32), jnp.zeros((bm,), jnp.float32),
          jnp.zeros((bm,), jnp.float32))
  m, s, pos = jax.lax.fori_loop(0, n_col_tiles, body, init)
  lse_ref[...] = m + jnp.log(s)
  max_ref[...] = m
  pos_ref[...] = pos


def _squared_norms(a):
  return jnp.sum(jnp.square(a.astype(jnp.float32)), axis=-1)


def _stats_fwd(phi, psi, st: _Static):
  """-> ``(lse_row, lse_col, positive, row_max)``, each ``[padded_batch]`` f32."""
  padded, dim = phi.shape
  cfg = st.config
  bm = cfg.block_rows
  tiles = padded // bm
  vec = jax.ShapeDtypeStruct((padded,), jnp.float32)
  part = jax.ShapeDtypeStruct((tiles, padded), jnp.float32)
  row_vec = pl.BlockSpec((bm,), lambda i: (i,))
  part_spec = pl.BlockSpec((None, padded), lambda i: (i, 0))
  lse, row_max, pos, col_max, col_sum = pl.pallas_call(
      functools.partial(_stats_kernel, st=st),
      out_shape=[vec, vec, vec, part, part],
      grid=(tiles,),
      in_specs=[pl.BlockSpec((bm, dim), lambda i: (i, 0)), row_vec,
                pl.BlockSpec((padded, dim), lambda i: (0, 0)),
                pl.BlockSpec((padded,), lambda i: (0,))],
      out_specs=[row_vec, row_vec, row_vec, part_spec, part_spec],
      compiler_params=common.triton_params(cfg.num_warps, cfg.num_stages),
      interpret=st.interpret,
      name="infonce_fwd",
  )(phi, _squared_norms(phi), psi, _squared_norms(psi))
  # Fold the per-row-tile column partials: lse_col = log sum_t col_sum[t] exp(col_max[t]).
  m = jnp.max(col_max, axis=0)
  lse_col = m + jnp.log(jnp.sum(col_sum * jnp.exp(col_max - m[None, :]), axis=0))
  return lse, lse_col, pos, row_max


# ---------------------------------------------------------------------------------------------
# Backward.


def _tile_factor(p, q, p_sq, q_sq, rows, cols, lse_r, g_r, g_p, lse_c, g_c, *, st: _Static):
  """Recomputes a logits tile and returns ``dlogits * d energy / d(sq or dot)`` for it."""
  logits, sq = _logits_tile(p, q, p_sq, q_sq, energy=st.energy,
                            precision=_PRECISIONS[st.config.precision])
  dlogits = jnp.where(rows[:, None] == cols[None, :], g_p[:, None], 0.0)
  if st.grad_row:
    dlogits = dlogits + g_r[:, None] * jnp.exp(logits - lse_r[:, None])
  if st.grad_col:
    dlogits = dlogits + g_c[None, :] * jnp.exp(logits - lse_c[None, :])
  dlogits = jnp.where(_valid(rows, cols, st.batch), dlogits, 0.0)
  return _energy_factor(dlogits, logits, sq, energy=st.energy)


def _dphi_kernel(phi_ref, phi_sq_ref, lse_r_ref, g_r_ref, g_p_ref,
                 psi_ref, psi_sq_ref, lse_c_ref, g_c_ref, dphi_ref, *, st: _Static):
  cfg = st.config
  bm, bn = cfg.block_rows, cfg.block_cols
  precision = _PRECISIONS[cfg.precision]
  i = pl.program_id(0)
  p = phi_ref[...]
  p_sq, lse_r, g_r, g_p = phi_sq_ref[...], lse_r_ref[...], g_r_ref[...], g_p_ref[...]
  rows = i * bm + jnp.arange(bm)

  def body(j, carry):
    acc, fsum = carry
    cols = j * bn + jnp.arange(bn)
    sl = common.chunk(j, bn)
    q = psi_ref[sl, :]
    f = _tile_factor(p, q, p_sq, psi_sq_ref[sl], rows, cols, lse_r, g_r, g_p, lse_c_ref[sl],
                     g_c_ref[sl], st=st)
    acc = acc + jnp.dot(f.astype(q.dtype), q, precision=precision,
                        preferred_element_type=jnp.float32)
    return acc, fsum + jnp.sum(f, axis=1)

  init = (jnp.zeros(p.shape, jnp.float32), jnp.zeros((bm,), jnp.float32))
  acc, fsum = jax.lax.fori_loop(0, psi_ref.shape[0] // bn, body, init)
  if st.energy != "dot":  # d sq_ij / d phi_i = 2 (phi_i - psi_j)
    acc = 2.0 * (fsum[:, None] * p.astype(jnp.float32) - acc)
  dphi_ref[...] = acc.astype(dphi_ref.dtype)


def _dpsi_kernel(psi_ref, psi_sq_ref, lse_c_ref, g_c_ref,
                 phi_ref, phi_sq_ref, lse_r_ref, g_r_ref, g_p_ref, dpsi_ref, *, st: _Static):
  cfg = st.config
  bm, bn = cfg.block_rows, cfg.block_cols
  precision = _PRECISIONS[cfg.precision]
  j = pl.program_id(0)
  q = psi_ref[...]
  q_sq, lse_c, g_c = psi_sq_ref[...], lse_c_ref[...], g_c_ref[...]
  cols = j * bn + jnp.arange(bn)

  def body(i, carry):
    acc, fsum = carry
    rows = i * bm + jnp.arange(bm)
    sl = common.chunk(i, bm)
    p = phi_ref[sl, :]
    f = _tile_factor(p, q, phi_sq_ref[sl], q_sq, rows, cols, lse_r_ref[sl], g_r_ref[sl],
                     g_p_ref[sl], lse_c, g_c, st=st)
    acc = acc + jax.lax.dot_general(f.astype(p.dtype), p, (((0,), (0,)), ((), ())),
                                    precision=precision, preferred_element_type=jnp.float32)
    return acc, fsum + jnp.sum(f, axis=0)

  init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros((bn,), jnp.float32))
  acc, fsum = jax.lax.fori_loop(0, phi_ref.shape[0] // bm, body, init)
  if st.energy != "dot":  # d sq_ij / d psi_j = 2 (psi_j - phi_i)
    acc = 2.0 * (fsum[:, None] * q.astype(jnp.float32) - acc)
  dpsi_ref[...] = acc.astype(dpsi_ref.dtype)


def _stats_bwd(st: _Static, residuals, cotangents):
  phi, psi, lse_r, lse_c = residuals
  g_r, g_c, g_p, _ = cotangents  # row_max is returned under stop_gradient
  padded, dim = phi.shape
  cfg = st.config
  bm, bn = cfg.block_rows, cfg.block_cols
  f32 = jnp.float32
  g_r, g_c, g_p = g_r.astype(f32), g_c.astype(f32), g_p.astype(f32)
  phi_sq, psi_sq = _squared_norms(phi), _squared_norms(psi)
  params = common.triton_params(cfg.num_warps, cfg.num_stages)

  def tile(b):
    return [pl.BlockSpec((b, dim), lambda t: (t, 0))] + [pl.BlockSpec((b,), lambda t: (t,))] * 4

  def full():
    return [pl.BlockSpec((padded, dim), lambda t: (0, 0))] + [
        pl.BlockSpec((padded,), lambda t: (0,))] * 4

  dphi = pl.pallas_call(
      functools.partial(_dphi_kernel, st=st),
      out_shape=jax.ShapeDtypeStruct(phi.shape, phi.dtype),
      grid=(padded // bm,),
      in_specs=tile(bm)[:5] + full()[:4],
      out_specs=pl.BlockSpec((bm, dim), lambda t: (t, 0)),
      compiler_params=params, interpret=st.interpret, name="infonce_bwd_dphi",
  )(phi, phi_sq, lse_r, g_r, g_p, psi, psi_sq, lse_c, g_c)
  dpsi = pl.pallas_call(
      functools.partial(_dpsi_kernel, st=st),
      out_shape=jax.ShapeDtypeStruct(psi.shape, psi.dtype),
      grid=(padded // bn,),
      in_specs=tile(bn)[:4] + full()[:5],
      out_specs=pl.BlockSpec((bn, dim), lambda t: (t, 0)),
      compiler_params=params, interpret=st.interpret, name="infonce_bwd_dpsi",
  )(psi, psi_sq, lse_c, g_c, phi, phi_sq, lse_r, g_r, g_p)
  return dphi, dpsi


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _stats(phi, psi, st: _Static):
  return _stats_fwd(phi, psi, st)


def _stats_vjp_fwd(phi, psi, st):
  lse, lse_col, pos, row_max = _stats_fwd(phi, psi, st)
  return (lse, lse_col, pos, row_max), (phi, psi, lse, lse_col)


_stats.defvjp(_stats_vjp_fwd, _stats_bwd)


def infonce_stats(phi, psi, *, energy: str = "l2", interpret: bool = False,
                  config: InfoNCEConfig | None = None, grad_row: bool = True,
                  grad_col: bool = True):
  """Per-row/column statistics of the logits, never materialising them.

  Returns ``(lse_row, lse_col, positive, row_max)``, each ``[batch]`` f32. ``row_max`` carries
  no gradient; ``grad_row=False`` (``grad_col=False``) promises the caller passes no cotangent
  for ``lse_row`` (``lse_col``) and skips that term in the backward (the caller must
  ``stop_gradient`` it).
  """
  batch, dim = phi.shape
  config = config or default_infonce_config(dim, batch)
  reason = check_supported(phi, psi, config)
  if reason:
    raise ValueError(reason)
  padded_dim = max(16, common.next_power_of_2(dim))
  padded = common.round_up(max(batch, 1), max(config.block_rows, config.block_cols))
  pad = ((0, padded - batch), (0, padded_dim - dim))
  st = _Static(batch=batch, energy=energy, config=config, interpret=bool(interpret),
               grad_row=grad_row, grad_col=grad_col)
  dtype = jnp.promote_types(phi.dtype, psi.dtype)
  out = _stats(jnp.pad(phi.astype(dtype), pad), jnp.pad(psi.astype(dtype), pad), st)
  lse, lse_col, pos, row_max = (o[:batch] for o in out)
  return lse, lse_col, pos, jax.lax.stop_gradient(row_max)


def infonce(phi, psi, *, energy: str = "l2", variant: str = "forward",
            logsumexp_penalty: float = 0.0, interpret: bool = False,
            config: InfoNCEConfig | None = None):
  """InfoNCE ``(loss, aux)`` with the semantics of :func:`kernels.infonce.infonce_reference`.

  The logsumexp a variant does not use (columns for ``"forward"``, rows for ``"backward"``) is
  still reported in ``aux`` but under ``stop_gradient``, so the backward skips its term.
  """
  use_row = variant in ("forward", "symmetric")
  use_col = variant in ("backward", "symmetric")
  lse, lse_col, pos, row_max = infonce_stats(phi, psi, energy=energy, interpret=interpret,
                                             config=config, grad_row=use_row, grad_col=use_col)
  if not use_row:
    lse = jax.lax.stop_gradient(lse)
  if not use_col:
    lse_col = jax.lax.stop_gradient(lse_col)

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
