"""Run a grid of configs x seeds, resumably, then write sweep.csv and figures.

    python launch/sweep.py --config=configs/pointmass.py --grid="depth=4,8,16;width=64" \
        --seeds=3 --workdir=runs/pm_depth
    python launch/sweep.py --config=configs/humanoid.py --grid="depth=4,16" --seeds=2 \
        --budget_s=3600 --time_limit_s=540 --workdir=runs/humanoid_depth   # rerun to continue

Each run is a child ``launch/train.py`` process writing ``WORKDIR/runs/<cell>/seed_<k>`` (its
output in ``train.log`` there); one progress line per run start and end. Rerunning the same
command skips finished runs and resumes the others from their last checkpoint. With several
GPUs visible, one child runs per GPU (``CUDA_VISIBLE_DEVICES``); ``--parallel`` and
``--devices`` override that; on a CPU, ``--parallel=2`` runs two children side by side, each
pinned to its own half of the cores. The grid is checked for every cell before anything runs
(exit 2).
Exit status: 0 all runs done, 1 a run failed or diverged, 2 invalid sweep, 4 runs remain
(rerun to continue), 130 interrupted. See deepcrl_core/sweep.py for the details.
"""

from absl import app, flags

from deepcrl_core import cli
from deepcrl_core import sweep as sweep_lib

_CONFIG = flags.DEFINE_string("config", None, "Config file, optionally with overrides every run "
                              "shares: file.py:k=v,k=v.", required=True)
_GRID = flags.DEFINE_string("grid", "", "';'-separated axes, each key=v1,v2,... with keys as in "
                            "override strings (depth, width, batch, network.repr_dim, ...); "
                            "runs are the cross product. Empty: one cell, the config itself.")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds 0..seeds-1 of every cell.")
_SEED_LIST = flags.DEFINE_list("seed_list", None, "Explicit seeds (instead of --seeds).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory.", required=True)
_BUDGET = flags.DEFINE_float("budget_s", 0.0, "Wall-clock budget of each run in seconds, in total "
                             "across resumes (train.max_seconds of each call = what is left; "
                             "a run stops at the first epoch end past it). 0 = none.")
_TIME_LIMIT = flags.DEFINE_float("time_limit_s", 0.0, "Wall-clock limit of this call: runs share "
                                 "it; at the limit running children are stopped at their last "
                                 "checkpoint (rerun to continue). 0 = none.")
_DEVICES = flags.DEFINE_string("devices", None, "GPU ids for the children (e.g. 0,1), or 'none'. "
                               "Default: CUDA_VISIBLE_DEVICES, else nvidia-smi's GPUs.")
_PARALLEL = flags.DEFINE_integer("parallel", 0, "Children at once (0 = one per device, at least "
                                 "one); devices are dealt round-robin.")
_PIN_CPUS = flags.DEFINE_bool("pin_cpus", True, "When children run on the CPU (no GPU) and "
                               "--parallel > 1: give each its own share of the CPUs (Linux "
                               "sched_setaffinity) so their XLA thread pools do not contend; "
                               "--nopin_cpus: every child may use every CPU.")
_EXTEND = flags.DEFINE_bool("extend", False, "Allow another grid or seeds in an existing sweep "
                            "directory as long as every earlier cell and seed stays.")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Resume diverged runs too.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate and print the plan with each run's "
                             "status and command; run nothing.")
_FIGURES = flags.DEFINE_bool("figures", True, "Draw WORKDIR/figures/*.png after the runs.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    if _SEED_LIST.value is not None:
      if _SEEDS.present:
        raise sweep_lib.SweepError(["give --seeds or --seed_list, not both"])
      try:
        seeds = [int(s) for s in _SEED_LIST.value]
      except ValueError:
        raise sweep_lib.SweepError([f"--seed_list={','.join(_SEED_LIST.value)}: expected "
                                    "integers"]) from None
    else:
      if _SEEDS.value < 1:
        raise sweep_lib.SweepError([f"--seeds must be >= 1, got {_SEEDS.value}"])
      seeds = list(range(_SEEDS.value))
    devices = None if _DEVICES.value is None else sweep_lib.parse_devices(_DEVICES.value)
    return sweep_lib.run_sweep(
        _CONFIG.value, _GRID.value, seeds, _WORKDIR.value, budget_s=_BUDGET.value,
        time_limit_s=_TIME_LIMIT.value, devices=devices, parallel=_PARALLEL.value,
        pin_cpus=_PIN_CPUS.value, extend=_EXTEND.value, retry_failed=_RETRY.value,
        dry_run=_DRY_RUN.value, figures=_FIGURES.value, log_fn=lambda s: print(s, flush=True))
  except sweep_lib.SweepError as e:
    cli.exit_with(str(e))


if __name__ == "__main__":
  app.run(main)
