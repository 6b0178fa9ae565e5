"""Replay ring buffer and future-goal relabelling (statistics and episode boundaries)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import replay

CAPACITY, NUM_ENVS, GAMMA = 50, 3, 0.9
GOAL_INDICES = (0, 1)  # state = [time, traj_id]; obs = [time, traj_id, commanded goal (2)]
STATE_SIZE = 2


def _episodes(total_steps, seed=0):
  """traj_id[t, e]: episodes of random lengths 1..15, per env."""
  rng = np.random.default_rng(seed)
  tid = np.zeros((total_steps, NUM_ENVS), np.int32)
  for e in range(NUM_ENVS):
    cur, left = 0, rng.integers(1, 16)
    for t in range(total_steps):
      if left == 0:
        cur, left = cur + 1, rng.integers(1, 16)
      tid[t, e] = cur
      left -= 1
  return tid


@pytest.fixture(scope="module")
def filled():
  total, chunk = 112, 7  # wraps the 50-step ring twice, inserts straddle the wrap point
  tid = _episodes(total)
  time = np.broadcast_to(np.arange(total)[:, None], (total, NUM_ENVS)).astype(np.float32)
  obs = np.stack([time, tid.astype(np.float32), -np.ones_like(time), -np.ones_like(time)], -1)
  action = np.stack([time, np.broadcast_to(np.arange(NUM_ENVS), time.shape)], -1)
  state = replay.init(CAPACITY, NUM_ENVS, obs_size=4, action_size=2)
  insert = jax.jit(replay.insert)
  for s in range(0, total, chunk):
    state = insert(state, replay.Unroll(obs=jnp.asarray(obs[s:s + chunk]),
                                        action=jnp.asarray(action[s:s + chunk], jnp.float32),
                                        traj_id=jnp.asarray(tid[s:s + chunk])))
  return state, tid, total


def test_insert_keeps_the_newest_steps_in_ring_order(filled):
  state, tid, total = filled
  assert int(state.size) == CAPACITY and int(state.insert_pos) == total % CAPACITY
  oldest = total - CAPACITY
  for chrono in (0, 17, CAPACITY - 1):
    ring = (int(state.insert_pos) + chrono) % CAPACITY
    np.testing.assert_array_equal(state.obs[ring, :, 0], oldest + chrono)
    np.testing.assert_array_equal(state.traj_id[ring], tid[oldest + chrono])


def _horizon_numpy(tid, total, t_abs, env):
  """Later steps of t's episode still stored (numpy, by scanning)."""
  h = 0
  while t_abs + h + 1 < total and tid[t_abs + h + 1, env] == tid[t_abs, env]:
    h += 1
  return h


def _pit_uniformity_chi2(d, horizon, gamma, rng):
  """Randomised probability-integral transform of d under the truncated geometric law on
  1..horizon; returns the chi-square statistic of 10 equal bins."""
  g = gamma ** np.arange(0, horizon.max() + 2)
  cdf = lambda k, L: (1 - g[k]) / (1 - g[L])
  u = cdf(d - 1, horizon) + rng.uniform(size=d.shape) * (cdf(d, horizon) - cdf(d - 1, horizon))
  counts = np.histogram(u, bins=10, range=(0, 1))[0]
  expected = len(u) / 10
  return ((counts - expected) ** 2 / expected).sum()


