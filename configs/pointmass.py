"""Quick start: CRL on a point mass reaching goals in a 2 x 2 m arena (CPU, minutes).

    python launch/train.py --config=configs/pointmass.py --workdir=runs/pointmass

Not a paper task: it keeps deepcrl's own pipeline choices (a fresh start and goal every
episode, i.i.d. transitions, random-action prefill, the exact tanh log-density); the paper's
configs use the published ones (FIDELITY.md).
"""

from deepcrl_core.config import pointmass_config


def get_config(overrides: str = ""):
  return pointmass_config(overrides)  # settings: deepcrl_core.config.POINTMASS_SETTINGS
