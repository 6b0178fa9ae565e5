"""Shared pieces of the absl launchers: flag parsing that reports config problems cleanly."""

from __future__ import annotations

import sys
from typing import Callable, List

from absl import flags


def exit_with(message: str, code: int = 2) -> None:
  print(message, file=sys.stderr)
  sys.exit(code)


def make_flags_parser(config_flag) -> Callable[[List[str]], List[str]]:
  """An ``app.run(flags_parser=...)`` that turns config problems into one message and exit
  code 2 instead of a traceback: bad ``--config=file.py:overrides``, ``--config.x`` naming no
  field, a missing config file, unknown flags."""
  from deepcrl_core.config import ConfigError  # pylint: disable=g-import-not-at-top

  def parse(argv):
    try:
      remaining = flags.FLAGS(argv)
      if config_flag.value is not None:  # None: an optional --config left out
        config_flag.value.env.name  # surfaces a config file that failed to load
      return remaining
    except ConfigError as e:
      exit_with(str(e))
    except (AttributeError, KeyError) as e:
      exit_with(f"invalid config: a --config.* flag names a field the config does not have: {e}")
    except OSError as e:
      exit_with(f"invalid config: {e}")
    except flags.Error as e:
      exit_with(f"invalid flags: {e}")

  return parse


def validate_or_exit(config) -> None:
  from deepcrl_core import config as config_lib  # pylint: disable=g-import-not-at-top
  problems = config_lib.validation_problems(config)
  if problems:
    exit_with(config_lib.format_problems(problems))
