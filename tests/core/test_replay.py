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


def _published_offsets_numpy(tid_chrono, gamma, window, rng):
  """The published sampler's rule, written independently in numpy from its description: for
  every env one window of ``window`` stored steps starting uniformly in 0 .. size - window - 1;
  for each window row i the goal index j ~ Categorical(w_ij), w_ij = gamma^(j - i) for j > i in
  the same episode (equal trajectory id) plus 1e-5 on j = i; the last row dropped. Returns
  (env, anchor step, offset j - i) of every transition."""
  size, n = tid_chrono.shape
  envs_, ts, ds = [], [], []
  for e in range(n):
    s0 = rng.integers(0, size - window)
    ids = tid_chrono[s0:s0 + window, e]
    i, j = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    w = np.where((j > i) & (ids[None, :] == ids[:, None]), gamma ** (j - i).astype(float), 0.0)
    w = w + 1e-5 * np.eye(window)
    p = w / w.sum(1, keepdims=True)
    goal = np.array([rng.choice(window, p=row) for row in p])
    envs_.append(np.full(window - 1, e))
    ts.append(s0 + np.arange(window - 1))
    ds.append((goal - np.arange(window))[:-1])
  return np.concatenate(envs_), np.concatenate(ts), np.concatenate(ds)


def _chrono_traj(state):
  oldest = (int(state.insert_pos) - int(state.size)) % state.capacity
  ring = (oldest + np.arange(int(state.size))) % state.capacity
  return np.asarray(state.traj_id)[ring]


def test_windows_follow_the_published_scheme(filled):
  """Every env gives one contiguous window that never holds the newest step; every window step
  but the last is a transition; goals stay in the window and the episode."""
  state, tid, total = filled
  w = 20
  n_all = NUM_ENVS * (w - 1)
  sample = jax.jit(replay.sample_windows, static_argnums=(2, 3, 4))
  anchors = sample(state, jax.random.PRNGKey(5), n_all, w, GAMMA)
  flat = replay.gather(state, anchors, GOAL_INDICES, STATE_SIZE)
  obs = np.asarray(flat.obs)
  env = np.asarray(flat.action[:, 1]).astype(int)
  t_abs, goal_time = obs[:, 0].astype(int), obs[:, 2].astype(int)
  np.testing.assert_array_equal(obs[:, 3], obs[:, 1])  # same episode
  np.testing.assert_array_equal(goal_time - t_abs, np.asarray(flat.offset))
  chrono_tid = _chrono_traj(state)
  for e in range(NUM_ENVS):
    ts = np.sort(t_abs[env == e])
    assert len(ts) == w - 1  # one window per env, its last step dropped
    np.testing.assert_array_equal(np.diff(ts), 1)
    last = ts[-1] + 1  # the window's last (dropped) step
    assert ts[0] >= total - CAPACITY and last <= total - 2  # never the newest stored step
    m = env == e
    assert np.all(goal_time[m] <= last)
    # horizon = later steps of the episode inside the window (numpy, by scanning)
    for t, h in zip(t_abs[m], np.asarray(flat.horizon)[m]):
      c = t - (total - CAPACITY)
      k = 0
      while t + k + 1 <= last and chrono_tid[c + k + 1, e] == chrono_tid[c, e]:
        k += 1
      assert h == k
  # A subset is the first num_transitions of the shuffle: distinct transitions.
  part = sample(state, jax.random.PRNGKey(6), 30, w, GAMMA)
  keys = np.asarray(part.env) * 10_000 + np.asarray(part.t)
  assert len(np.unique(keys)) == 30


