"""Haiku networks of deep CRL: residual trunks, the critic's two encoders and the actor.

Trunk (as in the paper's code, github.com/wang-kevin3290/scaling-crl): ``Dense -> LayerNorm ->
Swish``, then ``depth / 4`` residual blocks of ``4 x (Dense -> LayerNorm -> Swish)`` plus skip, then an output ``Dense``. The blocks' weights
are stacked (``[depth/4, 4, width, width]``) and applied by :func:`kernels.fused_residual_stack`
(a ``lax.scan``), so compile time does not grow with depth; ``remat="block"`` rematerialises
each block in the backward pass and ``remat="nested"`` groups of ~sqrt(depth/4) blocks, so
activation memory grows slowly (nested: nearly flat) with depth. Dense weights use
variance scaling 1/3, fan-in, uniform; biases zero; LayerNorm eps 1e-5 with scale and offset
(the published flax LayerNorm uses 1e-6; FIDELITY.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

import deepcrl_kernels as kernels

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
INIT_SCALE = 1.0 / 3.0


def _dense(size: int, name: str) -> hk.Linear:
  return hk.Linear(size, name=name,
                   w_init=hk.initializers.VarianceScaling(INIT_SCALE, "fan_in", "uniform"))


def _stacked_uniform(fan_in: int):
  """Variance-scaling(1/3, fan_in, uniform) for weights stacked as ``[..., fan_in, fan_out]``.

  The numbers of ``hk.initializers.RandomUniform(-limit, limit)``, drawn as a flat vector and
  reshaped (threefry numbers its draws in row-major order, so the values are the same): XLA:CPU
  with the fusion emitters off (the process default, ``deepcrl_core._xla_flags``) compiles a
  draw of three or more dimensions 4-22x slower, 1.7 s for one ``[1, 4, 16, 16]`` block stack
  against 0.08 s flat (``profiling/compile_time.py``), three trunks per agent.
  """
  limit = math.sqrt(3.0 * INIT_SCALE / fan_in)

  def init(shape, dtype):
    flat = jax.random.uniform(hk.next_rng_key(), (math.prod(shape),), dtype, -limit, limit)
    return flat.reshape(shape)

  return init


class ResidualTrunk(hk.Module):
  """``[batch, in] -> [batch, output_size]`` residual MLP of ``depth`` block layers."""

  def __init__(self, depth: int, width: int, output_size: int, *, kernel_impl: str = "auto",
               remat: str = "none", matmul_dtype: str = "float32", name: str | None = None):
    super().__init__(name=name)
    if depth <= 0 or depth % 4:
      raise ValueError(f"depth must be a positive multiple of 4, got {depth}")
    self.depth, self.width, self.output_size = depth, width, output_size
    # "none" | "block" | "nested" (booleans accepted: True = "block").
    self.kernel_impl = kernel_impl
    self.remat = {"none": False, False: False, "block": True, True: True,
                  "nested": "nested"}[remat]
    # Mixed precision: bf16 matmul operands with f32 accumulation; weights (the master copy),
    # LayerNorm, Swish and the skip stay f32.
    self.matmul_dtype = None if matmul_dtype == "float32" else jnp.dtype(matmul_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.width
    h = _dense(w, "input")(x)
    h = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, eps=1e-5, name="input_ln")(h)
    h = jax.nn.swish(h)
    n = self.depth // kernels.residual_block.LAYERS_PER_BLOCK
    blocks = {
        "w": hk.get_parameter("blocks_w", (n, 4, w, w), init=_stacked_uniform(w)),
        "b": hk.get_parameter("blocks_b", (n, 4, w), init=jnp.zeros),
        "scale": hk.get_parameter("blocks_scale", (n, 4, w), init=jnp.ones),
        "offset": hk.get_parameter("blocks_offset", (n, 4, w), init=jnp.zeros),
    }
    h = kernels.fused_residual_stack(h, blocks, impl=self.kernel_impl, remat=self.remat,
                                     matmul_dtype=self.matmul_dtype)
    return _dense(self.output_size, "output")(h)


# --- SimbaV2-style hyperspherical trunk -----------------------------------------------------

BLOCKS = ("residual", "simba")
SIMBA_C_SHIFT = 3.0      # SimbaV2's input shift constant, appended to the input before projection
SIMBA_EPS = 1e-8         # floor of a norm before dividing by it (SimbaV2's l2normalize)
SIMBA_HIDDEN_LAYERS = kernels.residual_block.LAYERS_PER_BLOCK - 1   # scaled + ReLU layers


def l2_normalize(x, axis: int = -1):
  """``x / max(||x||_2, 1e-8)`` along ``axis``."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, SIMBA_EPS)


