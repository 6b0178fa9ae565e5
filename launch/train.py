"""Train deep CRL.

    python launch/train.py --config=configs/pointmass.py --workdir=runs/pointmass
    python launch/train.py --config=configs/humanoid.py:depth=64,batch=1024
    python launch/train.py --config=configs/ant.py --config.train.num_envs=256 --resume

The config is validated before anything is compiled or written; problems are listed together.
"""

import os
import sys
import time

# Make the repository importable when run as a script from a checkout without installing.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import deepcrl_core  # noqa: E402  (sets CPU XLA flags before jax initialises)
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/pointmass.py", "Config file, optionally with overrides: file.py:k=v,k=v.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<env>-d<depth>-<time>).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the last checkpoint in --workdir.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from absl import logging
  from deepcrl_core import config as config_lib
  from deepcrl_core import train as train_lib

  logging.set_verbosity(logging.WARNING)

  config = _CONFIG.value
  problems = config_lib.validation_problems(config)
  if problems:
    print(config_lib.format_problems(problems), file=sys.stderr)
    return 2
  workdir = _WORKDIR.value or os.path.join(
      "runs", f"{config.env.name}-d{config.network.depth}-{time.strftime('%Y%m%d-%H%M%S')}")
  if _RESUME.value and not os.path.isdir(workdir):
    print(f"--resume: run directory {workdir!r} does not exist", file=sys.stderr)
    return 2
  print(f"run directory: {workdir}", flush=True)
  try:
    train_lib.train(config, workdir, resume=_RESUME.value,
                    log_fn=lambda s: print(s, flush=True))
  except train_lib.TrainingDiverged as e:
    print(f"training diverged: {e}", file=sys.stderr)
    return 3
  except KeyboardInterrupt:
    print("interrupted; resume with --resume from the last checkpoint", file=sys.stderr)
    return 130
  return 0


def parse_flags(argv):
  """Parses the flags so that config problems end the run with a message, not a traceback."""
  from deepcrl_core.config import ConfigError
  try:
    remaining = flags.FLAGS(argv)
    _CONFIG.value.env.name  # surfaces a config file that failed to load
    return remaining
  except ConfigError as e:  # from --config=file.py:overrides
    _exit(str(e))
  except (AttributeError, KeyError) as e:  # --config.some.field=... naming no field
    _exit(f"invalid config: a --config.* flag names a field the config does not have: {e}")
  except OSError as e:  # missing or unreadable config file
    _exit(f"invalid config: {e}")
  except flags.Error as e:
    _exit(f"invalid flags: {e}")


def _exit(message: str) -> None:
  print(message, file=sys.stderr)
  sys.exit(2)


def run():
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
