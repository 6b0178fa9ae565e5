"""CRL losses: hand-computed values and finite-difference gradients."""

import math

import jax

import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl_core import losses as L
from deepcrl_core import networks as nets
from tests.conftest import enable_x64

PHI = np.array([[0.0, 0.0], [3.0, 4.0]])
PSI = np.array([[0.0, 1.0], [3.0, 0.0]])


def _hand_logits(energy):
  """Energies of PHI rows against PSI rows, written out by hand."""
  if energy == "l2":  # -||phi_i - psi_j||
    return np.array([[-1.0, -3.0], [-math.sqrt(9 + 9), -4.0]])
  if energy == "l2_sq":
    return np.array([[-1.0, -9.0], [-18.0, -16.0]])
  if energy == "dot":
    return np.array([[0.0, 0.0], [4.0, 9.0]])
  if energy == "cosine":  # phi_0 = 0 is normalised to 0
    return np.array([[0.0, 0.0], [0.8, 0.6]])
  raise ValueError(energy)


def _lse(x, axis):
  m = x.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


@pytest.mark.parametrize("energy", ["l2", "l2_sq", "dot", "cosine"])
@pytest.mark.parametrize("variant", ["forward", "backward", "symmetric"])
@pytest.mark.parametrize("penalty", [0.0, 0.1])
def test_infonce_matches_hand_computation(energy, variant, penalty):
  logits = _hand_logits(energy)
  pos = np.diag(logits)
  row, col = _lse(logits, 1), _lse(logits, 0)
  fwd = -np.mean(pos - row) + penalty * np.mean(row ** 2)
  bwd = -np.mean(pos - col) + penalty * np.mean(col ** 2)
  expected = {"forward": fwd, "backward": bwd, "symmetric": 0.5 * (fwd + bwd)}[variant]
  cfg = L.LossConfig(energy=energy, variant=variant, logsumexp_penalty=penalty, kernel_impl="xla")
  loss, aux = L.infonce(jnp.asarray(PHI, jnp.float32), jnp.asarray(PSI, jnp.float32), cfg)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["positive"], pos, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["logsumexp"], row, rtol=1e-5, atol=1e-6)
  # Row 0's positive is its largest logit for every energy here; row 1's is not for l2/l2_sq.
  expected_acc = np.mean(pos >= logits.max(axis=1))
  assert float(aux["accuracy"]) == pytest.approx(expected_acc)


