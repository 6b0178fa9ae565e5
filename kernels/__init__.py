"""Fused kernels for deep contrastive RL, usable from any JAX code (imports only jax).

* :func:`fused_residual_block` / :func:`fused_residual_stack`: 4 x (Dense -> LayerNorm -> Swish)
  plus skip, one block or a scanned stack of blocks.
* :func:`infonce_loss`: batched InfoNCE with L2 / squared-L2 / dot energies.

Every op takes ``impl``: ``"pallas"`` (GPU, Triton lowering), ``"interpret"`` (Pallas
interpreter, CPU), ``"xla"`` (plain jnp reference) or ``"auto"`` (on GPU, pallas where the kernels
are expected to win and their one-time self-check passed; xla elsewhere).
Tile sizes and launch parameters are :class:`BlockConfig` (whole-row block kernels, width <= 256),
:class:`TiledBlockConfig` (tiled block kernels, wider) and :class:`InfoNCEConfig`. See
``kernels/README.md``. Import as ``import deepcrl_kernels as kernels``.
"""

from deepcrl_kernels._dispatch import IMPLS, resolve_impl
from deepcrl_kernels.infonce import (ENERGIES, VARIANTS, infonce_from_logits, infonce_loss,
                                     infonce_reference, pairwise_energy)
from deepcrl_kernels.infonce_pallas import InfoNCEConfig, default_infonce_config
from deepcrl_kernels.residual_block import (fused_residual_block, fused_residual_stack,
                                    residual_block_reference)
from deepcrl_kernels.residual_block_pallas import (BlockConfig, default_block_config,
                                                   default_config, uses_tiled_block)
from deepcrl_kernels.residual_block_tiled import TiledBlockConfig, default_tiled_config

__all__ = [
    "IMPLS", "ENERGIES", "VARIANTS", "resolve_impl", "fused_residual_block",
    "fused_residual_stack", "residual_block_reference", "infonce_loss", "infonce_from_logits",
    "infonce_reference", "pairwise_energy", "BlockConfig", "TiledBlockConfig", "InfoNCEConfig",
    "default_block_config", "default_tiled_config", "default_config", "uses_tiled_block",
    "default_infonce_config",
]
