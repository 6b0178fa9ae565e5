"""Learning algorithms behind one interface (:class:`deepcrl_core.agents.base.Agent`), chosen
by the config key ``agent``: a registry from name to builder ``(config, sizes) -> Agent``.

==========  ===============================================  =============================
``agent``   algorithm                                        settings
==========  ===============================================  =============================
``crl``     contrastive RL (the paper's; default)            ``loss.*``, ``optim.*``
``sac``     soft actor-critic, + HER unless ``her=false``    ``sac.*``, ``her.*``
``td3``     TD3, + HER unless ``her=false``                  ``td3.*``, ``her.*``
``gcbc``    goal-conditioned behaviour cloning               ``gcbc.*``
``gcsl``    goal-conditioned supervised learning             ``gcsl.*``
==========  ===============================================  =============================
"""

from __future__ import annotations

from typing import Callable, Dict

from deepcrl_core.agents import bc, crl, sac, td3
from deepcrl_core.agents.base import (  # noqa: F401
    Agent, TDBatch, collect, evaluate, evaluate_episodes, run_episodes)

REGISTRY: Dict[str, Callable] = {
    "crl": crl.build,
    "sac": sac.build,
    "td3": td3.build,
    "gcbc": bc.build_gcbc,
    "gcsl": bc.build_gcsl,
}
AGENT_NAMES = tuple(REGISTRY)
# Agents whose goals are hindsight-mixed per the ``her`` config section (the others always
# train on relabelled future goals, so ``her.*`` does not apply to them).
HER_AGENTS = ("sac", "td3")


def build(config, sizes) -> Agent:
  """The agent ``config.agent`` for an env of ``sizes`` (``state_size``, ``goal_size``,
  ``action_size``)."""
  name = config.get("agent", "crl") if hasattr(config, "get") else config.agent
  if name not in REGISTRY:
    raise ValueError(f"agent {name!r} is not built; agents: {', '.join(AGENT_NAMES)}")
  return REGISTRY[name](config, sizes)
