"""Shared, cached compiled env functions for the env tests.

MJX compiles cost 5-20 s each on a small CPU, so each env is compiled at most once per test
session: ``compiled_env(name, **env_kwargs)`` returns the env with a jitted batched ``reset`` and a jitted
``run(state, key, n, action_scale, action_offset)`` that takes ``n`` (a traced count, so any
``n`` reuses one compile) training steps (episode limit + auto-reset + vmap) with actions
``action_offset + action_scale * U(-1, 1)`` and returns the final state and per-run checks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import deepcrl_core  # noqa: F401  (CPU XLA flag)
import jax
import jax.numpy as jnp
import pytest

from deepcrl_core import envs

NUM_ENVS = 4


@dataclasses.dataclass
class CompiledEnv:
  name: str
  env: envs.Env
  train_env: envs.Env
  reset: Callable
  run: Callable

  def step(self, state, action_scale=1.0, seed=0, n=1, action_offset=None):
    """``n`` training steps with random actions times ``action_scale`` (0: zero action)."""
    if action_offset is None:
      action_offset = jnp.zeros(self.env.action_size)
    return self.run(state, jax.random.PRNGKey(seed), n, action_scale,
                    jnp.asarray(action_offset, jnp.float32))[0]


def _make_run(env, train_env):
  """``run(state, key, n, action_scale) -> (state, checks)``; ``checks``: ``finite`` (obs and
  qacc finite at every step), ``consistent`` (success == dist < radius at every step) and
  ``dones`` ([num_envs] episode ends)."""

  def run(state, key, n, action_scale, action_offset):
    batch = state.done.shape[0]

    def body(i, carry):
      state, finite, consistent, dones = carry
      k = jax.random.fold_in(key, i)
      action = action_offset + action_scale * jax.random.uniform(
          k, (batch, env.action_size), minval=-1.0, maxval=1.0)
      state = train_env.step(state, action)
      finite &= jnp.all(jnp.isfinite(state.obs)) & jnp.all(jnp.isfinite(state.data.qacc))
      consistent &= jnp.all(state.metrics["success"] ==
                            (state.metrics["dist"] < env.success_radius).astype(jnp.float32))
      return state, finite, consistent, dones + state.done

    init = (state, jnp.array(True), jnp.array(True), jnp.zeros_like(state.done))
    state, finite, consistent, dones = jax.lax.fori_loop(0, n, body, init)
    # The episode wrapper's step makes info["truncation"] weakly typed (reset does not); drop
    # weak types so that feeding the result back in does not recompile.
    state = jax.tree.map(lambda x: x.astype(x.dtype), state)
    return state, {"finite": finite, "consistent": consistent, "dones": dones}

  jitted = jax.jit(run)

  def run_with_default_offset(state, key, n, action_scale, action_offset=None):
    if action_offset is None:
      action_offset = jnp.zeros(env.action_size, jnp.float32)
    return jitted(state, key, n, action_scale, action_offset)

  return run_with_default_offset


@functools.lru_cache(maxsize=None)
def _compile(name: str, **kwargs) -> CompiledEnv:
  env = envs.make(name, **kwargs)
  train_env = envs.wrap_for_training(env, env.episode_length)
  return CompiledEnv(name, env, train_env, jax.jit(train_env.reset), _make_run(env, train_env))


@pytest.fixture(scope="session")
def compiled_env():
  return _compile
