"""Point mass in the big maze (CPU, tens of minutes): the CPU-scale analogue of the ant mazes.

    python launch/train.py --config=configs/pointmass_big_maze.py --workdir=runs/pm_big_maze

Trains on every goal cell of the 8 x 8 big maze (``pointmass_big_maze``) and evaluates on the
far goals of the ant's big-maze evaluation (``pointmass_big_maze_eval``), as the paper's maze
tasks do; 1 m cells, 150-step episodes, success radius 0.2 m
(``deepcrl_core/envs/pointmass.py``). Not a paper task: it keeps the quick start's pipeline
choices (a fresh start and goal every episode, i.i.d. transitions, random-action prefill, the
exact tanh log-density; FIDELITY.md lists the published ones). Measured start (2026-12-01,
2-core AMD EPYC shared with other jobs, load ~6, ``train.max_seconds=200``): eval success on
the far goals 0 for the first 0.4M env steps, then 0-0.36 (noisy) up to 1.7M env steps.
"""

from deepcrl_core.config import pointmass_config


def get_config(overrides: str = ""):
  return pointmass_config(
      overrides,
      env__name="pointmass_big_maze",
      env__eval_name="pointmass_big_maze_eval",
      env__episode_length=150,
      train__prefill_steps=140,  # window_length <= prefill + one unroll
      train__total_env_steps=10_000_000,
      replay__window_length=150,
  )
