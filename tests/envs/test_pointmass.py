"""The quick-start point mass and the generic wrappers (episode limit, auto-reset, vmap)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import envs
from deepcrl_core.envs.wrappers import Wrapper


@pytest.fixture(scope="module")
def env():
  return envs.make("pointmass")


@pytest.fixture(scope="module")
def batched(env):
  wrapped = envs.wrap_for_training(env, episode_length=5, reset_mode="fresh")
  return wrapped, jax.jit(wrapped.reset), jax.jit(wrapped.step)


@pytest.fixture(scope="module")
def batched_first(env):
  wrapped = envs.wrap_for_training(env, episode_length=5, reset_mode="first")
  return wrapped, jax.jit(wrapped.reset), jax.jit(wrapped.step)


def test_declared_sizes_match_observations(env, batched):
  wrapped, reset, step = batched
  state = reset(jax.random.split(jax.random.PRNGKey(0), 4))
  assert env.observation_size == 6 and env.state_size == 4 and env.goal_indices == (0, 1)
  assert state.obs.shape == (4, env.observation_size) and state.obs.dtype == jnp.float32
  state = step(state, jnp.zeros((4, env.action_size)))
  assert state.obs.shape == (4, 6) and state.done.shape == (4,)
  assert set(state.metrics) >= {"dist", "success"}
  # The goal part of obs is the goal, and the achieved goal is the position.
  np.testing.assert_array_equal(state.obs[:, 4:], state.info["goal"])
  np.testing.assert_array_equal(envs.achieved_goal(state.obs, env.goal_indices),
                                state.data.qpos[:, :2])


def test_deterministic_for_a_fixed_key(batched):
  _, reset, step = batched
  keys = jax.random.split(jax.random.PRNGKey(7), 3)
  a = step(reset(keys), jnp.ones((3, 2)))
  b = step(reset(keys), jnp.ones((3, 2)))
  np.testing.assert_array_equal(a.obs, b.obs)


def test_success_is_exactly_the_radius(env):
  goal = jnp.array([0.5, 0.5])
  for offset, success in ((0.099, 1.0), (0.101, 0.0)):
    m = env.goal_metrics(goal + jnp.array([offset, 0.0]), goal)
    assert float(m["success"]) == success
    assert float(m["dist"]) == pytest.approx(offset, abs=1e-6)


def test_arena_walls_and_speed_limit(env):
  state = env.reset(jax.random.PRNGKey(0))
  step = jax.jit(env.step)
  for _ in range(40):
    state = step(state, jnp.array([1.0, -1.0]))
  np.testing.assert_allclose(state.data.qpos[:2], [env.arena_size, -env.arena_size])
  np.testing.assert_array_equal(state.data.qvel[:2], 0.0)  # pushing into a wall: no velocity
  state = env.reset(jax.random.PRNGKey(1))
  state = state.replace(data=state.data.replace(qpos=jnp.array([-1.0, 0.0])))
  for _ in range(15):
    state = step(state, jnp.array([1.0, 0.0]))
  # Top speed gear / damping = 1.5 m/s, approached with time constant mass / damping = 0.5 s.
  assert 1.35 < float(state.data.qvel[0]) <= 1.5
  assert float(state.data.qpos[0]) < env.arena_size


def test_auto_reset_starts_a_fresh_episode(batched):
  _, reset, step = batched
  state = reset(jax.random.split(jax.random.PRNGKey(3), 2))
  first_goal = state.info["goal"]
  for i in range(5):
    prev = state
    state = step(state, jnp.zeros((2, 2)))
  # Step 5 ends the 5-step episode: done and truncation set, new goal and traj id, counter reset.
  np.testing.assert_array_equal(state.done, 1.0)
  np.testing.assert_array_equal(state.info["truncation"], 1.0)
  np.testing.assert_array_equal(state.info["traj_id"], 1)
  np.testing.assert_array_equal(state.info["steps"], 0)
  assert not np.allclose(state.info["goal"], first_goal)
  np.testing.assert_array_equal(state.obs[:, 4:], state.info["goal"])
  assert np.all(prev.done == 0)


def test_first_reset_mode_restores_the_first_state_and_goal_exactly(batched_first):
  _, reset, step = batched_first
  state0 = reset(jax.random.split(jax.random.PRNGKey(3), 3))
  state = state0
  actions = jax.random.uniform(jax.random.PRNGKey(4), (10, 3, 2), minval=-1, maxval=1)
  for i in range(10):
    prev = state
    state = step(state, actions[i])
    if i == 3:
      # mid-episode: the physics has moved away from the start
      assert not np.allclose(state.data.qpos, state0.data.qpos)
    if i in (4, 9):  # each 5-step episode ends: the slot is back at its first state and goal
      np.testing.assert_array_equal(state.done, 1.0)
      np.testing.assert_array_equal(state.info["traj_id"], (i + 1) // 5)
      np.testing.assert_array_equal(state.info["steps"], 0)
      np.testing.assert_array_equal(state.obs, state0.obs)
      np.testing.assert_array_equal(state.info["goal"], state0.info["goal"])
      for a, b in zip(jax.tree.leaves(state.data), jax.tree.leaves(state0.data)):
        np.testing.assert_array_equal(a, b)
      assert np.all(prev.done == 0)
  # slots keep their own (different) first goals
  assert not np.allclose(state0.info["goal"][0], state0.info["goal"][1])


class _CountingResets(Wrapper):
  traced_resets = 0

  def reset(self, key):
    _CountingResets.traced_resets += 1
    return self.env.reset(key)


@pytest.mark.parametrize("mode, resets_in_step", [("first", 0), ("fresh", 1)])
def test_first_reset_mode_computes_no_reset_after_the_first(env, mode, resets_in_step):
  wrapped = envs.wrap_for_training(_CountingResets(env), episode_length=5, reset_mode=mode)
  state = wrapped.reset(jax.random.split(jax.random.PRNGKey(0), 2))
  _CountingResets.traced_resets = 0
  jax.make_jaxpr(wrapped.step)(state, jnp.zeros((2, 2)))
  assert _CountingResets.traced_resets == resets_in_step


def test_unknown_reset_mode_is_a_clear_error(env):
  with pytest.raises(ValueError, match="reset_mode must be one of"):
    envs.wrap_for_training(env, 5, reset_mode="sometimes")


def test_eval_wrapper_does_not_reset(env):
  wrapped = envs.wrap_for_eval(env, episode_length=3)
  state = jax.jit(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), 2))
  goal = state.info["goal"]
  step = jax.jit(wrapped.step)
  for _ in range(4):
    state = step(state, jnp.zeros((2, 2)))
  np.testing.assert_array_equal(state.info["goal"], goal)
  np.testing.assert_array_equal(state.done, 1.0)


def test_unknown_env_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown env 'nope'.*pointmass"):
    envs.make("nope")


@pytest.mark.parametrize("mode", ["fresh", "first"])
def test_stepped_state_has_the_types_of_a_reset_state(batched, batched_first, mode):
  """A stepped state can be fed back into code compiled for a reset state (no weak types)."""
  _, reset, step = batched if mode == "fresh" else batched_first
  state = reset(jax.random.split(jax.random.PRNGKey(0), 2))
  stepped = step(state, jnp.zeros((2, 2)))
  avals = lambda s: [(jax.typeof(x).dtype, jax.typeof(x).shape, jax.typeof(x).weak_type)
                     for x in jax.tree.leaves(s)]
  assert avals(stepped) == avals(state)
