"""Fused kernels for deep contrastive RL, usable from any JAX code (imports only jax).

* :func:`fused_residual_block` / :func:`fused_residual_stack`: 4 x (Dense -> LayerNorm -> Swish)
  plus skip, one block or a scanned stack of blocks.
* :func:`infonce_loss`: batched InfoNCE with L2 / squared-L2 / dot energies.

Every op takes ``impl``: ``"pallas"`` (GPU, Triton lowering), ``"interpret"`` (Pallas
interpreter, CPU), ``"xla"`` (plain jnp reference) or ``"auto"`` (pallas on GPU, xla elsewhere).
"""

from kernels._dispatch import IMPLS, resolve_impl
from kernels.infonce import ENERGIES, VARIANTS, infonce_loss, infonce_reference, pairwise_energy
from kernels.residual_block import (fused_residual_block, fused_residual_stack,
                                    residual_block_reference)

__all__ = [
    "IMPLS", "ENERGIES", "VARIANTS", "resolve_impl", "fused_residual_block",
    "fused_residual_stack", "residual_block_reference", "infonce_loss", "infonce_reference",
    "pairwise_energy",
]
