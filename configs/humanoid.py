"""The paper's humanoid task: its hyperparameters and published pipeline
(FIDELITY.md lists what differs). Scale with e.g. `configs/humanoid.py:depth=64`."""

from deepcrl_core.config import paper_task_config


def get_config(overrides: str = ""):
  return paper_task_config("humanoid", overrides)

# The paper's 1024-layer humanoid run used a 512-layer actor (a 1024-layer actor's loss
# diverged): configs/humanoid.py:critic_depth=1024,actor_depth=512
