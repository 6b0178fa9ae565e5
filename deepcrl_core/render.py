"""Headless rendering of env rollouts with ``mujoco.Renderer`` and video writing.

Offscreen OpenGL comes from EGL or OSMesa: set ``MUJOCO_GL=egl`` (Debian/Ubuntu package
``libegl1`` plus a Mesa or NVIDIA driver, e.g. ``libegl-mesa0``) or ``MUJOCO_GL=osmesa``
(``libosmesa6``) *before* ``mujoco`` is imported. ``launch/evaluate.py --video`` does this.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def render_frames(mj_model, qpos: np.ndarray, *, height: int = 240, width: int = 320,
                  goals: Optional[np.ndarray] = None, goal_radius: float = 0.15,
                  track_body: int = 1,
                  distance: Optional[float] = None, elevation: float = -35.0,
                  azimuth: float = 90.0) -> np.ndarray:
  """Renders one frame per row of ``qpos [T, nq]`` -> ``uint8 [T, height, width, 3]``.

  A free camera follows body ``track_body`` (the robot's root by default). ``goals [T, 2|3]``
  draws a translucent red sphere of ``goal_radius`` (e.g. the success radius) at each step's
  goal (z = 0.1 for 2-D goals).
  """
  import mujoco  # pylint: disable=g-import-not-at-top
  qpos = np.asarray(qpos)
  if qpos.ndim != 2 or qpos.shape[1] != mj_model.nq:
    raise ValueError(f"qpos must be [T, nq={mj_model.nq}], got {qpos.shape}")
  data = mujoco.MjData(mj_model)
  cam = mujoco.MjvCamera()
  cam.type = mujoco.mjtCamera.mjCAMERA_FREE
  cam.distance = distance if distance is not None else max(2.0, 1.5 * mj_model.stat.extent)
  cam.elevation, cam.azimuth = elevation, azimuth
  frames = np.zeros((len(qpos), height, width, 3), np.uint8)
  with mujoco.Renderer(mj_model, height, width) as renderer:
    for t, q in enumerate(qpos):
      data.qpos[:] = q
      mujoco.mj_forward(mj_model, data)
      cam.lookat[:] = data.xpos[min(track_body, mj_model.nbody - 1)]
      renderer.update_scene(data, camera=cam)
      if goals is not None:
        _add_goal_marker(renderer.scene, np.asarray(goals[t]), goal_radius)
      frames[t] = renderer.render()
  return frames


def _add_goal_marker(scene, goal: np.ndarray, radius: float = 0.15) -> None:
  import mujoco  # pylint: disable=g-import-not-at-top
  if scene.ngeom >= scene.maxgeom:
    return
  pos = np.zeros(3)
  pos[:min(3, goal.shape[0])] = goal[:3]
  if goal.shape[0] < 3:
    pos[2] = 0.1
  mujoco.mjv_initGeom(scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_SPHERE,
                      np.array([radius, 0, 0]), pos, np.eye(3).ravel(),
                      np.array([0.9, 0.1, 0.1, 0.6], np.float32))
  scene.ngeom += 1


def write_video(frames: Sequence[np.ndarray], path: str, fps: float = 30.0) -> str:
  """Writes ``frames [T, H, W, 3]`` to ``path`` (.mp4 via imageio-ffmpeg; .gif also works)."""
  import warnings  # pylint: disable=g-import-not-at-top
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  frames = np.asarray(frames)
  with warnings.catch_warnings():  # imageio-ffmpeg forks ffmpeg; JAX warns about any fork
    warnings.simplefilter("ignore", RuntimeWarning)
    if path.lower().endswith(".gif"):
      imageio.mimsave(path, list(frames), duration=1.0 / fps)
    else:
      # macro_block_size=1 keeps the size as rendered.
      imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)
  return path
