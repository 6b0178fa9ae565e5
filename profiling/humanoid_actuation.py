"""Humanoid gears on MuJoCo physics: the MJCF's (``actuation=gymnasium``) vs the paper's
spring-engine gears (``actuation=published``: 350 x11, 100 x6), each with MuJoCo's link
inertias (``inertia=mjcf``) and the spring engine's unit ones (``inertia=published``); no
learning.

Runs the env's own compiled model (same options as the MJX env: 0.003 s x 10 substeps, Newton,
1 iteration, 4 line-search steps) in C MuJoCo, which steps the same equations as MJX on CPU
in a fraction of the time, under three action scripts for ``--episodes`` episodes of up to
``--steps`` control steps each:

* ``random``: uniform actions in [-1, 1] every control step (what prefill and early training
  look like);
* ``zero``: no action (passive standing);
* ``squat``: both hips and knees driven by a 1 Hz sine at full amplitude, everything else 0
  (a scripted large, coordinated motion).

Reported per script: episodes still finite, mean control steps until the torso leaves
[1.0, 2.0] m (the task's termination), peak joint speed, peak joint-limit violation (degrees
past a hinge's range), peak constraint force on the limits, and the torso's peak height.

    python profiling/humanoid_actuation.py --episodes=16 --steps=300
    python profiling/humanoid_actuation.py --inertias=mjcf   # the gears alone
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys

import mujoco
import numpy as np

import deepcrl_core  # noqa: F401
from deepcrl_core.envs import humanoid as humanoid_lib
from profiling_common import names_problem

HIP_KNEE = ("right_hip_y", "right_knee", "left_hip_y", "left_knee")
SCRIPTS = ("random", "zero", "squat")


def _script(name, model, rng, t, dt):
  nu = model.nu
  if name == "random":
    return rng.uniform(-1.0, 1.0, nu)
  a = np.zeros(nu)
  if name == "squat":
    phase = np.sin(2 * np.pi * 1.0 * t * dt)
    for j, act in enumerate(HIP_KNEE):
      a[model.actuator(act).id] = phase if "hip" in act else -phase
  return a


def run(actuation: str, script: str, episodes: int, steps: int, seed: int = 0,
        inertia: str = "mjcf") -> dict:
  env = humanoid_lib.Humanoid(actuation=actuation, inertia=inertia)
  model = env.mj_model
  data = mujoco.MjData(model)
  rng = np.random.default_rng(seed)
  hinge = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE
           and model.jnt_limited[j]]
  lo, hi = model.jnt_range[hinge, 0], model.jnt_range[hinge, 1]
  qadr = model.jnt_qposadr[hinge]
  vadr = model.jnt_dofadr[hinge]
  finite, fall_steps, peak_speed, peak_violation, peak_zmax, peak_limit_force = (
      0, [], 0.0, 0.0, 0.0, 0.0)
  for _ in range(episodes):
    mujoco.mj_resetData(model, data)
    data.qpos[:] = np.asarray(env.init_qpos)
    mujoco.mj_forward(model, data)
    fell, ok = steps, True
    for t in range(steps):
      data.ctrl[:] = env.action_scale * _script(script, model, rng, t, env.dt)
      for _ in range(env.n_substeps):
        mujoco.mj_step(model, data)
      if not np.all(np.isfinite(data.qpos)) or not np.all(np.isfinite(data.qvel)):
        ok = False
        break
      z = data.qpos[2]
      if fell == steps and not 1.0 <= z <= 2.0:
        fell = t + 1
      peak_zmax = max(peak_zmax, float(z))
      q = data.qpos[qadr]
      peak_violation = max(peak_violation, float(np.degrees(np.max(
          np.maximum(lo - q, 0) + np.maximum(q - hi, 0)))))
      peak_speed = max(peak_speed, float(np.max(np.abs(data.qvel[vadr]))))
      lim = [i for i in range(data.nefc)
             if data.efc_type[i] == mujoco.mjtConstraint.mjCNSTR_LIMIT_JOINT]
      if lim:
        peak_limit_force = max(peak_limit_force, float(np.max(np.abs(data.efc_force[lim]))))
    finite += ok
    fall_steps.append(fell)
  return {"actuation": actuation, "inertia": inertia, "script": script, "finite": f"{finite}/{episodes}",
          "fall": float(np.mean(fall_steps)), "fell": int(np.sum(np.array(fall_steps) < steps)),
          "speed": peak_speed, "violation": peak_violation, "limit_force": peak_limit_force,
          "zmax": peak_zmax}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--episodes", type=int, default=16)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--scripts", default="random,zero,squat")
  p.add_argument("--inertias", default=",".join(humanoid_lib.INERTIAS),
                 help=f"comma-separated of {humanoid_lib.INERTIAS}")
  args = p.parse_args(argv)
  scripts = [x for x in args.scripts.split(",") if x]
  inertias = [x for x in args.inertias.split(",") if x]
  problems = [m for m in (names_problem("scripts", args.scripts, SCRIPTS),
                           names_problem("inertias", args.inertias, humanoid_lib.INERTIAS)) if m]
  if args.episodes <= 0 or args.steps <= 0:
    problems.append("--episodes and --steps must be positive")
  if problems:
    p.error("; ".join(problems))
  print(f"mujoco {mujoco.__version__}, python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}; {args.episodes} episodes x <= {args.steps} "
        f"control steps (0.03 s) per script, C MuJoCo on the env's model\n")
  print("| script | actuation | inertia | finite | mean steps to fall (of " f"{args.steps}) "
        "| episodes fallen | peak joint speed (rad/s) | peak limit violation (deg) "
        "| peak limit force (N m) | peak torso z (m) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for script in scripts:
    for inertia in inertias:
      for actuation in humanoid_lib.ACTUATIONS:
        r = run(actuation, script, args.episodes, args.steps, inertia=inertia)
        print(f"| {script} | {actuation} | {inertia} | {r['finite']} | {r['fall']:.0f} "
              f"| {r['fell']} | {r['speed']:.1f} | {r['violation']:.1f} "
              f"| {r['limit_force']:.0f} | {r['zmax']:.2f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
