"""Quasimetric critic energies (mrn, iqe) and the XLA InfoNCE of a logits matrix.

References here are independent of deepcrl_core.energies: hand-computed cases, float64 numpy
loops (IQE's union length by merging sorted intervals, not by the running-maximum formula),
finite differences, and the fused kernel's own paths for l2/dot.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels
from deepcrl_core import config as config_lib
from deepcrl_core import energies as E
from deepcrl_core import losses as L
from deepcrl_core import networks as nets
from tests.conftest import assert_close_to_rounding, enable_x64, load_config

SIGMOID_M1 = 1.0 / (1.0 + math.exp(1.0))   # sigmoid(-1) = 0.2689414..., IQE's initial alpha


# --- float64 numpy references ---------------------------------------------------------------


def mrn64(x, y, k):
  """MRN d(x -> y) of two vectors, a loop over k groups: first half max-ReLU, second half L2."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  g = x.size // k
  total = 0.0
  for c in range(k):
    a, b = x[c * g:(c + 1) * g], y[c * g:(c + 1) * g]
    h = g // 2
    total += max(0.0, max(a[:h] - b[:h])) + math.sqrt(max(np.sum((a[h:] - b[h:]) ** 2), 1e-12))
  return total / k


def union_length64(starts, ends):
  """Length of the union of intervals [s, e] (e >= s), by merging them in order of start."""
  total, cur_s, cur_e = 0.0, None, None
  for s, e in sorted(zip(starts, ends)):
    if e <= s:
      continue
    if cur_e is None or s > cur_e:
      if cur_e is not None:
        total += cur_e - cur_s
      cur_s, cur_e = s, e
    else:
      cur_e = max(cur_e, e)
  if cur_e is not None:
    total += cur_e - cur_s
  return total


def iqe64(x, y, l, raw_alpha):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  comps = [union_length64(x[i:i + l], np.maximum(x[i:i + l], y[i:i + l]))
           for i in range(0, x.size, l)]
  alpha = 1.0 / (1.0 + math.exp(-raw_alpha))
  return alpha * max(comps) + (1 - alpha) * np.mean(comps)


def matrix64(d, phi, psi):
  return np.array([[d(p, q) for q in psi] for p in phi])


# --- hand-computed cases --------------------------------------------------------------------


def test_mrn_matches_hand_computation():
  # K = 1, D = 4: asymmetric half = entries 0-1, symmetric half = entries 2-3.
  x, y = jnp.array([1.0, 0.0, 0.0, 0.0]), jnp.array([0.0, 2.0, 3.0, 4.0])
  # d(x -> y) = max(relu(1 - 0), relu(0 - 2)) + ||(0, 0) - (3, 4)|| = 1 + 5 = 6
  # d(y -> x) = max(relu(0 - 1), relu(2 - 0)) + 5 = 7
  assert float(E.mrn_distance(x, y)) == pytest.approx(6.0, abs=1e-6)
  assert float(E.mrn_distance(y, x)) == pytest.approx(7.0, abs=1e-6)
  # K = 2, D = 8: groups (1, 0, 0, 0) -> (0, 2, 3, 4) [6] and (0, 3, 1, 1) -> (1, 1, 1, 2) [2 + 1]
  x2 = jnp.array([1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 1.0, 1.0])
  y2 = jnp.array([0.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 2.0])
  assert float(E.mrn_distance(x2, y2, 2)) == pytest.approx((6.0 + 3.0) / 2, abs=1e-6)
  # The energy is -d, rows = phi (from), columns = psi (to).
  logits = E.energy_matrix("mrn", jnp.stack([x, y]), jnp.stack([x, y]))
  np.testing.assert_allclose(logits, [[-1e-6, -6.0], [-7.0, -1e-6]], atol=1e-6)


