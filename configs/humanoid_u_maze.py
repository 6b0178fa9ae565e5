"""The paper's humanoid_u_maze task: its hyperparameters and published pipeline
(FIDELITY.md lists what differs). Scale with e.g. `configs/humanoid_u_maze.py:depth=64`."""

from deepcrl_core.config import paper_task_config


def get_config(overrides: str = ""):
  return paper_task_config("humanoid_u_maze", overrides)
