"""The paper's arm_push_hard task: its hyperparameters and published pipeline
(FIDELITY.md lists what differs). Scale with e.g. `configs/arm_push_hard.py:depth=64`."""

from deepcrl_core.config import paper_task_config


def get_config(overrides: str = ""):
  return paper_task_config("arm_push_hard", overrides)
