"""Panda cube tasks: model facts, layout, goals, physics sanity, no termination."""

import jax
import mujoco
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import envs
from deepcrl_core.envs import arm, mjcf

from tests.envs.conftest import NUM_ENVS

NAMES = ["arm_push_easy", "arm_push_hard", "arm_binpick_hard"]
FAST = ["arm_binpick_hard"]  # has every part of the push model, plus the bins
ALL = [pytest.param(n) if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
# published (cube centre, half-width), (goal centre, half-width)
RANGES = {
    "arm_push_easy": (((-0.1, 0.6), 0.1), ((0.1, 0.6), 0.1)),
    "arm_push_hard": (((-0.25, 0.65), 0.25), ((0.25, 0.65), 0.25)),
    "arm_binpick_hard": (((-0.3, 0.6), 0.15), ((0.3, 0.6), 0.15)),
}


def _keys(seed, n=NUM_ENVS):
  return jax.random.split(jax.random.PRNGKey(seed), n)


@pytest.mark.parametrize("name", NAMES)
def test_declared_sizes_and_model(name):
  env = envs.make(name)
  m = env.mj_model
  assert (env.state_size, env.goal_indices, env.action_size) == (17, (0, 1, 2), 5)
  assert env.observation_size == 20
  assert env.success_radius == 0.1 and env.episode_length == 1000
  assert env.dt == pytest.approx(0.05)
  assert m.nu == 9 and m.njnt == 10  # cube free joint, 7 hinges, 2 finger slides
  # published inertials and gains
  np.testing.assert_allclose(m.body_mass[m.body("link1").id], 4.970684)
  np.testing.assert_allclose(m.body_mass[m.body("hand").id], 0.871, atol=1e-3)
  np.testing.assert_allclose(m.body_mass[m.body("cube").id], 0.216, atol=1e-6)
  np.testing.assert_allclose(m.actuator_gainprm[:7, 0], [4500, 4500, 2000, 2000, 1000, 1000,
                                                          1000])
  np.testing.assert_allclose(-m.actuator_biasprm[:7, 1], [4500, 4500, 3500, 3500, 2000, 2000,
                                                           2000])
  np.testing.assert_allclose(m.actuator_gainprm[7:, 0] * 255 / 500, 0.08, rtol=1e-4)
  # contacts only from explicit pairs (fast preset: cube-table; cube and table against the
  # hand capsule and two capsules per finger; bins: cube vs 2 wall colliders, the 5 gripper
  # capsules vs 2 more)
  assert not np.any(m.geom_contype) and not np.any(m.geom_conaffinity)
  assert m.npair == (11 + 2 + 5 * 2 if "binpick" in name else 11)
  assert m.nmocap == (4 if "binpick" in name else 0)
  # the 8 deepest cube contacts (condim 3) + the 8 deepest gripper-table/wall ones (condim 1)
  assert mjcf.count_contact_slots(m) == 8 + 8
  assert m.opt.impratio == (2.0 if "binpick" in name else 1.0)  # published 10, see arm.py
  assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
  assert (m.opt.timestep, env.n_substeps, m.opt.iterations, m.opt.ls_iterations) == (
      0.005, 10, 6, 3)


@pytest.mark.parametrize("name", NAMES)
def test_published_physics_preset(name):
  env = envs.make(name, physics="published")
  m = env.mj_model
  assert env.dt == pytest.approx(0.05)
  assert (m.opt.timestep, env.n_substeps, m.opt.iterations, m.opt.ls_iterations) == (
      0.002, 25, 6, 12)
  assert m.opt.impratio == (10.0 if "binpick" in name else 1.0)
  assert mjcf.count_contact_slots(m) == (136 if "binpick" in name else 24)  # no cap
  # published pairs minus finger-finger: cube, hand and both fingers vs table, cube vs
  # gripper; bins: cube, hand and fingers vs each of the 8 walls
  assert m.npair == (7 + 8 * 4 if "binpick" in name else 7) and m.nmocap == 0
  pairs = {frozenset((m.geom(int(a)).name, m.geom(int(b)).name))
           for a, b in zip(m.pair_geom1, m.pair_geom2)}
  assert frozenset(("cube", "left_finger")) in pairs
  assert frozenset(("table", "hand")) in pairs
  # overrides on top of a preset; bad values are named
  env = envs.make(name, physics="published", timestep=0.005, n_substeps=10, impratio=3.0)
  assert env.dt == pytest.approx(0.05) and env.mj_model.opt.iterations == 6
  assert env.mj_model.opt.impratio == 3.0
  with pytest.raises(ValueError, match="physics preset 'slow'"):
    envs.make(name, physics="slow")
  with pytest.raises(ValueError, match="contact model 'spheres'"):
    envs.make(name, contacts="spheres")


def test_bin_wall_colliders_pick_the_nearest_walls():
  env = envs.make("arm_binpick_hard")
  xw, yw = arm.bin_walls(env.cube_region, env.goal_region)
  assert xw.shape == yw.shape == (4, 3)
  rng = np.random.default_rng(0)
  half_x, half_y = np.array(arm._BIN_WALLS[0][1]), np.array(arm._BIN_WALLS[2][1])

  def box_distance(p, centre, half):
    return np.linalg.norm(np.maximum(np.abs(p[:2] - centre[:2]) - half[:2], 0.0))

  for _ in range(50):
    cube = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.3, 0.9), 0.03], np.float32)
    hand = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.3, 0.9), 0.2], np.float32)
    pos = np.asarray(env.collider_positions(jnp.asarray(cube), jnp.asarray(hand)))
    for k, (point, walls, half) in enumerate(((cube, xw, half_x), (cube, yw, half_y),
                                              (hand, xw, half_x), (hand, yw, half_y))):
      best = min(box_distance(point, w, half) for w in walls)
      assert any(np.allclose(pos[k], w) for w in walls)
      assert box_distance(point, pos[k], half) == pytest.approx(best, abs=1e-6)
  # collider geoms have the wall sizes, and the visual walls do not collide
  m = env.mj_model
  np.testing.assert_allclose(m.geom_size[m.geom("cube_xwall").id], half_x)
  np.testing.assert_allclose(m.geom_size[m.geom("hand_ywall").id], half_y)
  wall_geoms = {m.geom(f"bin{b}{k}").id for b in "AB" for k in range(1, 5)}
  assert not wall_geoms & (set(m.pair_geom1) | set(m.pair_geom2))


