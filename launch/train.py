"""Train deep CRL.

    python launch/train.py --config=configs/pointmass.py --workdir=runs/pointmass
    python launch/train.py --config=configs/humanoid.py:depth=64,batch=1024,num_envs=1024
    python launch/train.py --config=configs/ant.py --config.train.num_envs=1024 --workdir=runs/ant
    python launch/train.py --config=configs/ant.py --config.train.num_envs=1024 --workdir=runs/ant \
        --resume   # continue it from its newest checkpoint
    python launch/train.py --config=configs/humanoid.py:depth=1024 --dry_run   # check only

The config is validated before anything is compiled or written; problems are listed together
(exit code 2). A diverged run (NaN/inf losses) exits with code 3, keeping its last good
checkpoint.
"""

import os
import time

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from deepcrl_core import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "pointmass.py"),
    "Config file, optionally with overrides: file.py:k=v,k=v.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<env>-d<depth>-<time>).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the last checkpoint in --workdir.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate the flags and the config, print the "
                             "config and the run directory, and exit: nothing is compiled or "
                             "written.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from absl import logging
  from deepcrl_core import rundir
  from deepcrl_core import train as train_lib

  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  cli.validate_or_exit(config)
  workdir = _WORKDIR.value or os.path.join(
      "runs", f"{config.env.name}-d{config.network.depth}-{time.strftime('%Y%m%d-%H%M%S')}")
  if _RESUME.value and not os.path.isdir(workdir):
    cli.exit_with(f"--resume: run directory {workdir!r} does not exist")
  if _DRY_RUN.value:
    print(config, flush=True)
    print(f"run directory: {workdir} (dry run: nothing compiled or written)", flush=True)
    return 0
  print(f"run directory: {workdir}", flush=True)
  try:
    train_lib.train(config, workdir, resume=_RESUME.value,
                    log_fn=lambda s: print(s, flush=True))
  except train_lib.TrainingDiverged as e:
    cli.exit_with(f"training diverged: {e}", code=3)
  except (rundir.RunDirectoryBusy, rundir.RunDirectoryNotEmpty) as e:
    cli.exit_with(str(e))
  except KeyboardInterrupt:
    cli.exit_with("interrupted; resume with --resume from the last checkpoint", code=130)
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=cli.make_flags_parser(_CONFIG))
