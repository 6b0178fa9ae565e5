"""The CRL agent and the shared acting functions, under their original import path.

The agents live in :mod:`deepcrl_core.agents` (interface: :mod:`deepcrl_core.agents.base`);
``Agent`` and ``TrainingState`` here are CRL's (:mod:`deepcrl_core.agents.crl`).
"""

from deepcrl_core.agents.base import collect, evaluate  # noqa: F401
from deepcrl_core.agents.crl import CRLAgent as Agent  # noqa: F401
from deepcrl_core.agents.crl import TrainingState  # noqa: F401
