"""deepcrl: contrastive RL with very deep residual networks on MuJoCo MJX.

Importing the package has no side effects. Processes that run MJX on CPU call
:func:`configure_cpu_xla_flags` before their first jax computation (the launchers, profiling
scripts and tests do).
"""

from deepcrl_core._xla_flags import configure_cpu_xla_flags

__version__ = "0.1.0"

__all__ = ["configure_cpu_xla_flags"]
