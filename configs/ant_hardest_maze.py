"""The paper's ant_hardest_maze task: its hyperparameters and published pipeline
(FIDELITY.md lists what differs). Scale with e.g. `configs/ant_hardest_maze.py:depth=64`."""

from deepcrl_core.config import paper_task_config


def get_config(overrides: str = ""):
  return paper_task_config("ant_hardest_maze", overrides)
