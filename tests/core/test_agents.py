"""The agent interface (deepcrl_core.agents): every agent's update under jit on both kernel
paths, TD targets and target networks against hand computations, HER rewards from the env's own
success test, validation, and CRL's outputs unchanged by the refactor."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import agents
from deepcrl_core import config as config_lib
from deepcrl_core import replay
from deepcrl_core import train as train_lib
from deepcrl_core.agents import base
from deepcrl_core.envs.pointmass import PointMass
from tests.conftest import TINY_RUN, load_config

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "crl_reference.npz")
SIZES = train_lib.EnvSizes(state_size=4, goal_size=2, action_size=2)


def _agent(name, overrides=""):
  config = load_config("pointmass", f"agent={name},width=16,{overrides}".rstrip(","))
  return agents.build(config, SIZES), config


def _batch(name, key, n=8):
  ks = jax.random.split(key, 5)
  state = jax.random.normal(ks[0], (n, 4))
  action = jax.random.uniform(ks[1], (n, 2), minval=-1, maxval=1)
  goal = jax.random.normal(ks[2], (n, 2))
  if name in ("sac", "td3"):
    return base.TDBatch(state=state, action=action, goal=goal,
                        next_state=jax.random.normal(ks[3], (n, 4)),
                        reward=(jax.random.uniform(ks[4], (n,)) < 0.5).astype(jnp.float32),
                        mask=jnp.ones(n).at[0].set(0.0))
  from deepcrl_core import losses  # pylint: disable=g-import-not-at-top
  return losses.Transitions(state=state, action=action, goal=goal)


def _two_updates(name, impl):
  agent, _ = _agent(name, f"impl={impl}")
  state = agent.init(jax.random.PRNGKey(0))  # eager: its buffers must all be distinct
  init_actor = jax.tree.map(np.asarray, state.actor_params)
  state_type = type(state)
  step = jax.jit(agent.sgd_step, donate_argnums=0)  # as training and step_time donate it
  s1, m1 = step(state, _batch(name, jax.random.PRNGKey(1)))
  s2, m2 = step(s1, _batch(name, jax.random.PRNGKey(2)))
  assert m1.keys() == m2.keys() and "actor_loss" in m1
  assert all(np.isfinite(float(v)) for v in list(m1.values()) + list(m2.values())), m2
  assert int(s2.grad_steps) == 2 and type(s2) is state_type
  moved = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))), init_actor,
                       s2.actor_params)
  assert all(jax.tree.leaves(moved)), name
  obs = jnp.zeros((3, 6))
  a_det = agent.policy(agent.policy_params(s2), obs)
  a_sto = agent.policy(agent.policy_params(s2), obs, jax.random.PRNGKey(5))
  assert a_det.shape == a_sto.shape == (3, 2)
  assert float(jnp.max(jnp.abs(a_sto))) <= 1.0 and not np.allclose(a_det, a_sto)
  return m2


# The interpreted Pallas kernels take 1-2.5 min to compile for the agents with several trunks
# in one update (crl's interpreted update is also in test_kernel_impls.py, by default).
_SLOW_INTERPRET = ("crl", "sac", "td3")


@pytest.mark.parametrize("name,impl", [(n, "xla") for n in agents.AGENT_NAMES] + [
    pytest.param(n, "interpret", marks=[pytest.mark.slow] if n in _SLOW_INTERPRET else [])
    for n in agents.AGENT_NAMES])
def test_each_agent_updates_under_jit(name, impl):
  """Two jitted updates: finite metrics with the same keys every step, the actor's parameters
  all move, both policies act in [-1, 1]; the interpreted Pallas kernels agree with XLA."""
  metrics = _two_updates(name, impl)
  if impl == "interpret":
    want = _two_updates(name, "xla")
    for k in want:
      np.testing.assert_allclose(metrics[k], want[k], rtol=2e-3, atol=1e-5,
                                 err_msg=f"{name}: {k}")


# --- hand computations -------------------------------------------------------------------------


class _Fixed:
  """A stand-in network: ``apply(params, *inputs)`` -> ``fn(*inputs)``, params ignored."""

  def __init__(self, fn):
    self.fn = fn

  def apply(self, params, *inputs):
    return self.fn(*inputs)


def _td_batch():
  state = jnp.array([[0.1, 0.2, 0.0, 0.0], [-0.3, 0.5, 0.1, 0.0], [0.7, -0.7, 0.0, 0.2]])
  return base.TDBatch(state=state, action=jnp.array([[0.5, -0.5], [0.0, 0.1], [-1.0, 1.0]]),
                      goal=jnp.array([[0.1, 0.2], [1.0, 1.0], [0.0, 0.0]]),
                      next_state=state + 0.05, reward=jnp.array([1.0, 0.0, 0.0]),
                      mask=jnp.array([1.0, 1.0, 0.0]))


def _fake_q(s, a, g):  # two different, known critics
  x = jnp.sum(s, -1) + jnp.sum(a * jnp.array([1.0, -2.0]), -1) + jnp.sum(g, -1)
  return jnp.stack([x, 0.5 * x + 0.3], -1)


def test_sac_td_target_by_hand():
  agent, config = _agent("sac")
  mean_fn = lambda obs: (0.3 * obs[:, :2] - 0.1, jnp.full((obs.shape[0], 2), -0.5))
  agent.actor, agent.critic = _Fixed(mean_fn), _Fixed(_fake_q)
  b, key, log_alpha = _td_batch(), jax.random.PRNGKey(3), jnp.log(0.2)
  got = np.asarray(agent.td_target(None, None, log_alpha, b, key))
  # By hand: a' = tanh(u), u = mean + std * eps; log pi(a') = log N(u) - sum log(1 - tanh(u)^2).
  next_obs = np.concatenate([np.asarray(b.next_state), np.asarray(b.goal)], -1)
  mean, log_std = (np.asarray(x, np.float64) for x in mean_fn(jnp.asarray(next_obs)))
  eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
  u = mean + np.exp(log_std) * eps
  log_n = np.sum(-0.5 * eps ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1)
  log_pi = log_n - np.sum(np.log(1 - np.tanh(u) ** 2), -1)
  q = np.asarray(_fake_q(b.next_state, jnp.tanh(jnp.asarray(u, jnp.float32)), b.goal))
  want = np.asarray(b.reward) + config.sac.discount * (q.min(-1) - 0.2 * log_pi)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_td3_td_target_by_hand():
  agent, config = _agent("td3")
  mu = lambda obs: jnp.tanh(obs[:, :2] * 3.0)  # saturates on some rows: the clip matters
  agent.actor, agent.critic = _Fixed(mu), _Fixed(_fake_q)
  b, key = _td_batch(), jax.random.PRNGKey(4)
  got = np.asarray(agent.td_target(None, None, b, key))
  next_obs = jnp.concatenate([b.next_state, b.goal], -1)
  noise = np.clip(0.2 * np.asarray(jax.random.normal(key, (3, 2))), -0.5, 0.5)
  a = np.clip(np.asarray(mu(next_obs)) + noise, -1, 1)
  q = np.asarray(_fake_q(b.next_state, jnp.asarray(a), b.goal))
  want = np.asarray(b.reward) + config.td3.discount * q.min(-1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert (config.td3.smoothing_noise, config.td3.smoothing_clip) == (0.2, 0.5)


def test_td_critic_loss_ignores_masked_rows():
  q = jnp.array([[1.0, 2.0], [0.0, 1.0], [100.0, -100.0]])
  target = jnp.array([1.5, 0.5, 0.0])
  mask = jnp.array([1.0, 1.0, 0.0])
  # 0.5 * mean over 2 rows x 2 critics of (0.25, 0.25, 0.25, 0.25)
  assert float(base.td_critic_loss(q, target, mask)) == pytest.approx(0.125)


def test_polyak_and_td3_delayed_updates():
  tree = {"w": jnp.array([0.0, 1.0])}
  np.testing.assert_allclose(base.polyak(tree, {"w": jnp.array([1.0, -1.0])}, 0.25)["w"],
                             [0.25, 0.5])
  agent, config = _agent("td3", "td3.policy_delay=2,td3.tau=0.1")
  s0 = agent.init(jax.random.PRNGKey(0))
  step = jax.jit(agent.sgd_step)
  s1, _ = step(s0, _batch("td3", jax.random.PRNGKey(1)))  # grad_steps 0: actor + targets
  s2, _ = step(s1, _batch("td3", jax.random.PRNGKey(2)))  # grad_steps 1: critic only
  leaves = lambda t: jax.tree.leaves(t)
  for new, old in zip(leaves(s1.actor_params), leaves(s0.actor_params)):
    assert not np.array_equal(new, old)
  for tgt, old_tgt, online in zip(leaves(s1.target_critic_params),
                                  leaves(s0.target_critic_params), leaves(s1.critic_params)):
    np.testing.assert_allclose(tgt, 0.9 * old_tgt + 0.1 * online, rtol=1e-6, atol=1e-7)
  for tgt, old_tgt, online in zip(leaves(s1.target_actor_params),
                                  leaves(s0.target_actor_params), leaves(s1.actor_params)):
    np.testing.assert_allclose(tgt, 0.9 * old_tgt + 0.1 * online, rtol=1e-6, atol=1e-7)
  for a, b in ((s2.actor_params, s1.actor_params), (s2.target_actor_params,
                                                     s1.target_actor_params),
               (s2.target_critic_params, s1.target_critic_params)):
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
  assert not all(np.array_equal(x, y) for x, y in zip(leaves(s2.critic_params),
                                                      leaves(s1.critic_params)))


def test_sac_target_critics_follow_polyak_every_step():
  agent, _ = _agent("sac", "sac.tau=0.05")
  s0 = agent.init(jax.random.PRNGKey(0))
  s1, m = jax.jit(agent.sgd_step)(s0, _batch("sac", jax.random.PRNGKey(1)))
  for tgt, old, online in zip(jax.tree.leaves(s1.target_critic_params),
                              jax.tree.leaves(s0.target_critic_params),
                              jax.tree.leaves(s1.critic_params)):
    np.testing.assert_allclose(tgt, 0.95 * old + 0.05 * online, rtol=1e-6, atol=1e-7)
  # temperature gradient: d/d log_alpha = alpha * mean(-log pi - target); Adam's first step
  # moves log_alpha by -lr * sign(gradient).
  want = -3e-4 * np.sign(float(m["entropy"]) - agent.target_entropy)
  assert float(s1.log_alpha) == pytest.approx(want, rel=1e-3)


# --- HER ---------------------------------------------------------------------------------------


def test_her_reward_is_the_envs_success_test():
  env = PointMass(success_radius=0.3)  # not the default radius: the env's own test decides
  next_state = jnp.array([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 9.0, 9.0]])
  future = jnp.array([[0.2, 0.0], [0.0, 0.0], [0.5, 0.79]])   # dist 0.2, 1.0, 0.29
  original = jnp.array([[0.9, 0.9], [1.0, 0.25], [0.0, 0.0]])  # dist ~1.27, 0.25, ~0.71
  rel = replay.Relabelled(obs=jnp.concatenate([jnp.zeros((3, 4)), future], -1),
                          action=jnp.zeros((3, 2)), offset=jnp.array([1, 2, 0]),
                          horizon=jnp.array([3, 2, 0]), next_state=next_state,
                          original_goal=original)
  all_future = base.her_batch(env, rel, jax.random.PRNGKey(0), enabled=True, ratio=1.0)
  np.testing.assert_array_equal(all_future.goal, future)
  np.testing.assert_array_equal(all_future.reward, [1.0, 0.0, 1.0])
  np.testing.assert_array_equal(all_future.mask, [1.0, 1.0, 0.0])  # horizon 0: no successor
  for b in (base.her_batch(env, rel, jax.random.PRNGKey(0), enabled=True, ratio=0.0),
            base.her_batch(env, rel, jax.random.PRNGKey(0), enabled=False, ratio=1.0)):
    np.testing.assert_array_equal(b.goal, original)
    np.testing.assert_array_equal(b.reward, [0.0, 1.0, 0.0])
  want = np.asarray(env.goal_metrics(next_state[:, :2], future)["success"])
  np.testing.assert_array_equal(all_future.reward, want)


def test_her_mixes_at_its_ratio():
  env = PointMass()
  n = 20000
  rel = replay.Relabelled(obs=jnp.concatenate([jnp.zeros((n, 4)), jnp.ones((n, 2))], -1),
                          action=jnp.zeros((n, 2)), offset=jnp.ones(n, jnp.int32),
                          horizon=jnp.ones(n, jnp.int32), next_state=jnp.zeros((n, 4)),
                          original_goal=jnp.zeros((n, 2)))
  b = base.her_batch(env, rel, jax.random.PRNGKey(1), enabled=True, ratio=0.8)
  frac = float(jnp.mean(b.goal[:, 0]))
  assert abs(frac - 0.8) < 4 * np.sqrt(0.8 * 0.2 / n)


def _hand_buffer():
  """2 envs x 6 steps; env 0 has episodes [0..2] and [3..5], env 1 one episode."""
  obs = jnp.arange(6 * 2 * 6, dtype=jnp.float32).reshape(6, 2, 6)
  traj = jnp.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [1, 0]], jnp.int32)
  buf = replay.init(6, 2, 6, 2)
  return replay.insert(buf, replay.Unroll(obs=obs, action=obs[..., :2], traj_id=traj)), obs


def test_gather_with_next_states_and_original_goals():
  buf, obs = _hand_buffer()
  anchors = replay.Anchors(env=jnp.array([0, 0, 1]), t=jnp.array([1, 2, 4]),
                           offset=jnp.array([1, 0, 1]), horizon=jnp.array([1, 0, 1]))
  rel = replay.gather(buf, anchors, (0, 1), 4, with_next=True)
  np.testing.assert_array_equal(rel.next_state[0], obs[2, 0, :4])
  np.testing.assert_array_equal(rel.next_state[1], obs[2, 0, :4])  # episode end: itself
  np.testing.assert_array_equal(rel.next_state[2], obs[5, 1, :4])
  np.testing.assert_array_equal(rel.original_goal, np.stack([obs[1, 0, 4:], obs[2, 0, 4:],
                                                             obs[4, 1, 4:]]))
  np.testing.assert_array_equal(rel.obs[0, 4:], obs[2, 0, :2])
  assert replay.gather(buf, anchors, (0, 1), 4).next_state is None  # CRL's batch: unchanged


def test_uniform_offsets_are_uniform():
  horizon = jnp.full((60000,), 5, jnp.int32).at[:10].set(0)
  d = np.asarray(replay.truncated_uniform(jax.random.PRNGKey(0), horizon))
  assert (d[:10] == 0).all()
  counts = np.bincount(d[10:], minlength=6)[1:]
  assert counts.min() > 0 and len(counts) == 5
  np.testing.assert_allclose(counts / counts.sum(), 0.2, atol=0.01)


# --- validation --------------------------------------------------------------------------------


def test_validation_names_unknown_agents_her_and_agent_keys():
  problems = config_lib.validation_problems(config_lib.make_config("agent=ppo"))
  assert any("agent must be one of ('crl', 'sac', 'td3', 'gcbc', 'gcsl'), got 'ppo'" in p
             for p in problems), problems
  for name in ("crl", "gcbc", "gcsl"):
    problems = config_lib.validation_problems(config_lib.make_config(f"agent={name},her=false"))
    assert problems == [f"her.enabled=False is set, but agent={name!r} has no hindsight "
                        f"relabelling switch (her.* applies to sac, td3; {name} always trains "
                        f"on relabelled future goals)"], problems
  assert config_lib.validation_problems(config_lib.make_config("agent=sac,her=false")) == []
  problems = config_lib.validation_problems(config_lib.make_config(
      "agent=td3,her.ratio=1.5,td3.policy_delay=0,sac.tau=-1,her.offsets=final"))
  assert any("her.ratio must be in [0, 1], got 1.5" in p for p in problems), problems
  assert any(p.startswith("td3.policy_delay must be positive") for p in problems), problems
  assert any(p.startswith("sac.tau must be positive") for p in problems), problems
  assert any(p.startswith("her.offsets must be one of ('uniform', 'geometric')")
             for p in problems), problems
  with pytest.raises(config_lib.ConfigError, match="unknown override key 'sac.lr'"):
    config_lib.make_config("agent=sac,sac.lr=1e-3")


def test_every_paper_task_accepts_an_agent():
  import glob  # pylint: disable=g-import-not-at-top
  from tests.conftest import REPO_ROOT  # pylint: disable=g-import-not-at-top
  for path in sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.py"))):
    config = config_lib.load_config_file(f"{path}:agent=td3,her=false")
    assert config.agent == "td3" and not config.her.enabled, path


# --- CRL unchanged -----------------------------------------------------------------------------


def crl_reference_outputs():
  """Two training steps (collect + sample + CRL update) of a tiny pointmass run per sampler:
  the metrics, the whole training state and a replay checksum. ``tests/core/data/
  crl_reference.npz`` holds these outputs from the code before the agent interface existed
  (commit 27553b2; regenerate with ``python -m tests.core.test_agents`` only when CRL's
  computation is meant to change)."""
  out = {}
  for sampling in ("transitions", "windows"):
    cfg = load_config("pointmass", f"{TINY_RUN},width=16,network.kernel_impl=xla,"
                      f"replay.sampling={sampling}")
    c = train_lib.build(cfg)
    run = train_lib.prefill(c, train_lib.init_run_state(c, 3))
    step = jax.jit(train_lib.make_train_fns(c).train_step)
    for i in range(2):
      run, m = step(run)
      out.update({f"{sampling}/step{i}/metric/{k}": np.asarray(v) for k, v in m.items()})
    for path, v in jax.tree_util.tree_leaves_with_path(run.training):
      out[f"{sampling}/training{jax.tree_util.keystr(path)}"] = np.asarray(v)
    out[f"{sampling}/replay_obs_sum"] = np.asarray(run.replay.obs).sum(dtype=np.float64)
  return out


METRICS_ADDED_SINCE_REFERENCE = ("train/episode_ends",)


def test_crl_outputs_match_the_pre_refactor_code():
  """Bit-identical on the machine that saved the reference (checked when it was saved); the
  tolerances only admit another CPU's float32 rounding (a changed key, order or term moves
  these values by ~1e-3 of their scale or more).

  The metrics and the replay checksum are compared at a few float32 ulps. The training state
  (parameters and Adam moments after 8 updates) gets 1e-4 of each leaf's largest entry: Adam
  divides each gradient entry by its own running magnitude, so an entry that is small by
  cancellation carries its rounding error, relatively large, into a full ~lr-sized update. On
  an Intel Xeon with AVX-512 and AMX (2026-12-06) the actor's residual-block biases came out
  3.4e-6 of their leaf's scale (4.9e-5 relative) from the reference, the metrics at <= 1.8e-7.
  """
  want = np.load(REFERENCE)
  got = crl_reference_outputs()
  # Metrics added since the reference, that do not enter CRL's computation.
  added = [k for k in got if k.rsplit("/metric/", 1)[-1] in METRICS_ADDED_SINCE_REFERENCE]
  assert len(added) == 2 * 2 * len(METRICS_ADDED_SINCE_REFERENCE)  # 2 samplers x 2 steps
  assert sorted(set(got) - set(added)) == sorted(set(want.files) - set(added))
  for k in sorted(set(want.files) - set(added)):
    w = want[k]
    if w.dtype.kind in "iu":
      np.testing.assert_array_equal(got[k], w, err_msg=k)
    else:
      scale = max(float(np.max(np.abs(w))), 1e-6)
      atol = (1e-4 if "/training" in k else 1e-6) * scale
      np.testing.assert_allclose(got[k], w, rtol=1e-5, atol=atol, err_msg=k)


if __name__ == "__main__":
  import deepcrl_core  # pylint: disable=g-import-not-at-top
  deepcrl_core.configure_cpu_xla_flags()
  np.savez_compressed(REFERENCE, **crl_reference_outputs())
