"""Quick start: CRL on a point mass reaching goals in a 2 x 2 m arena (CPU, minutes).

    python launch/train.py --config=configs/pointmass.py --workdir=runs/pointmass

Not a paper task: it keeps deepcrl's own pipeline choices (a fresh start and goal every
episode, i.i.d. transitions, random-action prefill, the exact tanh log-density); the paper's
configs use the published ones (FIDELITY.md).
"""

from deepcrl_core.config import make_config


def get_config(overrides: str = ""):
  return make_config(
      overrides,
      env__name="pointmass",
      env__episode_length=50,
      network__depth=4,
      network__width=64,
      train__num_envs=128,
      train__unroll_length=20,
      train__sgd_steps=16,
      train__batch_size=256,
      train__prefill_steps=100,
      train__train_steps_per_epoch=25,
      train__total_env_steps=1_500_000,
      replay__capacity=1000,
      replay__window_length=50,
      eval__num_envs=128,
      checkpoint__every=5,
      env__reset_mode="fresh",
      replay__sampling="transitions",
      train__prefill_policy="random",
      loss__tanh_correction="exact",
  )
