"""Environment registry: ``make(name, **kwargs)`` builds a registered env.

Factories are registered as ``"module:attribute"`` strings and imported on first use, so
importing this package stays cheap and an env's dependencies load only when it is built.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple, Union

from deepcrl_core.envs.base import Env, MjxEnv, State, achieved_goal
from deepcrl_core.envs.wrappers import (AutoResetWrapper, EpisodeWrapper, VmapWrapper,
                                        wrap_for_eval, wrap_for_training)

from deepcrl_core.tasks import PAPER_TASKS  # the paper's tasks (all registered below)

_REGISTRY: Dict[str, Tuple[Union[str, Callable[..., Env]], dict]] = {}


def register(name: str, factory: Union[str, Callable[..., Env]], **default_kwargs) -> None:
  """Registers ``factory`` (a callable or a ``"module:attr"`` path) under ``name``."""
  _REGISTRY[name] = (factory, default_kwargs)


def registered_names() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def is_registered(name: str) -> bool:
  return name in _REGISTRY


def unknown_env_message(name: str) -> str:
  return f"unknown env {name!r}; available envs: {', '.join(registered_names())}"


def make(name: str, **kwargs) -> Env:
  """Builds the env registered as ``name``; ``kwargs`` override its defaults."""
  if name not in _REGISTRY:
    raise ValueError(unknown_env_message(name))
  factory, defaults = _REGISTRY[name]
  if isinstance(factory, str):
    module, attr = factory.split(":")
    factory = getattr(importlib.import_module(module), attr)
  return factory(**{**defaults, **kwargs})


register("pointmass", "deepcrl_core.envs.pointmass:PointMass")
# Point-mass mazes (CPU-scale analogues of the ant mazes; sizes in envs/pointmass.py).
for _maze, _length in (("u", 100), ("u4", 150), ("big", 150)):
  for _suffix in ("", "_eval"):
    register(f"pointmass_{_maze}_maze{_suffix}", "deepcrl_core.envs.pointmass:PointMass",
             maze=_maze + _suffix, maze_scale=1.0, success_radius=0.2, episode_length=_length)

# The paper's locomotion tasks; each maze also has its far-goal evaluation layout (`*_eval`).
register("ant", "deepcrl_core.envs.ant:Ant")
for _maze in ("u4", "u5", "big", "hardest"):
  register(f"ant_{_maze}_maze", "deepcrl_core.envs.ant:Ant", maze=_maze)
  register(f"ant_{_maze}_maze_eval", "deepcrl_core.envs.ant:Ant", maze=f"{_maze}_eval")
register("humanoid", "deepcrl_core.envs.humanoid:Humanoid")
for _maze, _eval in (("u", "u_eval"), ("big", "big_eval_humanoid"), ("hardest", "hardest_eval")):
  register(f"humanoid_{_maze}_maze", "deepcrl_core.envs.humanoid:Humanoid", maze=_maze)
  register(f"humanoid_{_maze}_maze_eval", "deepcrl_core.envs.humanoid:Humanoid", maze=_eval)
for _task in ("push_easy", "push_hard", "binpick_hard"):
  register(f"arm_{_task}", "deepcrl_core.envs.arm:Arm", task=_task)

__all__ = [
    "Env", "MjxEnv", "State", "achieved_goal", "AutoResetWrapper", "EpisodeWrapper",
    "VmapWrapper", "wrap_for_eval", "wrap_for_training", "make", "register",
    "registered_names", "is_registered", "unknown_env_message", "PAPER_TASKS",
]
