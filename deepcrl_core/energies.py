"""Critic energies beyond the fused kernel's: quasimetrics, and InfoNCE from a logits matrix.

Convention (the same as :mod:`deepcrl_kernels.infonce`): ``logits[i, j] = energy(phi[i], psi[j])``,
rows = ``phi(s_i, a_i)``, columns = ``psi(g_j)``, row ``i``'s positive is column ``i``. For the
quasimetrics below the energy is ``-d(phi -> psi)``: ``phi(s, a)`` is the point travelled *from*
and ``psi(g)`` the point travelled *to*; ``d(x -> y) != d(y -> x)`` in general.

* ``"mrn"``: metric residual network distance (Liu, Sheng, Seo, Xu, Stone, 2023, "Metric Residual
  Networks for Sample Efficient Goal-Conditioned Reinforcement Learning", AAAI):
  ``d(x -> y) = max_k ReLU(a_x[k] - a_y[k]) + ||s_x - s_y||_2``, where each representation is
  split into an asymmetric half ``a`` (its first ``D/2`` entries) and a symmetric half ``s`` (the
  last ``D/2``). With ``components = K > 1`` the ``D`` entries are cut into ``K`` consecutive
  groups of ``D/K``, each group is split into halves the same way, and the ``K`` group distances
  are averaged: the form of the CMD-1 code (Myers, Zheng, Dragan, Levine, Eysenbach, 2024,
  "Learning Temporal Distances: Contrastive Successor Features Can Provide a Metric Structure
  for Decision-Making", ``mrn_components``) and of the paper's ``mrn.py``
  (github.com/wang-kevin3290/scaling-crl, ``utils.mrn_distance``, ``K = 16``). ``K = 1`` is Liu
  et al.'s single split. The square root is taken of ``max(|s_x - s_y|^2, 1e-12)`` (as the
  ``l2`` energy, so ``d(x -> x) = 1e-6`` per group, not the published ``sqrt(. + 1e-6)``
  ``= 1e-3``). No learned parameters. ``repr_dim`` must be divisible by ``2 K``.
* ``"iqe"``: interval quasimetric embedding (Wang & Isola, 2022, "Improved Representation of
  Asymmetrical Distances with Interval Quasimetric Embeddings", NeurIPS NeurReps workshop):
  the ``D`` entries are cut into ``D / l`` consecutive components of ``l`` entries; component
  ``c``'s distance is the length (Lebesgue measure) of the union of the ``l`` intervals
  ``[x[j], max(x[j], y[j])]`` (empty where ``y[j] <= x[j]``), and the components are reduced by
  the paper's ``maxmean``: ``d = alpha * max_c d_c + (1 - alpha) * mean_c d_c`` with
  ``alpha = sigmoid(raw_alpha)`` learned, ``raw_alpha`` initialised at -1 (as torchqmet,
  github.com/quasimetric-learning/torch-quasimetric, ``reductions.MaxMean``; its default
  ``l = 16`` is ours). ``raw_alpha`` lives in the critic's parameters (``critic_params["energy"]
  ["iqe_raw_alpha"]``, created by :func:`deepcrl_core.networks.make_networks` when the spec's
  energy is ``iqe``). ``repr_dim`` must be divisible by ``l``.

  The union length is computed exactly by sorting each component's intervals by their start
  ``x[j]`` (a sort of ``phi``'s entries only): with ``e_j = max(x_j, y_j)`` in that order and
  ``M_j = max(e_1..e_{j-1})`` (``-inf`` for ``j = 1``), ``|U| = sum_j ReLU(e_j - max(x_j, M_j))``
  (the part of interval ``j`` not already covered; covered points lie in an earlier interval,
  since that interval starts no later and ends at ``M_j``).

Memory. Neither quasimetric has a matmul form for its max parts, so the ``[B, B]`` matrix needs
``[B, B, D]`` elementwise intermediates (4 GiB at ``B = 4096, D = 64`` in float32).
:func:`energy_matrix` computes it in row blocks (``lax.map`` over blocks of ``R`` rows of
``phi``, each block a ``jax.checkpoint`` so the backward pass recomputes the block instead of
saving its intermediates): ``R`` is chosen so one block's live intermediates (``R * B * D``
floats times :data:`LIVE_COPIES`, measured per energy) take about ``chunk_bytes`` (default
64 MiB); the ``[B, B]`` logits themselves are kept (needed by the loss). The fused-kernel energies (``l2``,
``l2_sq``, ``dot``; ``cosine`` = ``dot`` of normalised vectors) keep using
:func:`deepcrl_kernels.infonce_loss`.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from deepcrl_kernels.infonce import ENERGIES as KERNEL_ENERGIES
from deepcrl_kernels.infonce import MIN_SQ_DIST, infonce_from_logits

QUASIMETRICS = ("mrn", "iqe")
# Every loss.energy: the fused kernel's, cosine (the kernel's dot of normalised vectors), and
# the quasimetrics computed here.
ENERGIES = tuple(KERNEL_ENERGIES) + ("cosine",) + QUASIMETRICS
DEFAULT_CHUNK_BYTES = 64 * 2**20
IQE_RAW_ALPHA_INIT = -1.0
# [R, B, D] float32 intermediates alive at once in one row block's backward pass, per energy
# (XLA:CPU's temporary-buffer estimate of the blocked gradient at B = 1024, D = 64, divided by
# one [R, B, D] array: about 0.4 for mrn, 18 for iqe with its sort permutation, gathers and
# running maximum); the row count is chosen with these so the blocks stay near chunk_bytes.
LIVE_COPIES = {"mrn": 2, "iqe": 20}


def check_grouping(energy: str, repr_dim: int, mrn_components: int = 1,
                   iqe_component_dim: int = 16) -> str | None:
  """Why ``repr_dim`` cannot be split as ``energy`` needs, or None (also for other energies)."""
  if energy == "mrn":
    if mrn_components < 1 or repr_dim % (2 * mrn_components):
      return (f"loss.energy=mrn splits each of its loss.mrn_components = {mrn_components} "
              f"groups of phi/psi into an asymmetric and a symmetric half: network.repr_dim "
              f"({repr_dim}) must be a positive multiple of 2 x mrn_components = "
              f"{2 * mrn_components}")
  if energy == "iqe":
    if iqe_component_dim < 1 or repr_dim % iqe_component_dim:
      return (f"loss.energy=iqe cuts phi/psi into components of loss.iqe_component_dim = "
              f"{iqe_component_dim} entries: network.repr_dim ({repr_dim}) must be a multiple "
              f"of it")
  return None


# --- distances of broadcastable [..., D] arrays --------------------------------------------


def mrn_distance(x, y, components: int = 1):
  """MRN distance ``d(x -> y)`` over the last axis of broadcastable ``x``, ``y`` (see module)."""
  x, y = jnp.broadcast_arrays(x, y)
  d = x.shape[-1]
  g = d // components
  xs = x.reshape(x.shape[:-1] + (components, g))
  ys = y.reshape(y.shape[:-1] + (components, g))
  half = g // 2
  asym = jnp.max(jax.nn.relu(xs[..., :half] - ys[..., :half]), axis=-1)
  sq = jnp.sum(jnp.square(xs[..., half:] - ys[..., half:]), axis=-1)
  sym = jnp.sqrt(jnp.maximum(sq, MIN_SQ_DIST))
  return jnp.mean(asym + sym, axis=-1)


def iqe_components(x, y, component_dim: int = 16):
  """Per-component IQE distances ``[..., D / component_dim]`` of ``x -> y`` (see module).

  Only ``x``'s entries are sorted (in its own shape, before broadcasting against ``y``), and
  ``y``'s entries are put in that order by a one-hot matmul, not a gather: on XLA:CPU a
  ``[R, B, D]`` gather and its scatter-add gradient ran ~20x slower than the whole MRN loss.
  """
  l = component_dim
  k = x.shape[-1] // l
  xs = x.reshape(x.shape[:-1] + (k, l))
  ys = y.reshape(y.shape[:-1] + (k, l))
  order = jnp.argsort(jax.lax.stop_gradient(xs), axis=-1)
  start = jnp.take_along_axis(xs, order, axis=-1)               # x's shape only
  perm = jax.nn.one_hot(order, l, dtype=ys.dtype)               # [..x, k, position, source]
  ys_sorted = jnp.einsum("...kl,...kml->...km", ys, perm, precision=jax.lax.Precision.HIGHEST)
  end = jnp.maximum(start, ys_sorted)
  covered = jax.lax.cummax(end, axis=end.ndim - 1)
  neg_inf = jnp.full(end.shape[:-1] + (1,), -jnp.inf, end.dtype)
  before = jnp.concatenate([neg_inf, covered[..., :-1]], axis=-1)
  return jnp.sum(jax.nn.relu(end - jnp.maximum(start, before)), axis=-1)


def iqe_distance(x, y, raw_alpha, component_dim: int = 16):
  """IQE-maxmean distance ``d(x -> y)``: ``alpha max_c d_c + (1 - alpha) mean_c d_c``."""
  dc = iqe_components(x, y, component_dim)
  alpha = jax.nn.sigmoid(raw_alpha)
  return alpha * jnp.max(dc, axis=-1) + (1.0 - alpha) * jnp.mean(dc, axis=-1)


def distance_fn(energy: str, params: Mapping[str, jax.Array] | None = None, *,
                mrn_components: int = 1, iqe_component_dim: int = 16):
  """``d(x, y)`` of a quasimetric energy over broadcastable ``[..., D]`` arrays."""
  if energy == "mrn":
    return lambda x, y: mrn_distance(x, y, mrn_components)
  if energy == "iqe":
    if params is None or "iqe_raw_alpha" not in params:
      raise ValueError("loss.energy=iqe needs the critic's learned 'iqe_raw_alpha' (build the "
                       "networks with NetworkSpec(energy='iqe'))")
    raw_alpha = params["iqe_raw_alpha"]
    return lambda x, y: iqe_distance(x, y, raw_alpha, iqe_component_dim)
  raise ValueError(f"energy must be one of {QUASIMETRICS} here, got {energy!r}")


# --- the [B, B] matrix in row blocks -------------------------------------------------------


def rows_per_chunk(num_rows: int, num_cols: int, dim: int, itemsize: int = 4,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, live_copies: int = 4) -> int:
  """Rows ``R`` of ``phi`` per block so ``live_copies`` arrays of ``[R, B, D]`` fit in
  ``chunk_bytes``."""
  per_row = max(1, live_copies * num_cols * dim * itemsize)
  return int(max(1, min(num_rows, chunk_bytes // per_row)))


def pairwise_matrix(dist, phi, psi, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                    live_copies: int = 4):
  """``[B_phi, B_psi]`` matrix ``dist(phi[i], psi[j])``, computed in checkpointed row blocks.

  ``dist`` maps broadcastable ``[..., D]`` arrays to ``[...]``. Row blocks of ``R`` rows
  (:func:`rows_per_chunk` with ``live_copies``) run under ``lax.map``; ``phi`` is zero-padded to a multiple of ``R``
  and the padding rows are dropped. With more than one block each is a ``jax.checkpoint``: the
  backward pass keeps only block inputs and recomputes the ``[R, B, D]`` intermediates one
  block at a time (a single block that fits the budget is computed plainly).
  """
  n, dim = phi.shape
  r = rows_per_chunk(n, psi.shape[0], dim, jnp.dtype(phi.dtype).itemsize, chunk_bytes,
                     live_copies)
  if r >= n:  # one block fits the budget: no recomputation (a checkpoint here cost 2.5x)
    return dist(phi[:, None, :], psi[None, :, :])
  block = jax.checkpoint(lambda rows: dist(rows[:, None, :], psi[None, :, :]))
  blocks = -(-n // r)
  padded = jnp.pad(phi, ((0, blocks * r - n), (0, 0)))
  out = jax.lax.map(block, padded.reshape(blocks, r, dim))
  return out.reshape(blocks * r, -1)[:n]


def mrn_matrix(phi, psi, components: int = 1, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
  """``[B_phi, B_psi]`` MRN distances: the asymmetric max-ReLU halves in row blocks
  (:func:`pairwise_matrix`), the symmetric halves' Euclidean distances from one matmul per
  group (``|x|^2 + |y|^2 - 2 x.y``, floored at ``MIN_SQ_DIST`` like :func:`mrn_distance`), so
  no ``[B, B, D/2]`` difference array exists for them. Measured on the 2-core CPU (B = 256,
  D = 64, InfoNCE gradient): 4.8 ms against 11.8 ms with the differences of both halves.
  The expansion's rounding is relative to the norms (~1e-7 |x|^2): the same as the ``l2``
  kernels', and immaterial unless phi and psi nearly coincide."""
  n, d = phi.shape
  g = d // components
  half = g // 2
  xs = phi.reshape(n, components, g)
  ys = psi.reshape(psi.shape[0], components, g)
  xa, xsym = xs[..., :half].reshape(n, -1), xs[..., half:]
  ya, ysym = ys[..., :half].reshape(psi.shape[0], -1), ys[..., half:]

  def asym(x, y):  # [..., components * half] -> [...]: mean over groups of max-ReLU
    x = x.reshape(x.shape[:-1] + (components, half))
    y = y.reshape(y.shape[:-1] + (components, half))
    return jnp.mean(jnp.max(jax.nn.relu(x - y), axis=-1), axis=-1)

  a = pairwise_matrix(lambda x, y: asym(*jnp.broadcast_arrays(x, y)), xa, ya,
                      chunk_bytes=chunk_bytes, live_copies=LIVE_COPIES["mrn"])
  dots = jnp.einsum("ikd,jkd->ijk", xsym, ysym, precision=jax.lax.Precision.HIGHEST)
  sq = (jnp.sum(jnp.square(xsym), -1)[:, None, :] + jnp.sum(jnp.square(ysym), -1)[None, :, :]
        - 2.0 * dots)
  sym = jnp.mean(jnp.sqrt(jnp.maximum(sq, MIN_SQ_DIST)), axis=-1)
  return a + sym