def _unit_dot(h, w, matmul_dtype=None):
  """``h @ w_hat`` where ``w_hat`` has unit-norm columns (each output unit's weight vector)."""
  w = l2_normalize(w, axis=-2)
  dtype = matmul_dtype or jnp.promote_types(h.dtype, w.dtype)
  return jnp.dot(h.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


class SimbaScales(NamedTuple):
  """SimbaV2's "scaler" parametrisation ``s = p * (init / scale)``, ``p`` initialised at ``scale``
  (so ``s`` starts at ``init`` and Adam's steps on ``p`` move ``s`` by ``init / scale`` times
  as much), for a trunk of ``num_blocks`` blocks of width ``width``."""
  hidden_init: float   # sqrt(2 / width) (SimbaV2's default)
  hidden_scale: float  # sqrt(2 / width)
  alpha_init: float    # 1 / (num_blocks + 1)
  alpha_scale: float   # 1 / sqrt(width)
  output_init: float   # sqrt(width): unit-norm stream . unit-norm weights ~ N(0, 1/width)
  output_scale: float  # 1

  @classmethod
  def for_trunk(cls, num_blocks: int, width: int) -> "SimbaScales":
    return cls(math.sqrt(2.0 / width), math.sqrt(2.0 / width), 1.0 / (num_blocks + 1),
               1.0 / math.sqrt(width), math.sqrt(width), 1.0)

  def hidden(self, p):
    return p * (self.hidden_init / self.hidden_scale)

  def alpha(self, p):
    return p * (self.alpha_init / self.alpha_scale)

  def output(self, p):
    return p * (self.output_init / self.output_scale)


def simba_block(h, p, scales: SimbaScales, matmul_dtype=None):
  """One hyperspherical block: ``h [batch, W]`` on the unit sphere -> the next stream.

  ``z = ReLU(s_i * (z @ w_hat_i))`` for the first three layers (``z = h``), ``z @ w_hat_4`` for
  the fourth, ``h_tilde = z / |z|``, then the LERP step ``h' = normalize(h + alpha * (h_tilde -
  h))`` with a learned per-unit ``alpha``. ``p``: ``w [4, W, W]``, ``scaler [3, W]``,
  ``alpha [W]`` (stored parameters; effective values via :class:`SimbaScales`).
  """
  z = h
  for i in range(SIMBA_HIDDEN_LAYERS):
    z = jax.nn.relu(scales.hidden(p["scaler"][i]) * _unit_dot(z, p["w"][i], matmul_dtype))
  z = _unit_dot(z, p["w"][SIMBA_HIDDEN_LAYERS], matmul_dtype)
  target = l2_normalize(z)
  return l2_normalize(h + scales.alpha(p["alpha"]) * (target - h)).astype(h.dtype)


def simba_stack(h, stacked, scales: SimbaScales, *, remat=False, matmul_dtype=None):
  """``n`` :func:`simba_block` s whose params carry a leading axis ``n``, in one ``lax.scan``
  (compile time flat in ``n``). ``remat`` as :func:`kernels.fused_residual_stack`: ``False``
  (autodiff saves what it needs), ``True``/``"block"`` (each block rematerialised), ``"nested"``
  (groups of ~sqrt(n) blocks, two levels)."""
  if remat not in (False, True, "block", "nested"):
    raise ValueError(f"remat must be False, True, 'block' or 'nested', got {remat!r}")
  block = lambda x, p: simba_block(x, p, scales, matmul_dtype)
  if remat:
    block = jax.checkpoint(block)

  def run_blocks(x, params):
    return jax.lax.scan(lambda x, p: (block(x, p), None), x, params)[0]

  n = stacked["w"].shape[0]
  group = kernels.residual_block.nested_group_size(n) if remat == "nested" else 1
  if group == 1:
    return run_blocks(h, stacked)
  grouped = jax.tree.map(lambda a: a.reshape((n // group, group) + a.shape[1:]), stacked)
  run_group = jax.checkpoint(run_blocks)
  return jax.lax.scan(lambda x, p: (run_group(x, p), None), h, grouped)[0]


class SimbaTrunk(hk.Module):
  """``[batch, in] -> [batch, output_size]``: a SimbaV2-style hyperspherical residual trunk.

  Follows Lee, Lee, Kim, Kim, Shin, Choo, Yun, Kim, Seo, Choo (2025), "Hyperspherical
  Normalization for Scalable Deep Reinforcement Learning" (SimbaV2, ICML), arXiv:2502.15280:

  * input: ``x~ = [x, 3]`` (the shift constant ``c_shift = 3``), ``x^ = x~ / |x~|``,
    ``h_0 = normalize(s_in * (x^ @ w_hat_in))``;
  * ``depth / 4`` blocks (:func:`simba_block`): the residual stream stays on the unit sphere
    and each block moves it towards its normalised MLP output by a learned per-unit step
    ``alpha`` (LERP), ``h' = normalize(h + alpha (h_tilde - h))``, ``alpha`` starting at
    ``1 / (blocks + 1)``;
  * output: ``s_out * (h @ w_hat_out) + b_out`` with a learned per-output scale ``s_out``
    starting at ``sqrt(width)`` (so outputs start with unit scale) and a bias.

  Every weight matrix enters as ``w_hat`` with unit-norm columns, and learned scales use the
  paper's ``s = p * init / scale`` parametrisation (:class:`SimbaScales`; hidden ``init = scale =
  sqrt(2 / width)``, LERP ``alpha_scale = 1 / sqrt(width)``).

  Simplifications (all deliberate, documented in FIDELITY.md): weights are normalised in the
  forward pass (weight normalisation without a gain: the gradient is projected onto the
  sphere's tangent space) instead of being re-projected onto the sphere after each optimiser
  update, which would need an optimiser hook in every agent; a block keeps this project's four
  width-``W`` Dense layers (three scaled ReLU layers and a fourth without activation) instead of
  SimbaV2's two (a 4x-wide hidden layer), so ``depth`` counts Dense layers in blocks for both
  block types and the stacked ``[blocks, 4, W, W]`` weights and ``lax.scan`` stay; no running
  observation normalisation and no distributional critic head (the heads are this project's:
  CRL encoders, tanh-Gaussian actor). Weights are initialised as the residual trunk's
  (variance scaling, uniform; only their directions matter). XLA only: ``kernel_impl`` =
  ``pallas``/``interpret`` raise, ``auto`` uses XLA.
  """

  def __init__(self, depth: int, width: int, output_size: int, *, kernel_impl: str = "auto",
               remat: str = "none", matmul_dtype: str = "float32", name: str | None = None):
    super().__init__(name=name)
    if depth <= 0 or depth % 4:
      raise ValueError(f"depth must be a positive multiple of 4, got {depth}")
    if kernel_impl in ("pallas", "interpret"):
      raise ValueError(f"network.block=simba has no Pallas kernel: kernel_impl={kernel_impl!r} "
                       "is not supported (use xla or auto)")
    self.depth, self.width, self.output_size = depth, width, output_size
    self.remat = {"none": False, False: False, "block": True, True: True,
                  "nested": "nested"}[remat]
    self.matmul_dtype = None if matmul_dtype == "float32" else jnp.dtype(matmul_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    w = self.width
    n = self.depth // kernels.residual_block.LAYERS_PER_BLOCK
    sc = SimbaScales.for_trunk(n, w)
    const = hk.initializers.Constant
    x = jnp.concatenate([x, jnp.full(x.shape[:-1] + (1,), SIMBA_C_SHIFT, x.dtype)], axis=-1)
    x = l2_normalize(x)
    w_in = hk.get_parameter("input_w", (x.shape[-1], w), init=_stacked_uniform(x.shape[-1]))
    s_in = hk.get_parameter("input_scaler", (w,), init=const(sc.hidden_scale))
    h = l2_normalize(sc.hidden(s_in) * _unit_dot(x, w_in, self.matmul_dtype))
    blocks = {
        "w": hk.get_parameter("blocks_w", (n, 4, w, w), init=_stacked_uniform(w)),
        "scaler": hk.get_parameter("blocks_scaler", (n, SIMBA_HIDDEN_LAYERS, w),
                                   init=const(sc.hidden_scale)),
        "alpha": hk.get_parameter("blocks_alpha", (n, w), init=const(sc.alpha_scale)),
    }
    h = simba_stack(h, blocks, sc, remat=self.remat, matmul_dtype=self.matmul_dtype)
    w_out = hk.get_parameter("output_w", (w, self.output_size), init=_stacked_uniform(w))
    s_out = hk.get_parameter("output_scaler", (self.output_size,), init=const(sc.output_scale))
    b_out = hk.get_parameter("output_b", (self.output_size,), init=jnp.zeros)
    return sc.output(s_out) * _unit_dot(h, w_out, self.matmul_dtype) + b_out


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  state_size: int
  goal_size: int
  action_size: int
  actor_depth: int
  critic_depth: int
  width: int
  repr_dim: int = 64
  kernel_impl: str = "auto"
  remat: str = "none"  # none | block | nested
  matmul_dtype: str = "float32"   # "bfloat16": bf16 matmul operands in the residual blocks
  block: str = "residual"   # residual (published) | simba (SimbaTrunk: hyperspherical, XLA only)
  energy: str = "l2"        # the critic's loss.energy: "iqe" adds its learned mixing weight


def network_spec(config, sizes) -> "NetworkSpec":
  """The :class:`NetworkSpec` a run's ``config`` asks for (``network.*``, and the critic's
  ``loss.energy``), for an env of ``sizes`` (``state_size``, ``goal_size``, ``action_size``)."""
  from deepcrl_core import config as config_lib  # pylint: disable=g-import-not-at-top
  net = config.network
  return NetworkSpec(
      state_size=sizes.state_size, goal_size=sizes.goal_size, action_size=sizes.action_size,
      actor_depth=config_lib.actor_depth(config), critic_depth=config_lib.critic_depth(config),
      width=net.width, repr_dim=net.repr_dim, kernel_impl=net.kernel_impl, remat=net.remat,
      matmul_dtype=net.matmul_dtype, block=net.block, energy=config.loss.energy)


class Networks(NamedTuple):
  """Pure functions: ``actor.apply(params, obs) -> (mean, log_std)``;
  ``critic.apply(params, state, action, goal) -> (phi, psi)``."""
  actor: hk.Transformed
  critic: hk.Transformed
  spec: NetworkSpec


def make_trunk(spec: NetworkSpec, depth: int, output_size: int, name: str) -> hk.Module:
  """The residual trunk of ``spec`` (block type, width, kernels, remat, matmul dtype) at
  ``depth`` with ``output_size`` outputs: what every network of every agent is built from (call
  it inside an ``hk.transform``). ``spec.block``: ``residual`` -> :class:`ResidualTrunk`,
  ``simba`` -> :class:`SimbaTrunk`."""
  if spec.block == "simba":
    return SimbaTrunk(depth, spec.width, output_size, kernel_impl=spec.kernel_impl,
                      remat=spec.remat, matmul_dtype=spec.matmul_dtype, name=name)
  if spec.block != "residual":
    raise ValueError(f"network.block must be one of {BLOCKS}, got {spec.block!r}")
  return ResidualTrunk(depth, spec.width, output_size, kernel_impl=spec.kernel_impl,
                       remat=spec.remat, matmul_dtype=spec.matmul_dtype, name=name)


ENERGY_MODULE = "energy"


def energy_params(critic_params) -> dict:
  """The learned parameters of the critic's energy (``{}`` unless it has some: IQE's
  ``iqe_raw_alpha``), as :func:`make_networks` stores them in ``critic_params["energy"]``."""
  return dict(critic_params.get(ENERGY_MODULE, {})) if hasattr(critic_params, "get") else {}


def make_networks(spec: NetworkSpec) -> Networks:
  def actor_fn(obs):
    out = make_trunk(spec, spec.actor_depth, 2 * spec.action_size, "actor")(obs)
    mean, raw_log_std = jnp.split(out, 2, axis=-1)
    # tanh rescaling of log std into [LOG_STD_MIN, LOG_STD_MAX].
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw_log_std) + 1.0)
    return mean, log_std

  def critic_fn(state, action, goal):
    phi = make_trunk(spec, spec.critic_depth, spec.repr_dim, "sa_encoder")(
        jnp.concatenate([state, action], axis=-1))
    psi = make_trunk(spec, spec.critic_depth, spec.repr_dim, "goal_encoder")(goal)
    if spec.energy == "iqe":  # IQE-maxmean's mixing weight, pre-sigmoid (deepcrl_core.energies)
      from deepcrl_core import energies  # pylint: disable=g-import-not-at-top
      with hk.experimental.name_scope(ENERGY_MODULE):
        hk.get_parameter("iqe_raw_alpha", (), init=hk.initializers.Constant(
            energies.IQE_RAW_ALPHA_INIT))
    return phi, psi

  return Networks(hk.without_apply_rng(hk.transform(actor_fn)),
                  hk.without_apply_rng(hk.transform(critic_fn)), spec)


def init_params(networks: Networks, key: jax.Array):
  """Returns ``(actor_params, critic_params)``."""
  s = networks.spec
  k_actor, k_critic = jax.random.split(key)
  obs = jnp.zeros((1, s.state_size + s.goal_size))
  actor_params = networks.actor.init(k_actor, obs)
  critic_params = networks.critic.init(k_critic, jnp.zeros((1, s.state_size)),
                                       jnp.zeros((1, s.action_size)), jnp.zeros((1, s.goal_size)))
  return actor_params, critic_params


# --- tanh-Gaussian policy -------------------------------------------------------------------

TANH_CORRECTIONS = ("published", "exact")
# The published actor loss subtracts log(1 - tanh(u)^2 + eps) with this eps.
PUBLISHED_TANH_EPS = 1e-6


def tanh_gaussian_sample(key, mean, log_std, correction: str = "exact"):
  """Samples ``a = tanh(u)``, ``u ~ N(mean, exp(log_std))``; returns ``(a, log_prob)``
  (``correction``: see :func:`tanh_gaussian_log_prob`)."""
  u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
  return jnp.tanh(u), tanh_gaussian_log_prob(u, mean, log_std, correction)


def tanh_gaussian_log_prob(u, mean, log_std, correction: str = "exact"):
  """Log density of ``tanh(u)`` where ``u ~ N(mean, exp(log_std))`` (summed over the last axis).

  ``correction`` is the change-of-variables term subtracted from ``log N(u)``:

  * ``"exact"``: ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, the true density,
    unbounded above as actions saturate.
  * ``"published"``: ``log(1 - tanh(u)^2 + 1e-6)`` with ``tanh`` in float32, as in the paper's
    code (github.com/wang-kevin3290/scaling-crl, ``train.py``, actor loss): at most
    ``-log(1e-6) ≈ 13.8`` per action dimension, so the entropy estimate that drives alpha stays
    bounded when actions saturate.
  """
  if correction not in TANH_CORRECTIONS:
    raise ValueError(f"correction must be one of {TANH_CORRECTIONS}, got {correction!r}")
  z = (u - mean) * jnp.exp(-log_std)
  normal = -0.5 * jnp.square(z) - log_std - 0.5 * math.log(2 * math.pi)
  if correction == "published":
    log_det = jnp.log(1.0 - jnp.square(jnp.tanh(u)) + PUBLISHED_TANH_EPS)
  else:
    log_det = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
  return jnp.sum(normal - log_det, axis=-1)


def deterministic_action(mean):
  return jnp.tanh(mean)


def param_count(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