def test_iqe_matches_hand_computation():
  # Two components of 3 entries.
  # Component 1: x = (0, 1, 5) -> y = (2, 3, 4): intervals [0, 2], [1, 3], [5, 5] -> |[0, 3]| = 3;
  #              backwards: [2, 2], [3, 3], [4, 5] -> 1.
  # Component 2: x = (0, 0, 0) -> y = (1, 1, 1): [0, 1] three times -> 1; backwards: 0.
  x = jnp.array([0.0, 1.0, 5.0, 0.0, 0.0, 0.0])
  y = jnp.array([2.0, 3.0, 4.0, 1.0, 1.0, 1.0])
  np.testing.assert_allclose(E.iqe_components(x, y, 3), [3.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(E.iqe_components(y, x, 3), [1.0, 0.0], atol=1e-6)
  # maxmean with alpha = sigmoid(-1): alpha * 3 + (1 - alpha) * 2 = 2.2689414...
  assert float(E.iqe_distance(x, y, -1.0, 3)) == pytest.approx(2 + SIGMOID_M1, abs=1e-6)
  assert float(E.iqe_distance(y, x, -1.0, 3)) == pytest.approx(0.5 + 0.5 * SIGMOID_M1, abs=1e-6)
  # Nested and touching intervals: [0, 4] contains [1, 2]; [4, 6] touches it -> 6.
  np.testing.assert_allclose(E.iqe_components(jnp.array([0.0, 1.0, 4.0]),
                                              jnp.array([4.0, 2.0, 6.0]), 3), [6.0], atol=1e-6)


# --- against float64 numpy on random inputs --------------------------------------------------


@pytest.mark.parametrize("k", [1, 4])
def test_mrn_matrix_matches_float64_reference(k):
  rng = np.random.default_rng(k)
  phi, psi = rng.normal(size=(9, 16)), rng.normal(size=(9, 16))
  got = E.energy_matrix("mrn", jnp.asarray(phi, jnp.float32), jnp.asarray(psi, jnp.float32),
                        mrn_components=k)
  want = -matrix64(lambda a, b: mrn64(a, b, k), phi, psi)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("l,raw_alpha", [(4, -1.0), (8, 0.7), (16, -3.0)])
def test_iqe_matrix_matches_float64_reference(l, raw_alpha):
  rng = np.random.default_rng(l)
  phi, psi = rng.normal(size=(9, 16)), rng.normal(size=(9, 16))
  params = {"iqe_raw_alpha": jnp.float32(raw_alpha)}
  got = E.energy_matrix("iqe", jnp.asarray(phi, jnp.float32), jnp.asarray(psi, jnp.float32),
                        params, iqe_component_dim=l)
  want = -matrix64(lambda a, b: iqe64(a, b, l, raw_alpha), phi, psi)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- quasimetric properties ----------------------------------------------------------------


def _dist(name):
  if name == "mrn":
    return lambda x, y: E.mrn_distance(x, y, 2)
  return lambda x, y: E.iqe_distance(x, y, 0.3, 4)


@pytest.mark.parametrize("name", ["mrn", "iqe"])
def test_quasimetric_properties(name):
  d = _dist(name)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x, y, z = (jax.random.normal(k, (2000, 16)) for k in (k1, k2, k3))
  # Identity: d(x, x) = 0 (mrn: its sqrt floor, 1e-6 per group).
  assert float(jnp.max(d(x, x))) <= 1e-6
  # Non-negativity and the triangle inequality on random triples.
  dxy, dyz, dxz = d(x, y), d(y, z), d(x, z)
  assert float(jnp.min(dxy)) >= 0
  assert float(jnp.max(dxz - (dxy + dyz))) <= 1e-5
  # Asymmetry exists, and it is large, not rounding.
  assert float(jnp.max(jnp.abs(dxy - d(y, x)))) > 0.5
  # The triangle check has power: a non-quasimetric (squared L2) violates it on these triples.
  sq = lambda a, b: jnp.sum(jnp.square(a - b), -1)
  assert float(jnp.max(sq(x, z) - (sq(x, y) + sq(y, z)))) > 1.0


# --- the chunked matrix --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mrn", "iqe"])
def test_row_blocks_equal_the_naive_matrix_values_and_gradients(name):
  d = _dist(name)
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  phi, psi = jax.random.normal(k1, (37, 16)), jax.random.normal(k2, (37, 16))
  per_row = 4 * 37 * 16 * 4                       # bytes per phi row of the intermediates
  chunk = 5 * per_row                              # 5 rows per block: 8 blocks, 3 padding rows
  assert E.rows_per_chunk(37, 37, 16, 4, chunk) == 5
  naive = lambda p, q: d(p[:, None, :], q[None, :, :])
  blocked = lambda p, q: E.pairwise_matrix(d, p, q, chunk_bytes=chunk)
  np.testing.assert_allclose(blocked(phi, psi), naive(phi, psi), rtol=1e-6, atol=1e-6)
  w = jax.random.normal(jax.random.PRNGKey(2), (37, 37))
  g_naive = jax.grad(lambda p, q: jnp.sum(w * naive(p, q)), argnums=(0, 1))(phi, psi)
  g_block = jax.jit(jax.grad(lambda p, q: jnp.sum(w * blocked(p, q)), argnums=(0, 1)))(phi, psi)
  for a, b in zip(g_block, g_naive):
    assert_close_to_rounding(a, b, terms=37)


@pytest.mark.parametrize("components, chunk_rows", [(1, 64), (4, 64), (2, 5)])
def test_mrn_matrix_with_matmul_symmetric_part_equals_the_naive_distances(components, chunk_rows):
  """energy_matrix('mrn') (asymmetric halves in row blocks, symmetric halves by one matmul per
  group) equals -mrn_distance over all pairs: values and gradients."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(4))
  phi, psi = jax.random.normal(k1, (37, 16)), jax.random.normal(k2, (37, 16))
  chunk = chunk_rows * 2 * 37 * 8 * 4     # rows x live copies x B x asymmetric dims x bytes
  fast = lambda p, q: E.energy_matrix("mrn", p, q, mrn_components=components, chunk_bytes=chunk)
  naive = lambda p, q: -E.mrn_distance(p[:, None, :], q[None, :, :], components)
  np.testing.assert_allclose(fast(phi, psi), naive(phi, psi), rtol=2e-6, atol=2e-6)
  w = jax.random.normal(jax.random.PRNGKey(5), (37, 37))
  g_fast = jax.jit(jax.grad(lambda p, q: jnp.sum(w * fast(p, q)), argnums=(0, 1)))(phi, psi)
  g_naive = jax.grad(lambda p, q: jnp.sum(w * naive(p, q)), argnums=(0, 1))(phi, psi)
  for a, b in zip(g_fast, g_naive):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mrn", "iqe"])
def test_row_blocks_keep_the_gradient_memory_below_one_pairwise_intermediate(name):
  """B = 1024, D = 64: one [B, B, D] float32 intermediate is 256 MiB; the blocked loss's gradient
  compiles to a fraction of that (XLA's temporary-buffer estimate)."""
  b, dim = 1024, 64
  f32 = jax.ShapeDtypeStruct((b, dim), jnp.float32)
  cfg = L.LossConfig(energy=name, mrn_components=1, iqe_component_dim=16)
  params = {"iqe_raw_alpha": jnp.float32(-1.0)}
  loss = lambda p, q: L.infonce(p, q, cfg, params)[0]
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(f32, f32).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < 0.5 * E.matrix_bytes(b, dim), (temp, E.matrix_bytes(b, dim))


# --- InfoNCE from logits = the kernel path --------------------------------------------------


@pytest.mark.parametrize("energy", ["l2", "dot"])
@pytest.mark.parametrize("variant", ["forward", "backward", "symmetric"])
@pytest.mark.parametrize("impl", ["xla", "interpret"])
def test_infonce_from_logits_equals_the_kernel_path(energy, variant, impl):
  k1, k2 = jax.random.split(jax.random.PRNGKey(3))
  phi = jax.random.normal(k1, (24, 16)) * 0.5
  psi = phi + 0.3 * jax.random.normal(k2, (24, 16))

  def kernel(p, q):
    return kernels.infonce_loss(p, q, energy=energy, variant=variant, logsumexp_penalty=0.1,
                                impl=impl)

  def from_logits(p, q):
    # Independent logits: the broadcast difference, not the kernels' matmul form.
    if energy == "dot":
      logits = p @ q.T
    else:
      logits = -jnp.sqrt(jnp.sum(jnp.square(p[:, None] - q[None]), -1))
    return E.infonce_from_logits(logits, variant=variant, logsumexp_penalty=0.1)

  (lk, ak), gk = jax.jit(jax.value_and_grad(kernel, argnums=(0, 1), has_aux=True))(phi, psi)
  (lx, ax), gx = jax.jit(jax.value_and_grad(from_logits, argnums=(0, 1), has_aux=True))(phi, psi)
  np.testing.assert_allclose(lx, lk, rtol=1e-5)
  for key in ("logsumexp", "logsumexp_col", "positive", "accuracy"):
    np.testing.assert_allclose(ax[key], ak[key], rtol=1e-5, atol=1e-5, err_msg=key)
  for a, b in zip(gx, gk):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_infonce_from_logits_rejects_bad_arguments():
  with pytest.raises(ValueError, match="variant must be one of"):
    E.infonce_from_logits(jnp.zeros((3, 3)), variant="sideways")
  with pytest.raises(ValueError, match="square"):
    E.infonce_from_logits(jnp.zeros((3, 4)))


# --- finite differences --------------------------------------------------------------------


def _fd(f, x, eps=1e-6):
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    d = np.zeros_like(x)
    d[idx] = eps
    g[idx] = (f(x + d) - f(x - d)) / (2 * eps)
  return g


@pytest.mark.parametrize("energy,variant", [("mrn", "forward"), ("mrn", "symmetric"),
                                            ("iqe", "forward"), ("iqe", "backward")])
def test_quasimetric_infonce_gradients_match_finite_differences(energy, variant):
  rng = np.random.default_rng(4)
  phi, psi = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
  cfg = L.LossConfig(energy=energy, variant=variant, logsumexp_penalty=0.1, mrn_components=2,
                     iqe_component_dim=4)
  with enable_x64():
    def f(a, b, raw_alpha):
      return L.infonce(a, b, cfg, {"iqe_raw_alpha": raw_alpha})[0]
    ra = jnp.asarray(0.4, jnp.float64)
    g_phi, g_psi, g_a = jax.grad(f, argnums=(0, 1, 2))(jnp.asarray(phi), jnp.asarray(psi), ra)
    fd_phi = _fd(lambda x: float(f(jnp.asarray(x), jnp.asarray(psi), ra)), phi)
    fd_psi = _fd(lambda x: float(f(jnp.asarray(phi), jnp.asarray(x), ra)), psi)
    fd_a = _fd(lambda x: float(f(jnp.asarray(phi), jnp.asarray(psi), jnp.asarray(x[()]))),
               np.asarray(0.4))
  np.testing.assert_allclose(g_phi, fd_phi, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(g_psi, fd_psi, rtol=1e-5, atol=1e-7)
  if energy == "iqe":
    np.testing.assert_allclose(g_a, fd_a, rtol=1e-5, atol=1e-7)
    assert abs(float(g_a)) > 1e-4   # the mixing weight is trained
  else:
    assert float(g_a) == 0.0


# --- the critic loss through the networks ----------------------------------------------------


def _batch(n=16):
  k_s, k_a, k_g = jax.random.split(jax.random.PRNGKey(5), 3)
  return L.Transitions(state=jax.random.normal(k_s, (n, 4)),
                       action=jax.random.uniform(k_a, (n, 2), minval=-1, maxval=1),
                       goal=jax.random.normal(k_g, (n, 2)))


def _critic_grads(energy, impl, block="residual"):
  """Critic + actor loss and gradients under jit; ``impl`` is the InfoNCE's kernel path (the
  trunks run on XLA: their interpreted kernels are tested in test_kernel_impls.py)."""
  spec = nets.NetworkSpec(state_size=4, goal_size=2, action_size=2, actor_depth=4,
                          critic_depth=4, width=32, repr_dim=16, kernel_impl="xla",
                          block=block, energy=energy)
  networks = nets.make_networks(spec)
  actor_params, critic_params = nets.init_params(networks, jax.random.PRNGKey(0))
  cfg = L.LossConfig(energy=energy, kernel_impl=impl, mrn_components=2, iqe_component_dim=8)
  batch = _batch()

  def both(cp, ap):
    critic, metrics = L.critic_loss(cp, networks, batch, cfg)
    actor, _ = L.actor_loss(ap, cp, jnp.float32(0.0), networks, batch, jax.random.PRNGKey(1),
                            cfg)
    return critic + actor, metrics

  (loss, metrics), grads = jax.jit(jax.value_and_grad(both, argnums=(0, 1), has_aux=True))(
      critic_params, actor_params)
  return loss, metrics, grads, critic_params


@pytest.mark.parametrize("energy", ["l2"] + [pytest.param(e, marks=pytest.mark.slow)
                                             for e in ("l2_sq", "dot", "cosine")])
def test_old_energies_critic_loss_and_gradients_agree_on_xla_and_interpret(energy):
  lx, mx, gx, _ = _critic_grads(energy, "xla")
  li, mi, gi, _ = _critic_grads(energy, "interpret")
  assert_close_to_rounding(li, lx, terms=4 * 32)
  for k in ("critic_accuracy", "logsumexp", "logits_pos"):
    assert_close_to_rounding(mi[k], mx[k], terms=4 * 32)
  jax.tree.map(lambda a, b: assert_close_to_rounding(a, b, terms=4 * 32), gi, gx)


@pytest.mark.parametrize("energy", ["mrn", "iqe"])
@pytest.mark.parametrize("block", ["residual", "simba"])
def test_quasimetric_critic_loss_under_jit(energy, block):
  loss, metrics, (g_critic, g_actor), critic_params = _critic_grads(energy, "xla", block)
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves((g_critic, g_actor)))
  assert 0.0 <= float(metrics["critic_accuracy"]) <= 1.0
  assert float(metrics["logits_pos"]) <= 0.0          # energies are -distances
  if energy == "iqe":
    assert set(critic_params["energy"]) == {"iqe_raw_alpha"}
    assert float(critic_params["energy"]["iqe_raw_alpha"]) == E.IQE_RAW_ALPHA_INIT
    assert float(jnp.abs(g_critic["energy"]["iqe_raw_alpha"])) > 0
  else:
    assert "energy" not in critic_params   # only IQE adds parameters to the critic


def test_iqe_without_its_parameter_is_named():
  with pytest.raises(ValueError, match="iqe_raw_alpha"):
    L.infonce(jnp.zeros((4, 16)), jnp.zeros((4, 16)), L.LossConfig(energy="iqe"), {})


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    ("loss.energy=mrn,network.repr_dim=30,loss.mrn_components=2", "network.repr_dim (30)"),
    ("loss.energy=iqe,network.repr_dim=40", "network.repr_dim (40)"),
    ("loss.energy=quasi", "loss.energy must be one of"),
    ("network.block=wide", "network.block must be one of"),
    ("network.block=simba,impl=interpret", "network.block=simba runs on XLA only"),
    ("network.block=simba,impl=pallas", "network.block=simba runs on XLA only"),
])
def test_validation_names_bad_energies_and_blocks(overrides, message):
  problems = config_lib.validation_problems(load_config("pointmass", overrides))
  assert any(message in p for p in problems), problems


def test_validation_accepts_the_new_keys():
  for o in ("loss.energy=mrn", "loss.energy=mrn,loss.mrn_components=16", "loss.energy=iqe",
            "loss.energy=iqe,loss.iqe_component_dim=8", "network.block=simba",
            "network.block=simba,impl=auto", "network.block=simba,impl=xla"):
    assert config_lib.validation_problems(load_config("pointmass", o)) == [], o


def test_config_to_spec_and_loss_config():
  c = load_config("pointmass", "loss.energy=iqe,loss.iqe_component_dim=8,network.block=simba")
  sizes = type("Sizes", (), {"state_size": 4, "goal_size": 2, "action_size": 2})
  spec = nets.network_spec(c, sizes)
  assert (spec.block, spec.energy) == ("simba", "iqe")
  cfg = L.loss_config(c, 2)
  assert (cfg.energy, cfg.iqe_component_dim, cfg.mrn_components) == ("iqe", 8, 1)
