"""Every config a document tells a user to run is valid: the ``configs/<task>.py[:overrides]``
specs (with any absl-style ``--config.a.b=v`` on the same command line) in the README,
WORKSPACE.md, FIDELITY.md, kernels/README.md and the docstrings of launch/, configs/ and
deepcrl_core/config.py load and pass validation."""

import glob
import os
import re

import pytest

from deepcrl_core import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = (["README.md", "WORKSPACE.md", "FIDELITY.md", "kernels/README.md",
         "deepcrl_core/config.py"] + sorted(glob.glob("launch/*.py", root_dir=ROOT))
        + sorted(glob.glob("configs/*.py", root_dir=ROOT)))
SPEC = re.compile(r"configs/[a-z0-9_]+\.py(?::[^\s`'\"\\)]+)?")
ABSL = re.compile(r"--config\.([a-z_.]+)=([^\s`'\"\\)]+)")


def _commands():
  found = []
  for doc in DOCS:
    with open(os.path.join(ROOT, doc)) as f:
      text = f.read().replace("\\\n", " ")  # join continued shell lines
    for line in text.splitlines():
      for spec in SPEC.findall(line):
        # a shell variable ($RANK) stands for a value the user's launcher fills in
        extra = [f"{k}={'0' if v.startswith('$') else v}" for k, v in ABSL.findall(line)]
        found.append((doc, spec, extra))
  return found


COMMANDS = _commands()


def test_the_documents_name_configs():
  assert len(COMMANDS) >= 10
  assert any(extra for _, _, extra in COMMANDS)  # absl-style overrides are seen too


@pytest.mark.parametrize("doc, spec, extra", COMMANDS,
                         ids=[f"{d}:{s}{' ' + ' '.join(e) if e else ''}" for d, s, e in COMMANDS])
def test_documented_config_is_valid(doc, spec, extra):
  path, _, overrides = spec.partition(":")
  overrides = ",".join(o for o in [overrides.rstrip(".,;"), *extra] if o)
  config = config_lib.load_config_file(os.path.join(ROOT, path) + (":" + overrides
                                                                     if overrides else ""))
  assert config_lib.validation_problems(config) == [], (doc, spec, extra)
