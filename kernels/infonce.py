"""Batched InfoNCE loss over the in-batch B x B energy matrix.

``logits[i, j] = energy(phi[i], psi[j])``; row ``i``'s positive is column ``i``.

* ``variant="forward"``: ``-mean_i(logits[i, i] - logsumexp_j logits[i, j])`` (the paper's loss).
* ``variant="backward"``: the same over columns, ``logsumexp_i logits[i, j]``.
* ``variant="symmetric"``: the mean of the two.

``logsumexp_penalty * mean(lse**2)`` is added for the logsumexp(s) the variant uses
(symmetric: the mean of the row and column penalties).

Energies: ``"l2"`` = ``-||phi - psi||_2`` (default), ``"l2_sq"`` = ``-||phi - psi||^2``,
``"dot"`` = ``phi . psi``. Shapes: ``phi, psi [batch, dim]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from deepcrl_kernels._dispatch import check_impl, select_impl

ENERGIES = ("l2", "l2_sq", "dot")
VARIANTS = ("forward", "backward", "symmetric")
# Squared distances are clamped here before the sqrt of the "l2" energy, so a zero distance
# (identical phi and psi rows) has a finite value and gradient.
MIN_SQ_DIST = 1e-12


def energy_matrix(phi, psi, energy: str = "l2"):
  """``[B, B]`` energies computed with one matmul: ``||a-b||^2 = |a|^2 + |b|^2 - 2 a.b``."""
  dots = jnp.dot(phi, psi.T, precision=jax.lax.Precision.HIGHEST,
                 preferred_element_type=jnp.promote_types(phi.dtype, jnp.float32))
  if energy == "dot":
    return dots
  sq = (jnp.sum(jnp.square(phi), -1)[:, None] + jnp.sum(jnp.square(psi), -1)[None, :] - 2.0 * dots)
  sq = jnp.maximum(sq, MIN_SQ_DIST)
  if energy == "l2_sq":
    return -sq
  return -jnp.sqrt(sq)


def pairwise_energy(phi, psi, energy: str = "l2"):
  """Row-wise energies ``energy(phi[i], psi[i])`` -> ``[B]`` (the diagonal, without the matrix)."""
  if energy == "dot":
    return jnp.sum(phi * psi, -1)
  sq = jnp.maximum(jnp.sum(jnp.square(phi - psi), -1), MIN_SQ_DIST)
  return -sq if energy == "l2_sq" else -jnp.sqrt(sq)


def infonce_reference(phi, psi, *, energy: str = "l2", variant: str = "forward",
                      logsumexp_penalty: float = 0.0):
  """Plain-jnp InfoNCE; materialises the B x B logits. Returns ``(loss, aux)``."""
  return infonce_from_logits(energy_matrix(phi, psi, energy), variant=variant,
                             logsumexp_penalty=logsumexp_penalty)


def infonce_from_logits(logits, *, variant: str = "forward", logsumexp_penalty: float = 0.0):
  """InfoNCE ``(loss, aux)`` of a ``[B, B]`` logits matrix (rows = phi_i, columns = psi_j,
  positives on the diagonal), for energies of any form.

  ``forward``: ``-mean_i(logits[i, i] - lse_j logits[i, j]) + penalty * mean_i(lse_row^2)``;
  ``backward``: the same over columns; ``symmetric``: their mean. ``aux``: ``logsumexp``
  (rows, ``[B]``), ``logsumexp_col`` (``[B]``), ``positive`` (the diagonal) and ``accuracy``;
  the logsumexp the variant does not use is reported under ``stop_gradient``, as the Pallas
  path reports it, so that gradients never depend on the implementation.
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
    raise ValueError(f"logits must be a square [B, B] matrix, got shape {logits.shape}")
  pos = jnp.diagonal(logits)
  lse_row = jax.nn.logsumexp(logits, axis=1)
  lse_col = jax.nn.logsumexp(logits, axis=0)
  fwd = -jnp.mean(pos - lse_row) + logsumexp_penalty * jnp.mean(jnp.square(lse_row))
  bwd = -jnp.mean(pos - lse_col) + logsumexp_penalty * jnp.mean(jnp.square(lse_col))
  loss = {"forward": fwd, "backward": bwd, "symmetric": 0.5 * (fwd + bwd)}[variant]
  if variant == "forward":
    lse_col = jax.lax.stop_gradient(lse_col)
  elif variant == "backward":
    lse_row = jax.lax.stop_gradient(lse_row)
  aux = {
      "logsumexp": lse_row,
      "logsumexp_col": lse_col,
      "positive": pos,
      # A row counts as correct when its positive is (one of) the row's largest logits.
      "accuracy": jnp.mean((pos >= jnp.max(logits, axis=1)).astype(jnp.float32)),
  }
  return loss, aux


def check_infonce_args(phi, psi, energy, variant):
  if energy not in ENERGIES:
    raise ValueError(f"energy must be one of {ENERGIES}, got {energy!r}")
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  if phi.ndim != 2 or psi.ndim != 2 or phi.shape != psi.shape:
    raise ValueError(
        f"phi and psi must both be [batch, dim] with equal shapes, got {phi.shape} and {psi.shape}")


def infonce_loss(phi, psi, *, energy: str = "l2", variant: str = "forward",
                 logsumexp_penalty: float = 0.0, impl: str = "auto", config=None):
  """InfoNCE loss of ``phi [B, D]`` against ``psi [B, D]``. Returns ``(loss, aux)``.

  ``aux`` holds ``logsumexp`` (per-row, ``[B]``), ``logsumexp_col`` (``[B]``), ``positive``
  (the diagonal logits, ``[B]``) and ``accuracy`` (scalar). The Pallas path never writes the
  ``B x B`` logits to device memory, forward or backward. On every path the logsumexp a
  variant does not use is reported under ``stop_gradient``. ``config`` is a
  :class:`kernels.infonce_pallas.InfoNCEConfig` (tiles, matmul precision, warps), ignored by
  ``"xla"``.

  Raises:
    ValueError: bad arguments, or inputs the Pallas path cannot take with ``impl`` =
      ``"pallas"``/``"interpret"`` (``"auto"`` falls back to ``"xla"`` with a logged warning).
  """
  check_impl(impl)
  check_infonce_args(phi, psi, energy, variant)
  from deepcrl_kernels import infonce_pallas  # pylint: disable=g-import-not-at-top
  impl = select_impl(impl, "infonce_loss",
                     lambda: infonce_pallas.check_supported(phi, psi, config),
                     lambda: infonce_pallas.self_check(phi, psi, energy, variant, config))
  if impl == "xla":
    return infonce_reference(phi, psi, energy=energy, variant=variant,
                             logsumexp_penalty=logsumexp_penalty)
  return infonce_pallas.infonce(phi, psi, energy=energy, variant=variant,
                                logsumexp_penalty=logsumexp_penalty,
                                interpret=(impl == "interpret"), config=config)