def _fd_grad(f, x, eps=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    d = np.zeros_like(x)
    d[idx] = eps
    g[idx] = (f(x + d) - f(x - d)) / (2 * eps)
  return g


@pytest.mark.parametrize("energy", ["l2", "l2_sq", "dot", "cosine"])
@pytest.mark.parametrize("variant", ["forward", "symmetric"])
def test_infonce_gradients_match_finite_differences(energy, variant):
  rng = np.random.default_rng(0)
  phi, psi = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  cfg = L.LossConfig(energy=energy, variant=variant, logsumexp_penalty=0.1, kernel_impl="xla")
  with enable_x64():
    f = lambda a, b: L.infonce(a, b, cfg)[0]
    g_phi, g_psi = jax.grad(f, argnums=(0, 1))(jnp.asarray(phi), jnp.asarray(psi))
    fd_phi = _fd_grad(lambda x: float(f(jnp.asarray(x), jnp.asarray(psi))), phi)
    fd_psi = _fd_grad(lambda x: float(f(jnp.asarray(phi), jnp.asarray(x))), psi)
  np.testing.assert_allclose(g_phi, fd_phi, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_psi, fd_psi, rtol=1e-5, atol=1e-7)


def test_l2_energy_at_zero_distance_has_finite_gradient():
  x = jnp.ones((4, 3))
  cfg = L.LossConfig(kernel_impl="xla", logsumexp_penalty=0.1)
  g = jax.grad(lambda a, b: L.infonce(a, b, cfg)[0], argnums=(0, 1))(x, x)
  assert all(np.isfinite(np.asarray(t)).all() for t in g)
  q = jax.grad(lambda a: jnp.sum(L.energy(a, x)))(x)
  assert np.isfinite(np.asarray(q)).all()


def test_tanh_gaussian_log_prob_is_a_density():
  """Integrates exp(log_prob) of a 1-D tanh-Gaussian over (-1, 1): it must be 1, and match the
  change of variables computed numerically (finite-difference Jacobian of tanh)."""
  mean, log_std = jnp.array([0.3]), jnp.array([-0.5])
  with enable_x64():
    a = jnp.linspace(-1 + 1e-9, 1 - 1e-9, 400001)
    u = jnp.arctanh(a)
    logp = nets.tanh_gaussian_log_prob(u[:, None], mean.astype(jnp.float64),
                                       log_std.astype(jnp.float64))
    total = float(jnp.trapezoid(jnp.exp(logp), a))
    # Direct formula: N(u) / (1 - tanh(u)^2).
    std = math.exp(-0.5)
    u0 = 0.7
    direct = (math.exp(-0.5 * ((u0 - 0.3) / std) ** 2) / (std * math.sqrt(2 * math.pi))
              / (1 - math.tanh(u0) ** 2))
    ours = float(jnp.exp(nets.tanh_gaussian_log_prob(jnp.array([[u0]]), mean.astype(jnp.float64),
                                                      log_std.astype(jnp.float64)))[0])
  assert total == pytest.approx(1.0, abs=1e-4)
  assert ours == pytest.approx(direct, rel=1e-6)  # mean was rounded to f32


def test_published_tanh_correction_is_the_papers_formula_and_bounded():
  """published: log N(u) - sum log(1 - tanh(u)^2 + 1e-6) (the paper's code, in numpy here);
  it stays bounded where the exact density diverges, and is the default of the loss."""
  rng = np.random.default_rng(0)
  mean = rng.normal(size=(64, 3)).astype(np.float32)
  log_std = rng.uniform(-2, 1, size=(64, 3)).astype(np.float32)
  # |u| <= 3: float32 tanh implementations (numpy's, XLA's) agree there; beyond, they round
  # 1 - tanh(u)^2 differently, which only the bound below constrains.
  u = np.clip(mean + np.exp(log_std) * rng.normal(size=(64, 3)), -3, 3).astype(np.float32)
  std = np.exp(log_std.astype(np.float64))
  normal = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
  expected = np.sum(normal - np.log(1 - np.tanh(u.astype(np.float64)) ** 2 + 1e-6), -1)
  ours = nets.tanh_gaussian_log_prob(jnp.asarray(u), jnp.asarray(mean), jnp.asarray(log_std),
                                     "published")
  np.testing.assert_allclose(ours, expected, rtol=2e-5, atol=2e-4)
  # Saturated actions: bounded (-log 1e-6 per dimension at most) vs the exact form's growth.
  big = jnp.full((1, 3), 12.0)
  zeros = jnp.zeros((1, 3))
  pub = float(nets.tanh_gaussian_log_prob(big, zeros, zeros, "published")[0])
  exact = float(nets.tanh_gaussian_log_prob(big, zeros, zeros, "exact")[0])
  normal12 = 3 * (-0.5 * 144 - 0.5 * math.log(2 * math.pi))
  assert pub <= normal12 + 3 * -math.log(1e-6) + 1e-3
  assert exact > pub + 3 * 8  # exact adds 2*(12 - log 2) ~ 22.6 per dim more
  assert L.LossConfig().tanh_correction == "published"
  with pytest.raises(ValueError, match="correction must be one of"):
    nets.tanh_gaussian_log_prob(big, zeros, zeros, "approx")


@pytest.mark.parametrize("correction", ["published", "exact"])
def test_actor_and_alpha_losses(correction):
  spec = nets.NetworkSpec(state_size=3, goal_size=2, action_size=2, actor_depth=4,
                          critic_depth=4, width=16, repr_dim=8, kernel_impl="xla")
  networks = nets.make_networks(spec)
  actor_params, critic_params = nets.init_params(networks, jax.random.PRNGKey(0))
  # Push the first action dimension's mean to ~8, where the two corrections differ by ~1.2.
  bias = actor_params["actor/output"]["b"]
  actor_params["actor/output"]["b"] = bias.at[0].add(8.0)
  key = jax.random.PRNGKey(1)
  batch = L.Transitions(state=jax.random.normal(key, (6, 3)), action=jnp.zeros((6, 2)),
                        goal=jax.random.normal(jax.random.PRNGKey(2), (6, 2)))
  cfg = L.LossConfig(kernel_impl="xla", target_entropy=-1.0, tanh_correction=correction)
  log_alpha = jnp.asarray(0.5)
  loss, aux = L.actor_loss(actor_params, critic_params, log_alpha, networks, batch, key, cfg)
  # Recompute by hand from the same noise: u = mean + std * eps, a = tanh(u), the density of
  # the configured correction (its formula is tested against float64 above).
  mean, log_std = networks.actor.apply(actor_params, batch.obs)
  u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
  log_prob = nets.tanh_gaussian_log_prob(u, mean, log_std, correction)
  assert float(u[:, 0].min()) > 7.0  # saturated: the two corrections differ by > 0.3 here
  other = nets.tanh_gaussian_log_prob(
      u, mean, log_std, "exact" if correction == "published" else "published")
  assert float(jnp.abs(other - log_prob).min()) > 0.3
  phi, psi = networks.critic.apply(critic_params, batch.state, jnp.tanh(u), batch.goal)
  q = -np.linalg.norm(np.asarray(phi, np.float64) - np.asarray(psi, np.float64), axis=-1)
  np.testing.assert_allclose(aux["log_prob"], log_prob, rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(np.exp(0.5) * np.asarray(log_prob, np.float64) - q),
                             rtol=1e-5)
  # Alpha loss and its gradient: d/dlog_alpha mean(alpha * (-logp - H)) = alpha * mean(-logp - H).
  a_loss, a_grad = jax.value_and_grad(L.alpha_loss)(log_alpha, log_prob, -1.0)
  np.testing.assert_allclose(a_loss, jnp.exp(0.5) * jnp.mean(-log_prob + 1.0), rtol=1e-5)
  np.testing.assert_allclose(a_grad, a_loss, rtol=1e-5)
  # The actor loss does not push gradients into alpha (stop-gradient).
  g = jax.grad(lambda la: L.actor_loss(actor_params, critic_params, la, networks, batch, key,
                                       cfg)[0])(log_alpha)
  assert float(g) == 0.0
