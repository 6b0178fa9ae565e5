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
  """Variance-scaling(1/3, fan_in, uniform) for weights stacked as ``[..., fan_in, fan_out]``."""
  limit = math.sqrt(3.0 * INIT_SCALE / fan_in)
  return hk.initializers.RandomUniform(-limit, limit)


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


class Networks(NamedTuple):
  """Pure functions: ``actor.apply(params, obs) -> (mean, log_std)``;
  ``critic.apply(params, state, action, goal) -> (phi, psi)``."""
  actor: hk.Transformed
  critic: hk.Transformed
  spec: NetworkSpec


def make_trunk(spec: NetworkSpec, depth: int, output_size: int, name: str) -> hk.Module:
  """The residual trunk of ``spec`` (width, kernels, remat, matmul dtype) at ``depth`` with
  ``output_size`` outputs: what every network of every agent is built from (call it inside an
  ``hk.transform``)."""
  return ResidualTrunk(depth, spec.width, output_size, kernel_impl=spec.kernel_impl,
                       remat=spec.remat, matmul_dtype=spec.matmul_dtype, name=name)


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
