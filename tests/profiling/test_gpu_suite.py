"""profiling/gpu_suite.sh, checked on CPU: every command it would run on a lent GPU parses and
validates (flags, task and agent names, config overrides), and every step fits one device call.

A lent GPU gives a session about 15 minutes in all, so a renamed flag or a misspelt task found
there costs a part of that budget; these tests find it here, without running anything."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys
from typing import Dict, List

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SUITE = REPO / "profiling" / "gpu_suite.sh"
DEVICE_CALL_LIMIT_S = 600  # the device tool's limit on one command
FIRST_STEP_LIMIT_S = 480   # `first` runs in <= 8 minutes


@dataclasses.dataclass
class Command:
  step: str
  script: str          # repo-relative, e.g. profiling/kernel_bench.py
  args: List[str]
  line: str


def _case_arms(text: str) -> Dict[str, str]:
  """The body of each ``case "$STEP"`` arm, line continuations joined."""
  text = re.sub(r"\\\n\s*", " ", text)
  body = text[text.index('case "$STEP" in'):text.rindex("esac")]
  arms, name, lines = {}, None, []
  for line in body.splitlines()[1:]:
    m = re.fullmatch(r"  (\w+)\)", line)
    if m:
      name, lines = m.group(1), []
    elif line.strip() == ";;" and name:
      arms[name] = "\n".join(lines)
      name = None
    elif name:
      lines.append(line)
  return arms


def _tokens(rest: str, variables: Dict[str, str]) -> List[str]:
  """Shell words of ``rest`` up to the first pipe, redirection or list operator."""
  def expand(m):
    var = m.group(1) or m.group(2)
    if var not in variables:
      raise AssertionError(f"gpu_suite.sh uses ${var}, which this test does not know")
    return variables[var]
  rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", expand, rest)
  lex = shlex.shlex(rest, posix=True, punctuation_chars=True)
  lex.whitespace_split = True
  words = []
  for w in lex:
    if w and set(w) <= set("|&;<>()"):
      break
    words.append(w)
  return words


def suite_commands(tmp: pathlib.Path) -> List[Command]:
  variables = {"OUT": str(tmp / "out"), "LEARN_DIR": str(tmp / "learn"),
               "JAX_COMPILATION_CACHE_DIR": str(tmp / "cache")}
  commands = []
  for step, body in _case_arms(SUITE.read_text()).items():
    loop_values = {}
    for line in body.splitlines():
      loop = re.match(r"\s*for (\w+) in ([^;]+); do", line)
      if loop:
        loop_values[loop.group(1)] = loop.group(2).split()
      m = re.search(r"python3 ((?:profiling|launch)/\w+\.py)(.*)", line)
      if not m:
        continue
      used = [v for v in loop_values if f"${v}" in m.group(2)]
      for value in (loop_values[used[0]] if used else [None]):
        env = dict(variables, **({used[0]: value} if used else {}))
        commands.append(Command(step, m.group(1), _tokens(m.group(2), env), line.strip()))
  return commands


def _load(path: pathlib.Path, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
  return suite_commands(tmp_path_factory.mktemp("gpu_suite"))


def _of(commands, script):
  found = [c for c in commands if c.script == script]
  assert found, f"no {script} command found in gpu_suite.sh (the parser missed them?)"
  return found


def test_every_step_is_listed_and_runs_existing_scripts(commands):
  text = SUITE.read_text()
  listed = re.search(r'^STEPS="([^"]+)"', text, re.M).group(1).split()
  arms = _case_arms(text)
  assert sorted(listed) == sorted(arms), "STEPS and the case arms differ"
  for step in listed:
    assert [c for c in commands if c.step == step], f"step {step} runs no python script"
  for c in commands:
    assert (REPO / c.script).is_file(), c.line
  # the parser sees every command line, and the InfoNCE loop expands to its three variants
  lines = [ln.strip() for body in arms.values() for ln in body.splitlines()
           if re.search(r"python3 (profiling|launch)/", ln)]
  assert sorted(set(lines)) == sorted({c.line for c in commands}) and len(lines) >= 20
  assert len([c for c in commands if c.step == "kernels" and "--ops=infonce" in c.args]) == 3


def test_every_step_fits_one_device_call():
  """The sum of a step's `timeout` limits (kill grace included) bounds its wall-clock: each
  step fits the device tool's 10-minute call, and `first` its 8 minutes."""
  for step, body in _case_arms(SUITE.read_text()).items():
    total = 0.0
    for m in re.finditer(r"\btimeout (?:-k (\d+) )?(\d+)", body):
      total += float(m.group(2)) + float(m.group(1) or 0)
    # a python command outside any `timeout` would be unbounded
    for line in body.splitlines():
      if "python3 profiling/" in line or "python3 launch/" in line:
        assert re.search(r"\btimeout ", line), f"{step}: no timeout on: {line.strip()}"
    limit = FIRST_STEP_LIMIT_S if step == "first" else DEVICE_CALL_LIMIT_S
    assert 0 < total <= limit, f"step {step}: timeouts add up to {total:.0f} s > {limit} s"


@pytest.mark.parametrize("script,bad", [("kernel_bench", ["--ops=blocks"]),
                                        ("env_throughput", ["--tasks=ant,arm_push_eazy"])])
def test_argparse_script_commands_parse(commands, script, bad):
  module = _load(REPO / "profiling" / f"{script}.py", f"{script}_suite_check")
  for c in _of(commands, f"profiling/{script}.py"):
    try:
      module.parse_args(c.args)
    except SystemExit as e:
      pytest.fail(f"{c.step}: {c.line}\n  rejected (exit {e.code})")
  with pytest.raises(SystemExit):  # the check can fail
    module.parse_args(bad)


def test_step_time_commands_parse(commands, monkeypatch):
  from absl import flags
  monkeypatch.chdir(REPO)  # --config paths are repo-relative, as on the device
  module = _load(REPO / "profiling" / "step_time.py", "step_time_suite_check")

  def problems(args):
    fv = flags.FlagValues()
    module._define_flags(fv)  # pylint: disable=protected-access
    try:
      fv(["step_time.py", *args])
    except Exception as e:  # pylint: disable=broad-except  (unknown flag, bad config override)
      return [f"{type(e).__name__}: {e}"]
    return module.flag_problems(fv)

  for c in _of(commands, "profiling/step_time.py"):
    assert problems(c.args) == [], f"{c.step}: {c.line}"
  assert problems(["--impls=xla,palas"]) and problems(["--depths=4,sixteen"])
  assert problems(["--config=configs/humanoid.py:dept=4"]) and problems(["--no_such_flag=1"])


def _run(script, args, timeout=120):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
  return subprocess.run([sys.executable, script, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_launcher_commands_validate_in_a_dry_run(commands, tmp_path):
  """launch/train.py and launch/sweep.py commands, with --dry_run: flags and the whole config
  (every sweep cell) validated, nothing compiled or written."""
  for c in _of(commands, "launch/train.py") + _of(commands, "launch/sweep.py"):
    proc = _run(c.script, [*c.args, "--dry_run"])
    assert proc.returncode == 0, f"{c.step}: {c.line}\n{proc.stderr[-2000:]}"
    workdir = next(a.split("=", 1)[1] for a in c.args if a.startswith("--workdir="))
    assert not os.path.exists(workdir), f"a dry run wrote {workdir}"
  bad = _run("launch/train.py", ["--config=configs/humanoid.py:depth=16,epoch=2", "--dry_run"])
  assert bad.returncode == 2 and "epoch" in bad.stderr