def energy_matrix(energy: str, phi, psi, params=None, *, mrn_components: int = 1,
                  iqe_component_dim: int = 16, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
  """``logits[i, j] = -d(phi[i] -> psi[j])`` of a quasimetric energy, ``[B, B]``."""
  if energy == "mrn":
    return -mrn_matrix(phi, psi, mrn_components, chunk_bytes=chunk_bytes)
  dist = distance_fn(energy, params, mrn_components=mrn_components,
                     iqe_component_dim=iqe_component_dim)
  return -pairwise_matrix(dist, phi, psi, chunk_bytes=chunk_bytes,
                          live_copies=LIVE_COPIES[energy])


def energy_rows(energy: str, phi, psi, params=None, *, mrn_components: int = 1,
                iqe_component_dim: int = 16):
  """Row-wise energies ``-d(phi[i] -> psi[i])``, ``[B]`` (the matrix's diagonal alone)."""
  dist = distance_fn(energy, params, mrn_components=mrn_components,
                     iqe_component_dim=iqe_component_dim)
  return -dist(phi, psi)


# InfoNCE of the logits matrix: ``infonce_from_logits`` (imported above) is the kernels' XLA
# reference path itself (``deepcrl_kernels.infonce``), so both paths share one definition.


def matrix_bytes(batch: int, dim: int, itemsize: int = 4) -> int:
  """Bytes of one ``[B, B, D]`` intermediate (what the row blocks avoid materialising)."""
  return int(batch) * int(batch) * int(dim) * itemsize


__all__ = ["ENERGIES", "QUASIMETRICS", "KERNEL_ENERGIES", "check_grouping", "mrn_distance",
           "iqe_components", "iqe_distance", "mrn_matrix", "pairwise_matrix", "energy_matrix", "energy_rows",
           "infonce_from_logits", "rows_per_chunk", "matrix_bytes"]