def test_windows_goal_offsets_match_a_numpy_implementation_of_the_published_rule(filled):
  """Goal offsets d (0 = own state) and window starts from the jax sampler and from an
  independent numpy implementation of the published rule have the same distribution
  (two-sample chi-square). Transitions of one window are dependent, so each side keeps one
  random transition per (draw, env)."""
  from scipy import stats
  state, _, _ = filled
  w, reps = 20, 1500
  chrono_tid = _chrono_traj(state)
  rng = np.random.default_rng(0)

  def one_per_window(env, t, d):
    env, t, d = env.reshape(reps, -1), t.reshape(reps, -1), d.reshape(reps, -1)
    out_d, out_start = [], []
    for r in range(reps):
      for e in range(NUM_ENVS):
        idx = np.flatnonzero(env[r] == e)
        out_d.append(d[r, rng.choice(idx)])
        out_start.append(t[r, idx].min())
    return np.array(out_d), np.array(out_start)

  ref = [_published_offsets_numpy(chrono_tid, GAMMA, w, rng) for _ in range(reps)]
  ref_d, ref_start = one_per_window(*(np.stack([r[k] for r in ref]) for k in range(3)))
  sample = jax.jit(jax.vmap(replay.sample_windows, in_axes=(None, 0, None, None, None)),
                   static_argnums=(2, 3, 4))
  got = sample(state, jax.random.split(jax.random.PRNGKey(1), reps), NUM_ENVS * (w - 1), w,
               GAMMA)
  # the jax sampler's steps are chronological (0 = oldest stored), like the reference's
  got_d, got_start = one_per_window(*(np.asarray(x) for x in (got.env, got.t, got.offset)))
  assert 0 < (got_d == 0).mean() < 1  # own state where nothing follows

  def two_sample_p(a, b, edges):
    ca, cb = np.histogram(a, edges)[0], np.histogram(b, edges)[0]
    keep = (ca + cb) > 0
    return stats.chi2_contingency(np.stack([ca[keep], cb[keep]]))[1]

  d_edges = np.concatenate([np.arange(0, 8), [8, 11, w]]) - 0.5
  start_edges = np.linspace(0, CAPACITY - w, 7)
  assert two_sample_p(got_d, ref_d, d_edges) > 1e-3
  assert two_sample_p(got_start, ref_start, start_edges) > 1e-3
  assert ref_start.max() == got_start.max() == CAPACITY - w - 1  # the newest step is never in
  # The test has power: offsets of the i.i.d. "transitions" sampler are rejected.
  iid = replay.sample(state, jax.random.PRNGKey(2), len(got_d), GAMMA, GOAL_INDICES, STATE_SIZE)
  assert two_sample_p(np.asarray(iid.offset), ref_d, d_edges) < 1e-6


def test_truncated_geometric_self_weight():
  """P(0) = eps / (eps + sum_{d=1..L} gamma^d); the rest keeps P(d) ∝ gamma^d."""
  eps, gamma, L = 0.3, 0.5, 4
  d = np.asarray(replay.truncated_geometric(jax.random.PRNGKey(3), gamma,
                                            jnp.full((400000,), L, jnp.int32), eps))
  w = np.concatenate([[eps], gamma ** np.arange(1, L + 1)])
  np.testing.assert_allclose(np.bincount(d, minlength=L + 1) / len(d), w / w.sum(), atol=3e-3)


def _array_sizes(jaxpr):
  """Element counts of every array a jaxpr computes, inside nested jit/scan/cond bodies too."""
  sizes = []
  for eqn in jaxpr.eqns:
    sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape")]
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr
        if hasattr(inner, "eqns"):
          sizes += _array_sizes(inner)
  return sizes


def test_array_sizes_see_inside_nested_bodies():
  def f(x):
    big = jax.jit(lambda v: (v[:, None] < jnp.arange(1000.0)[None, :]).sum(0) * 1.0)(x)
    return jax.lax.scan(lambda c, _: (c + jnp.zeros((7, 300)).sum(), None), big, None, 2)[0]
  sizes = _array_sizes(jax.make_jaxpr(f)(jnp.zeros(64)).jaxpr)
  assert 64 * 1000 in sizes and 7 * 300 in sizes


def test_sampling_cost_is_linear_in_batch():
  """No [batch, T] or [T, T] intermediates: the jaxpr's largest array is O(batch) (the buffer
  itself aside)."""
  cap, envs = 1000, 4
  state = replay.init(cap, envs, 6, 2)
  jaxpr = jax.make_jaxpr(lambda s, k: replay.sample(s, k, 64, 0.99, (0, 1), 4))(
      state, jax.random.PRNGKey(0))
  sizes = _array_sizes(jaxpr.jaxpr)
  assert max(sizes) <= 64 * 6, max(sizes)


def test_windows_are_drawn_as_indices_not_copied():
  """The published sampler copies [num_envs, window, obs] windows and builds [window, window]
  weights; here the largest intermediate is the shuffle of num_envs x (window - 1) indices."""
  cap, envs, w, obs = 1000, 8, 100, 6
  state = replay.init(cap, envs, obs, 2)
  jaxpr = jax.make_jaxpr(lambda s, k: replay.sample_windows(s, k, 64, w, 0.99))(
      state, jax.random.PRNGKey(0))
  sizes = _array_sizes(jaxpr.jaxpr)
  assert max(sizes) <= envs * (w - 1), max(sizes)
  assert max(sizes) < envs * w * obs and max(sizes) < w * w


def test_insert_rejects_unrolls_longer_than_the_ring():
  state = replay.init(4, 1, 2, 1)
  with pytest.raises(ValueError, match="does not fit"):
    replay.insert(state, replay.Unroll(jnp.zeros((5, 1, 2)), jnp.zeros((5, 1, 1)),
                                       jnp.zeros((5, 1), jnp.int32)))