def test_relabelled_goals_follow_truncated_geometric_within_the_episode(filled):
  state, tid, total = filled
  batch = jax.jit(replay.sample, static_argnums=(2, 3, 4, 5))(
      state, jax.random.PRNGKey(0), 20000, GAMMA, GOAL_INDICES, STATE_SIZE)
  obs, offset, horizon = map(np.asarray, (batch.obs, batch.offset, batch.horizon))
  t_abs = obs[:, 0].astype(int)
  env = np.asarray(batch.action[:, 1]).astype(int)
  goal_time, goal_traj = obs[:, 2].astype(int), obs[:, 3].astype(int)
  # Anchors are stored steps other than the newest.
  assert t_abs.min() >= total - CAPACITY and t_abs.max() <= total - 2
  # Never across an episode boundary, always in the future (or itself when nothing follows).
  np.testing.assert_array_equal(goal_traj, obs[:, 1].astype(int))
  np.testing.assert_array_equal(goal_time - t_abs, offset)
  np.testing.assert_array_equal(np.asarray(batch.action[:, 0]).astype(int), t_abs)
  expected_h = np.array([_horizon_numpy(tid, total, t, e) for t, e in zip(t_abs, env)])
  np.testing.assert_array_equal(horizon, expected_h)
  assert np.all((offset >= 1) & (offset <= horizon) | (horizon == 0) & (offset == 0))
  # Offsets follow P(d) ∝ gamma^d on 1..L: the randomised PIT must look uniform.
  rng = np.random.default_rng(1)
  m = horizon > 0
  chi2 = _pit_uniformity_chi2(offset[m], horizon[m], GAMMA, rng)
  assert chi2 < 27.9, chi2  # chi-square(9) 99.9% quantile
  # The test has power: a flat law over 1..L is rejected.
  flat = np.ceil(rng.uniform(size=m.sum()) * horizon[m]).astype(int)
  assert _pit_uniformity_chi2(flat, horizon[m], GAMMA, rng) > 100


def test_truncated_geometric_moments():
  horizon = jnp.full((200000,), 6, jnp.int32)
  d = np.asarray(replay.truncated_geometric(jax.random.PRNGKey(3), 0.5, horizon))
  p = 0.5 ** np.arange(1, 7)
  p /= p.sum()
  freq = np.bincount(d, minlength=7)[1:] / len(d)
  np.testing.assert_allclose(freq, p, atol=4e-3)
  assert np.all(np.asarray(replay.truncated_geometric(
      jax.random.PRNGKey(0), 0.99, jnp.zeros(5, jnp.int32))) == 0)


def test_windows_relabel_within_window_and_episode(filled):
  state, tid, total = filled
  w = 20
  windows = replay.sample_windows(state, jax.random.PRNGKey(5), 400, w)
  flat = replay.relabel_windows(windows, jax.random.PRNGKey(6), GAMMA, GOAL_INDICES, STATE_SIZE)
  obs = np.asarray(flat.obs)
  t_abs, goal_time = obs[:, 0].astype(int), obs[:, 2].astype(int)
  np.testing.assert_array_equal(obs[:, 3], obs[:, 1])  # same episode
  np.testing.assert_array_equal(goal_time - t_abs, np.asarray(flat.offset))
  # Windows are contiguous stored steps; goals stay inside the window.
  times = np.asarray(windows.obs[..., 0]).astype(int)
  np.testing.assert_array_equal(np.diff(times, axis=1), 1)
  assert times.min() >= total - CAPACITY and times.max() <= total - 1
  window_end = np.repeat(times[:, -1], w)
  assert np.all(goal_time <= window_end)
  h = np.asarray(flat.horizon)
  m = h > 0
  assert np.all(goal_time[m] > t_abs[m])
  chi2 = _pit_uniformity_chi2(np.asarray(flat.offset)[m], h[m], GAMMA, np.random.default_rng(2))
  assert chi2 < 27.9, chi2


def test_sampling_cost_is_linear_in_batch():
  """No [batch, T] or [T, T] intermediates: the jaxpr's largest array is O(batch) (the buffer
  itself aside)."""
  cap, envs = 1000, 4
  state = replay.init(cap, envs, 6, 2)
  jaxpr = jax.make_jaxpr(lambda s, k: replay.sample(s, k, 64, 0.99, (0, 1), 4))(
      state, jax.random.PRNGKey(0))
  sizes = [int(np.prod(v.aval.shape)) for eqn in jaxpr.eqns for v in eqn.outvars
           if hasattr(v.aval, "shape")]
  assert max(sizes) <= 64 * 6, max(sizes)


def test_insert_rejects_unrolls_longer_than_the_ring():
  state = replay.init(4, 1, 2, 1)
  with pytest.raises(ValueError, match="does not fit"):
    replay.insert(state, replay.Unroll(jnp.zeros((5, 1, 2)), jnp.zeros((5, 1, 1)),
                                       jnp.zeros((5, 1), jnp.int32)))
