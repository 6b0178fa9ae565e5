"""Point mass in the U maze (CPU, minutes): the CPU-scale analogue of the ant mazes.

    python launch/train.py --config=configs/pointmass_u_maze.py --workdir=runs/pm_u_maze

Trains on every goal cell of the U maze (``pointmass_u_maze``) and evaluates on its far goals
behind the wall (``pointmass_u_maze_eval``), as the paper's maze tasks do; 1 m cells, 100-step
episodes, success radius 0.2 m (``deepcrl_core/envs/pointmass.py``). Not a paper task: it keeps
the quick start's pipeline choices (a fresh start and goal every episode, i.i.d. transitions,
random-action prefill, the exact tanh log-density; FIDELITY.md lists the published ones).
Measured start (2026-12-01, 2-core AMD EPYC shared with other jobs, ``train.max_seconds=240``):
eval success on the far goals 0 for 0.3M env steps, then mostly 0.6-0.74 (dips to 0.33) from
0.7M (about 2 min of training) to 2.4M, time at goal mostly 28-40 of 100 steps.
"""

from deepcrl_core.config import pointmass_config


def get_config(overrides: str = ""):
  return pointmass_config(
      overrides,
      env__name="pointmass_u_maze",
      env__eval_name="pointmass_u_maze_eval",
      env__episode_length=100,
      train__total_env_steps=3_000_000,
      replay__window_length=100,
  )
