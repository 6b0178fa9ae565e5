"""CRL losses as pure functions of parameters and a batch of relabelled transitions.

* critic: InfoNCE over the in-batch energy matrix (``loss.variant``: forward / backward /
  symmetric; ``loss.energy``: l2 = ``-||phi - psi||`` (default), l2_sq, dot, cosine, or the
  quasimetrics mrn and iqe = ``-d(phi -> psi)``) plus ``logsumexp_penalty * mean(logsumexp^2)``.
  l2 / l2_sq / dot / cosine go through :func:`kernels.infonce_loss` (fused on GPU); mrn and iqe
  build the ``[B, B]`` logits in XLA (:mod:`deepcrl_core.energies`, row blocks) and apply
  :func:`energies.infonce_from_logits`, the same loss and aux.
* actor: ``mean(alpha * log pi(a|s,g) - Q(s, a, g))`` with ``a ~ pi`` and ``Q`` the energy of
  ``phi(s, a)`` against ``psi(g)`` for the batch's own goals; ``log pi`` uses the published
  bounded tanh correction unless ``tanh_correction="exact"``.
* alpha: ``mean(alpha * stop_grad(-log pi - target_entropy))``, ``alpha = exp(log_alpha)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import deepcrl_kernels as kernels
from deepcrl_core import energies as energies_lib
from deepcrl_core import networks as nets


class LossConfig(NamedTuple):
  energy: str = "l2"
  variant: str = "forward"
  logsumexp_penalty: float = 0.1
  target_entropy: float = -1.0
  kernel_impl: str = "auto"
  tanh_correction: str = "published"   # networks.tanh_gaussian_log_prob: published | exact
  mrn_components: int = 1       # energy=mrn: groups averaged (1: Liu et al.; CMD-1's code: 16)
  iqe_component_dim: int = 16   # energy=iqe: entries per component (torchqmet's default)


def loss_config(config, action_size: int) -> LossConfig:
  """The CRL :class:`LossConfig` a run's ``config`` asks for, for an env of ``action_size``."""
  loss = config.loss
  return LossConfig(
      energy=loss.energy, variant=loss.variant, logsumexp_penalty=loss.logsumexp_penalty,
      target_entropy=-loss.target_entropy_scale * action_size,
      kernel_impl=config.network.kernel_impl, tanh_correction=loss.tanh_correction,
      mrn_components=loss.mrn_components, iqe_component_dim=loss.iqe_component_dim)


class Transitions(NamedTuple):
  """A batch: ``state [B, state_size]``, ``action [B, action_size]``, ``goal [B, goal_size]``."""
  state: jax.Array
  action: jax.Array
  goal: jax.Array

  @property
  def obs(self):
    return jnp.concatenate([self.state, self.goal], axis=-1)


def _normalize(x):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), -1, keepdims=True), 1e-12))


def _kernel_energy(energy: str, phi, psi):
  """Maps ``cosine`` onto the kernels' ``dot`` energy of normalised representations."""
  if energy == "cosine":
    return "dot", _normalize(phi), _normalize(psi)
  return energy, phi, psi


def energy(phi, psi, energy_name: str = "l2", params=None, cfg: "LossConfig | None" = None):
  """Row-wise energies ``[B]`` of ``phi [B, D]`` against ``psi [B, D]``.

  ``params``: the critic's energy parameters (:func:`networks.energy_params`; IQE's mixing
  weight); ``cfg``: the grouping of mrn / iqe (``LossConfig``'s defaults when None).
  """
  if energy_name in energies_lib.QUASIMETRICS:
    cfg = cfg or LossConfig(energy=energy_name)
    return energies_lib.energy_rows(energy_name, phi, psi, params,
                                    mrn_components=cfg.mrn_components,
                                    iqe_component_dim=cfg.iqe_component_dim)
  name, phi, psi = _kernel_energy(energy_name, phi, psi)
  return kernels.pairwise_energy(phi, psi, name)


def infonce(phi, psi, cfg: LossConfig, params=None):
  """InfoNCE of ``phi`` against ``psi`` with ``cfg``'s energy; ``(loss, aux)`` as
  :func:`kernels.infonce_loss`. ``params``: the critic's energy parameters (iqe)."""
  if cfg.energy in energies_lib.QUASIMETRICS:
    logits = energies_lib.energy_matrix(cfg.energy, phi, psi, params,
                                        mrn_components=cfg.mrn_components,
                                        iqe_component_dim=cfg.iqe_component_dim)
    return energies_lib.infonce_from_logits(logits, variant=cfg.variant,
                                            logsumexp_penalty=cfg.logsumexp_penalty)
  name, phi, psi = _kernel_energy(cfg.energy, phi, psi)
  return kernels.infonce_loss(phi, psi, energy=name, variant=cfg.variant,
                              logsumexp_penalty=cfg.logsumexp_penalty, impl=cfg.kernel_impl)


def critic_loss(critic_params, networks: nets.Networks, batch: Transitions, cfg: LossConfig):
  phi, psi = networks.critic.apply(critic_params, batch.state, batch.action, batch.goal)
  loss, aux = infonce(phi, psi, cfg, nets.energy_params(critic_params))
  metrics = {
      "critic_loss": loss,
      "critic_accuracy": aux["accuracy"],
      "logsumexp": jnp.mean(aux["logsumexp"]),
      "logits_pos": jnp.mean(aux["positive"]),
  }
  return loss, metrics


def actor_loss(actor_params, critic_params, log_alpha, networks: nets.Networks,
               batch: Transitions, key, cfg: LossConfig):
  mean, log_std = networks.actor.apply(actor_params, batch.obs)
  action, log_prob = nets.tanh_gaussian_sample(key, mean, log_std, cfg.tanh_correction)
  phi, psi = networks.critic.apply(critic_params, batch.state, action, batch.goal)
  q = energy(phi, psi, cfg.energy, nets.energy_params(critic_params), cfg)
  alpha = jnp.exp(jax.lax.stop_gradient(log_alpha))
  loss = jnp.mean(alpha * log_prob - q)
  return loss, {"actor_loss": loss, "entropy": -jnp.mean(log_prob), "q": jnp.mean(q),
                "log_prob": log_prob}


def alpha_loss(log_alpha, log_prob, target_entropy: float):
  alpha = jnp.exp(log_alpha)
  return jnp.mean(alpha * jax.lax.stop_gradient(-log_prob - target_entropy))