def test_cube_cannot_leave_a_bin_through_its_wall(compiled_env):
  """A cube resting against the inside of a bin wall, and pushed into it by the fingers, stays
  inside (the wall colliders follow the cube)."""
  c = compiled_env("arm_binpick_hard")
  env = c.env
  state = c.reset(_keys(9))
  # put each cube 1 mm from the -y wall of bin A, moving into it at 1 m/s
  (cx, cy), _ = env.cube_region
  inner = cy - 0.185 + arm.CUBE_HALF + 0.001
  qpos = state.data.qpos.at[:, 0:3].set(jnp.array([cx, inner, arm.CUBE_HALF]))
  qvel = state.data.qvel.at[:, 0:6].set(jnp.array([0.0, -1.0, 0.0, 0.0, 0.0, 0.0]))
  state = state.replace(data=state.data.replace(qpos=qpos, qvel=qvel))
  s = c.step(state, action_scale=0.0, n=10)
  y = np.asarray(s.obs[:, 1])
  assert np.all(y > cy - 0.185 + arm.CUBE_HALF - 0.01), y  # at most 1 cm into the wall


def test_action_mapping_is_published():
  env = envs.make("arm_push_easy")
  lo = np.asarray(env.ctrl_from_action(-jnp.ones(5)))
  hi = np.asarray(env.ctrl_from_action(jnp.ones(5)))
  np.testing.assert_allclose(lo[[0, 1, 3, 5]], [0.3491, 0.0, -3.0718, 2.3562], atol=2e-4)
  np.testing.assert_allclose(hi[[0, 1, 3, 5]], [2.7925, 1.48354, -0.0698, 3.7525], atol=2e-4)
  np.testing.assert_allclose(lo[[2, 4, 6]], [0.0, 0.0, 1.4487])
  np.testing.assert_allclose(lo[7:], 255.0)  # open
  np.testing.assert_allclose(hi[7:], 0.0)    # closed


@pytest.mark.parametrize("name", ALL)
def test_reset_shapes_determinism_and_ranges(name, compiled_env):
  c = compiled_env(name)
  env = c.env
  state = c.reset(_keys(0))
  again = c.reset(_keys(0))
  b = NUM_ENVS
  assert state.obs.shape == (b, 20) and state.obs.dtype == jnp.float32
  assert state.info["goal"].shape == (b, 3)
  np.testing.assert_array_equal(np.asarray(state.obs), np.asarray(again.obs))
  obs = np.asarray(state.obs)
  (cube_c, cube_h), (goal_c, goal_h) = RANGES[name]
  assert np.all(np.abs(obs[:, 0:2] - cube_c) <= cube_h + 1e-6)
  np.testing.assert_allclose(obs[:, 2], arm.CUBE_HALF)
  goal = np.asarray(state.info["goal"])
  assert np.all(np.abs(goal[:, 0:2] - goal_c) <= goal_h + 1e-6)
  np.testing.assert_allclose(goal[:, 2], 0.03)
  np.testing.assert_allclose(obs[:, 3:10], np.tile(arm.ARM_INIT_QPOS, (b, 1)), atol=1e-6)
  np.testing.assert_allclose(obs[:, 16], 0.08, atol=1e-3)  # finger bodies 2 x 0.04 apart
  np.testing.assert_allclose(obs[:, 13:16], 0.0, atol=1e-6)  # at rest
  np.testing.assert_allclose(obs[:, 17:], goal, rtol=1e-6)
  s1, s2 = c.step(state, seed=3), c.step(again, seed=3)
  np.testing.assert_array_equal(np.asarray(s1.obs), np.asarray(s2.obs))
  assert not np.array_equal(np.asarray(s1.obs), obs)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_goal_and_start_distribution_wide(name, compiled_env):
  """Many resets cover the published ranges (slow: compiles a 256-env reset)."""
  c = compiled_env(name)
  state = c.reset(_keys(1, 256))
  (cube_c, cube_h), (goal_c, goal_h) = RANGES[name]
  for xy, centre, half in ((state.obs[:, 0:2], cube_c, cube_h),
                           (state.info["goal"][:, 0:2], goal_c, goal_h)):
    u = (np.asarray(xy) - centre) / half
    assert np.all(np.abs(u) <= 1 + 1e-6) and np.all(u.max(0) > 0.8) and np.all(u.min(0) < -0.8)


