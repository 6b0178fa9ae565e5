"""Headless rendering of every robot (pointmass, ant, humanoid, arm) on CPU via EGL."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

_SCRIPT = """
import sys
import numpy as np
from deepcrl_core import envs, render
for name in sys.argv[1:]:
  env = envs.make(name)
  m = env.unwrapped.mj_model
  qpos = np.repeat(m.qpos0[None], 3, axis=0)
  qpos[1:] += 0.05 * np.random.default_rng(0).normal(size=(2, m.nq))
  goal = np.zeros((3, len(env.goal_indices)))
  frames = render.render_frames(m, qpos, goals=goal, height=48, width=64)
  assert frames.shape == (3, 48, 64, 3), frames.shape
  assert frames.std() > 1.0, name  # something was drawn
  print(name, "ok", float(frames.std()))
"""


def test_each_robot_renders_a_few_frames():
  from deepcrl_core import envs
  names = [n for n in ("pointmass", "ant", "humanoid", "arm_push_easy") if envs.is_registered(n)]
  env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "PYTHONPATH": REPO_ROOT}
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, *names], capture_output=True, text=True,
                        timeout=300, cwd=REPO_ROOT, env=env)
  if proc.returncode != 0 and ("EGL" in proc.stderr or "OpenGL" in proc.stderr):
    pytest.skip(f"no offscreen OpenGL here (install libegl1 + Mesa): {proc.stderr[-300:]}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  for n in names:
    assert f"{n} ok" in proc.stdout
  assert len(names) >= 3
