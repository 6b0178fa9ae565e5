"""deepcrl: contrastive RL with very deep residual networks on MuJoCo MJX."""

from deepcrl_core._xla_flags import apply_cpu_xla_flags as _apply_cpu_xla_flags

_apply_cpu_xla_flags()

__version__ = "0.1.0"