@pytest.mark.parametrize("name", ALL)
def test_random_actions_1000_steps_no_nan_no_termination(name, compiled_env):
  c = compiled_env(name)
  state, checks = c.run(c.reset(_keys(5)), jax.random.PRNGKey(6), 1000, 1.0)
  assert bool(checks["finite"]) and bool(checks["consistent"])
  # episodes end only by the 1000-step limit
  np.testing.assert_array_equal(np.asarray(checks["dones"]), 1.0)
  np.testing.assert_array_equal(np.asarray(state.info["traj_id"]), 1)
  obs = np.asarray(state.obs)
  assert np.all(obs[:, 2] > 0.0)  # the cube did not fall through the table
  assert np.all(np.abs(obs[:, 0:2]) < 2.0)


@pytest.mark.parametrize("name", ALL)
def test_success_exactly_within_radius(name, compiled_env):
  c = compiled_env(name)
  state = c.reset(_keys(7))
  goal = state.info["goal"]
  centre = jnp.array([*RANGES[name][1][0], 0.03])
  # move from the goal towards the goal region's centre (stays inside the bin)
  direction = (centre - goal) / jnp.maximum(jnp.linalg.norm(centre - goal, axis=-1,
                                                            keepdims=True), 1e-6)
  direction = jnp.where(jnp.linalg.norm(centre - goal, axis=-1, keepdims=True) < 1e-3,
                        jnp.array([1.0, 0.0, 0.0]), direction)
  for offset, expected in ((0.07, 1.0), (0.13, 0.0)):
    qpos = state.data.qpos.at[:, 0:3].set(goal + direction * offset)
    s = c.step(state.replace(data=state.data.replace(qpos=qpos)), action_scale=0.0)
    np.testing.assert_array_equal(np.asarray(s.metrics["success"]), expected)
    np.testing.assert_allclose(np.asarray(s.metrics["dist"]), offset, atol=0.01)
    np.testing.assert_array_equal(np.asarray(s.done), 0.0)
    np.testing.assert_array_equal(np.asarray(s.reward), expected)


def test_scripted_pick_lifts_the_cube():
  """The fast model's gripper can pick the cube up (C MuJoCo, joint targets planned on it)."""
  import arm_physics  # pylint: disable=g-import-not-at-top
  env = envs.make("arm_push_easy")
  cube = np.array([-0.1, 0.6, arm.CUBE_HALF])
  above = arm_physics.plan_reach(env, cube + [0, 0, 0.12], closed=False)
  at = arm_physics.plan_reach(env, cube + [0, 0, 0.01], closed=False, start=above)
  up = arm_physics.plan_reach(env, cube + [0, 0, 0.15], closed=True, start=above)
  data = arm_physics._data(env, cube[:2])
  arm_physics._hold(env, data, list(above) + [-1], 1.0)
  arm_physics._hold(env, data, list(at) + [-1], 1.0)
  np.testing.assert_allclose(data.qpos[0:3], cube, atol=0.01)  # not knocked over yet
  arm_physics._hold(env, data, list(at) + [1], 0.5)
  arm_physics._hold(env, data, list(up) + [1], 1.5)
  assert data.qpos[2] > 0.13  # lifted with the hand
  np.testing.assert_allclose(data.qpos[0:3], arm_physics.grip_point(env, data), atol=0.03)


def test_gripper_closes_and_cube_rests(compiled_env):
  c = compiled_env("arm_binpick_hard")
  state = c.reset(_keys(8))
  # all-zero action except a closed gripper (a[4] = 1): run 40 steps of constant action
  gap0 = np.asarray(state.obs[:, 16])
  s = c.step(state, action_scale=0.0, n=40, action_offset=[0, 0, 0, 0, 1.0])
  assert np.all(np.asarray(s.obs[:, 16]) < 0.2 * gap0)
  np.testing.assert_allclose(np.asarray(s.obs[:, 0:3]), np.asarray(state.obs[:, 0:3]),
                             atol=2e-3)  # untouched cube stays put on the table
