"""The task catalogue: every registered training task and its defaults, stated once.

A :class:`Task` carries what a run of it needs beyond the shared hyperparameters -- env
constructor kwargs, episode length, the evaluation env (the mazes' far-goal layouts), the step
budget of the paper's runs -- and the paper's reference numbers: its time at goal (steps of a
1000-step episode within the success radius, mean of the last 5 evaluations) at depth 4 and 64
(width 256, batch 512; the paper's results table), and the network input sizes of its published
code (observation state, goal and action sizes, which the profiling scripts use to time the
published network shapes). ``configs/<task>.py`` files are one line on top of this;
:func:`deepcrl_core.config.paper_task_config` reads it; so do ``envs``' error messages and the
profiling scripts' task lists.

Budgets and reference numbers are from the paper (Wang et al., NeurIPS 2025) and its code
(github.com/wang-kevin3290/scaling-crl). ``ant`` (open arena) is not in the paper's results
table: it gets the locomotion budget and no reference numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  family: str                      # "ant" | "humanoid" | "arm"
  env_steps: int                   # env steps of the paper's runs
  eval_env: str = ""               # "" = evaluate on the training env
  episode_length: int = 1000
  env_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)
  # The paper's time at goal (of 1000) by depth; empty when the paper has none.
  published_time_at_goal: Mapping[int, float] = dataclasses.field(default_factory=dict)

  @property
  def published_sizes(self) -> Tuple[int, int, int]:
    """(state, goal, action) sizes of the published code's networks for this family."""
    return PUBLISHED_SIZES[self.family]


# Input sizes of the published networks, by robot (state, goal, action).
PUBLISHED_SIZES = {"ant": (29, 2, 8), "humanoid": (268, 3, 17), "arm": (17, 3, 5)}


# The published ant's links: brax's spring engine with spring_mass_scale = spring_inertia_scale
# = 1 makes every link 1 kg with unit inertia (9 kg in all; the MJCF's own masses, mass="mjcf",
# total 0.91 kg). The class default stays "mjcf" so that runs begun before this entry resume
# and evaluate on the physics they trained on.
ANT_KWARGS = {"mass": "published"}
# The published humanoid observation's com blocks: brax's link inertias and velocities about the
# centre of mass (envs/humanoid.py); the class default stays MuJoCo's cinert/cvel for the same
# reason.
HUMANOID_KWARGS = {"observation": "published"}


def _kwargs(family):
  return dict({"ant": ANT_KWARGS, "humanoid": HUMANOID_KWARGS}.get(family, {}))


def _maze(name, family, steps, depth4, depth64):
  return Task(name, family, steps, eval_env=f"{name}_eval", env_kwargs=_kwargs(family),
              published_time_at_goal={4: depth4, 64: depth64})


TASKS: Dict[str, Task] = {t.name: t for t in (
    Task("ant", "ant", 100_000_000, env_kwargs=_kwargs("ant")),
    _maze("ant_u4_maze", "ant", 100_000_000, 11, 286),
    _maze("ant_u5_maze", "ant", 400_000_000, 1, 61),    # depth 64: 61-98 across the paper's runs
    _maze("ant_big_maze", "ant", 100_000_000, 61, 441),
    _maze("ant_hardest_maze", "ant", 200_000_000, 215, 387),
    Task("humanoid", "humanoid", 100_000_000, env_kwargs=_kwargs("humanoid"),
         published_time_at_goal={4: 13, 64: 649}),
    _maze("humanoid_u_maze", "humanoid", 400_000_000, 3, 159),
    _maze("humanoid_big_maze", "humanoid", 400_000_000, 0.06, 59),
    Task("arm_push_easy", "arm", 100_000_000, published_time_at_goal={4: 308, 64: 762}),
    Task("arm_push_hard", "arm", 100_000_000, published_time_at_goal={4: 171, 64: 410}),
    Task("arm_binpick_hard", "arm", 100_000_000, published_time_at_goal={4: 38, 64: 219}),
)}

PAPER_TASKS: Tuple[str, ...] = tuple(TASKS)


def get(name: str) -> Task:
  if name not in TASKS:
    raise KeyError(f"{name!r} is not one of the paper's tasks: {', '.join(PAPER_TASKS)}")
  return TASKS[name]


def of_family(family: str) -> Tuple[str, ...]:
  return tuple(n for n, t in TASKS.items() if t.family == family)


def find(name: str) -> Optional[Task]:
  """The task ``name`` or the task whose evaluation env it is; None otherwise."""
  if name in TASKS:
    return TASKS[name]
  return next((t for t in TASKS.values() if t.eval_env == name), None)
