"""Ant and humanoid tasks (open and mazes): layout, goals, physics sanity, termination.

Compiled physics checks run by default on one open and one maze env per robot family
(``FAST``); the remaining envs run the same checks under ``-m slow``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import envs
from deepcrl_core.envs import mazes, mjcf

from tests.envs.conftest import NUM_ENVS

ANT_MAZES = ["ant_u4_maze", "ant_u5_maze", "ant_big_maze", "ant_hardest_maze"]
HUMANOID_MAZES = ["humanoid_u_maze", "humanoid_big_maze"]
ANT = ["ant"] + ANT_MAZES + [m + "_eval" for m in ANT_MAZES]
HUMANOID = ["humanoid"] + HUMANOID_MAZES + [m + "_eval" for m in HUMANOID_MAZES]
# The maze envs contain every part of the open ones (which differ only in the goal
# distribution, tested without physics below).
FAST = ["ant_big_maze", "humanoid_u_maze"]
SLOW = [n for n in ANT + HUMANOID if n not in FAST]
ALL = [pytest.param(n) for n in FAST] + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW]

# name -> (maze layout, scale)
MAZE_OF = {
    **{f"ant_{m}_maze": (m, 4.0) for m in ("u4", "u5", "big", "hardest")},
    **{f"ant_{m}_maze_eval": (m + "_eval", 4.0) for m in ("u4", "u5", "big", "hardest")},
    "humanoid_u_maze": ("u", 2.0), "humanoid_u_maze_eval": ("u_eval", 2.0),
    "humanoid_big_maze": ("big", 2.0), "humanoid_big_maze_eval": ("big_eval_humanoid", 2.0),
}


def _keys(seed, n=NUM_ENVS):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def _is_ant(name):
  return name.startswith("ant")


@pytest.mark.parametrize("name", ANT + HUMANOID)
def test_declared_sizes_match_published_layout(name):
  env = envs.make(name)
  ant = _is_ant(name)
  assert env.state_size == (29 if ant else 268)
  assert env.goal_indices == ((0, 1) if ant else (0, 1, 2))
  assert env.observation_size == (31 if ant else 271)
  assert env.action_size == (8 if ant else 17) == env.mj_model.nu
  assert env.success_radius == 0.5
  assert env.episode_length == 1000
  maze = name in MAZE_OF
  expected_dt = 0.05 if ant else (0.015 if maze else 0.03)
  assert env.dt == pytest.approx(expected_dt)
  # contact slots: feet (ant) / 8 capped floor contacts (humanoid), + 8 capped wall contacts
  slots = mjcf.count_contact_slots(env.mj_model)
  assert slots == (4 if ant else 8) + (8 if maze else 0)
  if maze:
    assert env.maze.name == MAZE_OF[name][0]
    assert env.maze_scale == MAZE_OF[name][1]


def test_contact_caps_are_read_from_the_model():
  """The MJX 3.17 numeric-index bug would make the caps read wrongly: compare with no caps."""
  env = envs.make("humanoid_big_maze")
  capped = mjcf.count_contact_slots(env.mj_model)
  uncapped = mjcf.count_contact_slots(envs.make("humanoid_big_maze",
                                                max_contact_points=1000).mj_model)
  assert capped == 16
  assert uncapped == 29 + 11 * 4  # 29 floor slots + 11 spheres x 4 wall colliders


def test_humanoid_state_layout():
  env = envs.make("humanoid")
  m = env.mj_model
  names = [m.body(i).name for i in range(1, 13)]
  assert names == ["torso", "lwaist", "pelvis", "right_thigh", "right_shin", "left_thigh",
                   "left_shin", "right_upper_arm", "right_lower_arm", "left_upper_arm",
                   "left_lower_arm", "target"]
  assert (m.nq, m.nv) == (26, 25)
  assert 26 + 25 + 12 * 10 + 12 * 6 + 25 == env.state_size
  assert m.joint(m.njnt - 2).name == "target_x" and m.jnt_qposadr[m.njnt - 2] == 24
  assert m.ntendon == 0
  np.testing.assert_allclose(m.actuator_gear[:, 0],
                             [100] * 5 + [300, 200, 100, 100, 300, 200] + [25] * 6)


def test_ant_model():
  env = envs.make("ant")
  m = env.mj_model
  assert (m.nq, m.nv, m.nu) == (15, 14, 8)
  np.testing.assert_allclose(m.actuator_gear[:, 0], 150)
  joints = [m.joint(m.actuator_trnid[a, 0]).name for a in range(8)]
  assert joints == ["hip_4", "ankle_4", "hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3",
                    "ankle_3"]
  floor_geoms = [m.geom(g).name for g in range(m.ngeom) if m.geom_contype[g] & mjcf.FLOOR_BIT]
  assert floor_geoms == ["foot_1", "foot_2", "foot_3", "foot_4"]


@pytest.mark.parametrize("name", [n for n in ANT + HUMANOID if n in MAZE_OF] + ["ant", "humanoid"])
def test_goal_distribution(name):
  env = envs.make(name)
  goals = np.asarray(jax.jit(jax.vmap(lambda k: env.sample_goal_xy(k, (
      env.goal_distance, env.goal_distance) if _is_ant(name) else env.goal_radius)))(
          _keys(0, 512)))
  if name in MAZE_OF:
    layout, scale = MAZE_OF[name]
    cells = mazes.get_maze(layout).goal_xy(scale)
    d = np.abs(goals[:, None, :] - cells[None]).max(-1).min(-1)
    np.testing.assert_allclose(d, 0.0, atol=1e-5)  # exact goal-cell centres
    assert len({tuple(g) for g in goals.round(3)}) == len(cells)  # every goal cell is used
    np.testing.assert_allclose(np.asarray(env.init_qpos[:2]),
                               mazes.get_maze(layout).start_xy(scale))
  elif _is_ant(name):
    np.testing.assert_allclose(np.linalg.norm(goals, axis=-1), 10.0, rtol=1e-5)
  else:
    r = np.linalg.norm(goals, axis=-1)
    assert r.min() >= 1.0 - 1e-5 and r.max() <= 5.0 + 1e-5 and r.max() - r.min() > 3.0
  angle = np.arctan2(goals[:, 1], goals[:, 0])
  if name in ("ant", "humanoid"):
    assert np.histogram(angle, bins=4, range=(-np.pi, np.pi))[0].min() > 80


def test_wall_colliders_go_to_the_nearest_wall_cells():
  env = envs.make("ant_big_maze")
  assert env.mj_model.nmocap == 4
  # torso in cell (2, 4), near its corner with cells (1, 4) [wall], (2, 5), (1, 5) [free]:
  # walls around (2, 4) in the big maze: (1, 3), (1, 4), (2, 3), (3, 5)
  place = jax.jit(env.place_wall_colliders)
  mocap = np.asarray(place(env.mocap_pos0, jnp.array([2 * 4.0 - 1.5, 4 * 4.0 + 1.5])))
  got = {(round(x / 4), round(y / 4)) for x, y, z in mocap if z > 0}
  assert got == {(1, 3), (1, 4), (2, 3), (3, 5)}
  # the nearest first: (1, 4) is 0.5 m away (its face at x = 6)
  assert tuple(np.round(mocap[0, :2] / 4).astype(int)) == (1, 4)
  # the start cell (1, 1) has 5 wall neighbours; only the 4 nearest are placed
  mocap = np.asarray(place(env.mocap_pos0, jnp.array([5.9, 4.5])))
  got = {(round(x / 4), round(y / 4)) for x, y, z in mocap if z > 0}
  assert got == {(1, 0), (2, 0), (0, 1), (0, 2)}  # (0, 0) is the farthest


@pytest.mark.parametrize("name", ALL)
def test_reset_and_step_shapes_determinism_and_goals(name, compiled_env):
  c = compiled_env(name)
  env = c.env
  state = c.reset(_keys(0))
  again = c.reset(_keys(0))
  other = c.reset(_keys(1))
  b = NUM_ENVS
  assert state.obs.shape == (b, env.observation_size) and state.obs.dtype == jnp.float32
  assert state.reward.shape == (b,) and state.done.shape == (b,)
  assert state.info["goal"].shape == (b, env.goal_size)
  for k in ("dist", "success"):
    assert state.metrics[k].shape == (b,) and state.metrics[k].dtype == jnp.float32
  np.testing.assert_array_equal(state.obs[:, env.state_size:], state.info["goal"])
  np.testing.assert_array_equal(np.asarray(state.obs), np.asarray(again.obs))
  assert not np.array_equal(np.asarray(state.obs), np.asarray(other.obs))

  s1, s2 = c.step(state, seed=3), c.step(again, seed=3)
  assert s1.obs.shape == state.obs.shape and s1.obs.dtype == jnp.float32
  assert s1.done.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(s1.obs), np.asarray(s2.obs))
  assert not np.array_equal(np.asarray(s1.obs), np.asarray(state.obs))

  # start state: at the start cell / origin, healthy, as published
  qpos = np.asarray(state.data.qpos)
  start = np.asarray(env.start_xy)
  if _is_ant(name):
    assert np.all(np.abs(qpos[:, :2] - start) <= 0.1 + 1e-6)
    assert np.all(np.abs(qpos[:, 2] - 0.55) <= 0.1 + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(qpos[:, 3:7], axis=-1), 1.0, rtol=1e-5)
  else:
    np.testing.assert_allclose(qpos[:, :3], np.tile([*start, 1.4], (b, 1)), atol=1e-6)
    np.testing.assert_allclose(qpos[:, 24:26], np.asarray(state.info["goal"][:, :2]))
    np.testing.assert_allclose(np.asarray(state.info["goal"][:, 2]), 1.25)
  if name in MAZE_OF:
    layout, scale = MAZE_OF[name]
    cells = mazes.get_maze(layout).goal_xy(scale)
    goals = np.asarray(state.info["goal"][:, :2])
    assert np.abs(goals[:, None] - cells[None]).max(-1).min(-1).max() < 1e-5


@pytest.mark.parametrize("name, kwargs", [pytest.param(n, {}) for n in FAST] + [
    pytest.param(n, {}, marks=pytest.mark.slow) for n in SLOW] + [
        pytest.param("ant_big_maze", {"mass": "published"})])
def test_random_actions_1000_steps_no_nan(name, kwargs, compiled_env):
  c = compiled_env(name, **kwargs)
  env = c.env
  state, checks = c.run(c.reset(_keys(5)), jax.random.PRNGKey(6), 1000, 1.0)
  assert bool(checks["finite"])
  assert bool(checks["consistent"])
  # every slot ends an episode by step 1000 at the latest (time limit)
  assert np.all(np.asarray(checks["dones"]) >= 1)
  assert np.all(np.isfinite(np.asarray(state.obs)))


def _with_torso(state, xy=None, z=None):
  qpos, qvel = state.data.qpos, state.data.qvel
  if xy is not None:
    qpos = qpos.at[:, :2].set(xy)
  if z is not None:
    qpos = qpos.at[:, 2].set(z)
  return state.replace(data=state.data.replace(qpos=qpos, qvel=jnp.zeros_like(qvel)))


@pytest.mark.parametrize("name", ALL)
def test_success_exactly_within_radius(name, compiled_env):
  c = compiled_env(name)
  env = c.env
  state = c.reset(_keys(7))
  goal = state.info["goal"]
  dz = 0.0 if _is_ant(name) else 1.4 - 1.25  # standing torso vs goal height
  for offset, expected in ((env.success_radius - 0.15, 1.0), (env.success_radius + 0.15, 0.0)):
    direction = jnp.array([0.6, 0.8])
    s = c.step(_with_torso(state, xy=goal[:, :2] + offset * direction), action_scale=0.0)
    np.testing.assert_array_equal(np.asarray(s.metrics["success"]), expected)
    np.testing.assert_allclose(np.asarray(s.metrics["dist"]), np.hypot(offset, dz), atol=0.1)
    assert np.all(np.asarray(s.done) == 0.0)


@pytest.mark.parametrize("name", ALL)
def test_unhealthy_height_terminates_and_auto_resets(name, compiled_env):
  c = compiled_env(name)
  env = c.env
  state = c.reset(_keys(8))
  healthy = c.step(state, action_scale=0.0)
  np.testing.assert_array_equal(np.asarray(healthy.done), 0.0)
  np.testing.assert_array_equal(np.asarray(healthy.info["steps"]), 1)
  too_high = 1.6 if _is_ant(name) else 2.6
  s = c.step(_with_torso(healthy, z=too_high), action_scale=0.0)
  np.testing.assert_array_equal(np.asarray(s.done), 1.0)
  np.testing.assert_array_equal(np.asarray(s.info["truncation"]), 0.0)
  # auto-reset: a fresh episode at the start, new trajectory id, step counter restarted
  np.testing.assert_array_equal(np.asarray(s.info["traj_id"]),
                                np.asarray(healthy.info["traj_id"]) + 1)
  np.testing.assert_array_equal(np.asarray(s.info["steps"]), 0)
  start_z = 0.55 if _is_ant(name) else 1.4
  assert np.all(np.abs(np.asarray(s.obs[:, 2]) - start_z) <= 0.1 + 1e-6)
  assert np.all(np.abs(np.asarray(s.obs[:, :2]) - np.asarray(env.start_xy)) <= 0.1 + 1e-6)
  np.testing.assert_array_equal(np.asarray(s.obs[:, env.state_size:]),
                                np.asarray(s.info["goal"]))


class _Data(NamedTuple):
  qpos: jax.Array
  qvel: jax.Array


def _data(env, z, nan_row=None):
  """Batched physics stand-ins with torso heights ``z`` (a NaN in ``qvel`` of ``nan_row``)."""
  qpos = jnp.zeros((len(z), env.mj_model.nq)).at[:, 2].set(z)
  qvel = jnp.zeros((len(z), env.mj_model.nv))
  if nan_row is not None:
    qvel = qvel.at[nan_row, 0].set(jnp.nan)
  return _Data(qpos, qvel)


@pytest.mark.parametrize("name", ["ant", "ant_big_maze_eval", "humanoid", "humanoid_u_maze"])
def test_termination_cause_names_the_height_bound_that_was_left(name):
  # termination_cause reads only the torso height, so no physics is needed: a batch of states
  # with torso heights below, inside and above the healthy range, through the eval wrappers.
  env = envs.make(name)
  lo, hi = env.healthy_z
  assert (lo, hi) == ((0.2, 1.0) if _is_ant(name) else (1.0, 2.0))
  wrapped = envs.wrap_for_eval(env, 10)
  assert (wrapped.termination_causes == env.termination_causes
          == ("torso_low", "torso_high", "non_finite"))
  z = jnp.array([lo - 0.05, lo + 0.01, 0.5 * (lo + hi), hi - 0.01, hi + 0.05, 0.5 * (lo + hi)])
  data = _data(env, z, nan_row=5)
  state = envs.State(data=data, obs=jnp.zeros((len(z), env.observation_size)),
                     reward=jnp.zeros(len(z)), done=jnp.zeros(len(z)), metrics={}, info={})
  cause = wrapped.termination_cause(state)
  assert cause.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(cause), [1, 0, 0, 0, 2, 3])
  # the cause is named exactly when the step terminates (the published rule, or a blow-up)
  done = jax.vmap(env.termination)(data)
  np.testing.assert_array_equal(np.asarray(cause) > 0, np.asarray(done) > 0.5)


@pytest.mark.parametrize("name", ["ant", "humanoid_u_maze"])
def test_terminate_when_unhealthy_false_keeps_episodes_running(name):
  published = envs.make(name)
  assert published.terminate_when_unhealthy
  env = envs.make(name, terminate_when_unhealthy=False)
  lo, hi = env.healthy_z
  data = _data(env, jnp.array([lo - 0.05, 0.5 * (lo + hi), hi + 0.05, 0.5 * (lo + hi)]),
               nan_row=3)
  np.testing.assert_array_equal(np.asarray(jax.vmap(published.termination)(data)),
                                [1.0, 0.0, 1.0, 1.0])
  # without the rule only a non-finite state (a simulation blow-up) still ends the episode
  np.testing.assert_array_equal(np.asarray(jax.vmap(env.termination)(data)),
                                [0.0, 0.0, 0.0, 1.0])
  with pytest.raises(ValueError, match="terminate_when_unhealthy must be true or false"):
    envs.make(name, terminate_when_unhealthy="no")
  with pytest.raises(ValueError, match="low < high"):
    envs.make(name, healthy_z=(hi, lo))


@pytest.mark.slow
def test_terminate_when_unhealthy_false_in_the_physics_step():
  env = envs.make("ant", terminate_when_unhealthy=False)
  eval_env = envs.wrap_for_eval(env, 10)
  state = jax.jit(eval_env.reset)(_keys(0))
  step = jax.jit(eval_env.step)
  s = step(_with_torso(state, z=1.6), jnp.zeros((NUM_ENVS, env.action_size)))
  np.testing.assert_array_equal(np.asarray(s.done), 0.0)   # above the range, still running
  np.testing.assert_array_equal(np.asarray(eval_env.termination_cause(s)), 2)


@pytest.mark.parametrize("name", ["pointmass", "arm_push_easy"])
def test_envs_that_never_terminate_name_no_cause(name):
  env = envs.make(name)
  assert envs.wrap_for_eval(env, 10).termination_causes == env.termination_causes == ()
  assert int(env.termination_cause(None)) == 0


@pytest.mark.parametrize("name, kwargs", [
    pytest.param("ant_big_maze", {}), pytest.param("ant_big_maze", {"mass": "published"}),
    pytest.param("humanoid_u_maze", {}, marks=pytest.mark.slow)])
def test_walls_stop_the_robot(name, kwargs, compiled_env):
  """Shoved towards the wall cell at (0, 1) from the start cell (1, 1), the robot's
  wall-colliding spheres below the wall top stay out of the wall (the humanoid's torso may
  lean over its 1 m walls, as in the published maze); the 9 kg ant of the paper's configs too."""
  c = compiled_env(name, **kwargs)
  env = c.env
  m = env.mj_model
  scale = env.maze_scale
  state = c.reset(_keys(9))
  face = 0.5 * scale  # x of the wall face (wall cell (0, 1) spans x in [-s/2, s/2])
  # start clear of the wall (the ant's feet reach ~1.2 m from the torso)
  start = face + (1.4 if _is_ant(name) else 0.6)
  qvel = state.data.qvel.at[:, 0].set(-5.0 if _is_ant(name) else -4.0)
  qpos = state.data.qpos.at[:, 0].set(start).at[:, 1].set(scale)
  state = state.replace(data=state.data.replace(qpos=qpos, qvel=qvel))
  spheres = np.flatnonzero((m.geom_contype & mjcf.WALL_BIT) > 0)
  assert len(spheres) == (5 if _is_ant(name) else 11)
  assert np.all(m.geom_type[spheres] == 2)  # mjGEOM_SPHERE
  radius = m.geom_size[spheres, 0]
  margins, xs = [], []
  for _ in range(5):
    state, _ = c.run(state, jax.random.PRNGKey(0), 3, 0.0)
    alive = np.asarray(state.info["traj_id"]) == 0
    gx = np.asarray(state.data.geom_xpos[:, spheres])  # [envs, spheres, 3]
    # signed distance from each sphere to the wall {x < face, z < top} minus its radius
    out_x, out_z = gx[..., 0] - face, gx[..., 2] - 0.5 * scale
    outside = np.hypot(np.maximum(out_x, 0), np.maximum(out_z, 0))
    inside = np.minimum(-out_x, -out_z)
    signed = np.where((out_x < 0) & (out_z < 0), -inside, outside)
    margin = (signed - radius).min(-1)
    margins.append(np.where(alive, margin, np.inf))
    xs.append(np.where(alive, np.asarray(state.data.qpos[:, 0]), np.inf))
  assert np.isfinite(np.min(margins))
  assert np.min(margins) > -0.06  # soft contacts: a few cm of penetration at 4 m/s
  assert np.min(xs) < start - 0.3  # it did move towards the wall
