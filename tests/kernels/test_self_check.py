"""impl="auto" on a GPU uses a Pallas kernel only after its one-time self-check passes.

No GPU here: the tests pretend to be on one (``_dispatch.on_gpu``) and let the self-check run
the kernels in the Pallas interpreter (``_dispatch.CHECK_IMPL``); a compile failure and a
wrong result are simulated by replacing the Pallas entry point the check calls.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deepcrl_kernels as kernels
from deepcrl_kernels import _dispatch, infonce_pallas, residual_block_pallas
from kernel_refs64 import block_params, needs_triton

pytestmark = needs_triton

WIDTH = 32


@pytest.fixture(autouse=True)
def pretend_gpu(monkeypatch):
  monkeypatch.setattr(_dispatch, "on_gpu", lambda: True)
  monkeypatch.setattr(_dispatch, "CHECK_IMPL", "interpret")
  monkeypatch.delenv(_dispatch.SELF_CHECK_ENV, raising=False)
  _dispatch.clear_self_checks()
  yield
  _dispatch.clear_self_checks()


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.name == "deepcrl_kernels" and r.levelno == logging.WARNING]


def _block_inputs(batch=5):
  x = jax.random.normal(jax.random.PRNGKey(1), (batch, WIDTH))
  return x, block_params(jax.random.PRNGKey(2), WIDTH)


def _compile_failure(*args, **kwargs):
  raise RuntimeError("simulated Triton compile failure: out of shared memory")


def test_failed_block_compile_warns_once_and_uses_xla(monkeypatch, caplog):
  monkeypatch.setattr(residual_block_pallas, "residual_block", _compile_failure)
  x, p = _block_inputs()
  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    y = kernels.fused_residual_block(x, p, impl="auto")
    y_jit = jax.jit(lambda x, p: kernels.fused_residual_block(x, p, impl="auto"))(x, p)
    g = jax.grad(lambda x: jnp.sum(kernels.fused_residual_block(x, p, impl="auto")))(x)
  want = kernels.residual_block_reference(x, p)
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y_jit, want, rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(g))
  [msg] = _warnings(caplog)  # one warning, however often the configuration is used
  assert "fused_residual_block" in msg and f"width={WIDTH}" in msg and "BlockConfig(" in msg
  assert "simulated Triton compile failure" in msg and "'xla'" in msg
  # An explicit impl="pallas" does not hide the failure.
  with pytest.raises(RuntimeError, match="simulated Triton compile failure"):
    kernels.fused_residual_block(x, p, impl="pallas")


def test_wrong_block_result_is_caught(monkeypatch, caplog):
  real = residual_block_pallas.residual_block

  def one_bad_row_tile(x, params, **kwargs):  # what a race on one tile could look like
    y = real(x, params, **kwargs)
    return y.at[-3:].multiply(0.97)

  monkeypatch.setattr(residual_block_pallas, "residual_block", one_bad_row_tile)
  x, p = _block_inputs()
  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    # First use inside jit(grad(...)): the check runs while the caller is being traced.
    g = jax.jit(jax.grad(lambda x: jnp.sum(kernels.fused_residual_block(x, p, impl="auto"))))(x)
    y = kernels.fused_residual_block(x, p, impl="auto")
  np.testing.assert_allclose(y, kernels.residual_block_reference(x, p), rtol=1e-6, atol=1e-6)
  g_ref = jax.grad(lambda x: jnp.sum(kernels.residual_block_reference(x, p)))(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5)
  [msg] = _warnings(caplog)
  assert "differs from the XLA reference" in msg and "y " in msg


def test_passing_block_check_selects_pallas_once(monkeypatch, caplog):
  calls = []
  real = residual_block_pallas.self_check

  def counted(*args, **kwargs):
    check = real(*args, **kwargs)
    return _dispatch.SelfCheck(check.key, check.describe,
                               lambda impl: calls.append(impl) or check.run(impl))

  monkeypatch.setattr(residual_block_pallas, "self_check", counted)
  x, p = _block_inputs()

  def select(batch):
    return _dispatch.select_impl(
        "auto", "fused_residual_block", lambda: None,
        lambda: residual_block_pallas.self_check(x[:batch], p))

  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    assert select(5) == "pallas" and select(5) == "pallas"
  assert calls == ["interpret"] and not _warnings(caplog)
  [(key, result)] = _dispatch.self_check_results().items()
  assert result is None and key[0] == "fused_residual_block"
  # Another configuration (bf16 matmuls) is checked on its own.
  assert _dispatch.select_impl(
      "auto", "fused_residual_block", lambda: None,
      lambda: residual_block_pallas.self_check(x, p, matmul_dtype=jnp.bfloat16)) == "pallas"
  assert len(calls) == 2


def test_self_check_can_be_switched_off(monkeypatch):
  monkeypatch.setenv(_dispatch.SELF_CHECK_ENV, "0")
  monkeypatch.setattr(residual_block_pallas, "residual_block", _compile_failure)
  x, p = _block_inputs()
  assert _dispatch.select_impl(
      "auto", "fused_residual_block", lambda: None,
      lambda: residual_block_pallas.self_check(x, p)) == "pallas"


def _infonce_inputs():
  phi = jax.random.normal(jax.random.PRNGKey(3), (9, 16))
  return phi, phi + 0.3 * jax.random.normal(jax.random.PRNGKey(4), (9, 16))


def test_failed_infonce_compile_falls_back(monkeypatch, caplog):
  phi, psi = _infonce_inputs()
  want, _ = kernels.infonce_reference(phi, psi, logsumexp_penalty=0.1)
  monkeypatch.setattr(infonce_pallas, "infonce", _compile_failure)
  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    loss, _ = kernels.infonce_loss(phi, psi, logsumexp_penalty=0.1, impl="auto")
    kernels.infonce_loss(phi, psi, logsumexp_penalty=0.1, impl="auto")
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  [msg] = _warnings(caplog)
  assert "infonce_loss" in msg and "dim=16" in msg and "InfoNCEConfig(" in msg
  assert "simulated Triton compile failure" in msg
  with pytest.raises(RuntimeError, match="simulated"):
    kernels.infonce_loss(phi, psi, impl="pallas")


def test_wrong_infonce_gradient_is_caught(monkeypatch, caplog):
  real = infonce_pallas.infonce

  def wrong_dpsi(phi, psi, **kwargs):  # the right loss value, a wrong gradient for psi
    loss, aux = real(phi, psi, **kwargs)
    extra = 0.05 * jnp.sum(psi * psi)
    return loss + extra - jax.lax.stop_gradient(extra), aux

  monkeypatch.setattr(infonce_pallas, "infonce", wrong_dpsi)
  phi, psi = _infonce_inputs()
  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    loss, _ = kernels.infonce_loss(phi, psi, energy="dot", logsumexp_penalty=0.1, impl="auto")
  want, _ = kernels.infonce_reference(phi, psi, energy="dot", logsumexp_penalty=0.1)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  [msg] = _warnings(caplog)
  assert "energy dot" in msg and "dpsi differs from the XLA reference" in msg


def test_real_infonce_kernels_pass_their_check_inside_a_trace():
  selected = []

  def f(a):
    selected.append(_dispatch.select_impl(
        "auto", "infonce_loss", lambda: None,
        lambda: infonce_pallas.self_check(a, a, "l2", "forward")))
    return 2 * a

  jax.jit(f)(jnp.zeros((300, 64)))
  assert selected == ["pallas"]
  assert list(_dispatch.self_check_results().values()) == [None]


def test_auto_keeps_xla_above_the_modelled_width(monkeypatch, caplog):
  monkeypatch.setattr(residual_block_pallas, "self_check", lambda *a, **k: pytest.fail("ran"))
  x = jnp.zeros((8, 512))

  def select(config=None):
    return _dispatch.select_impl(
        "auto", "fused_residual_block", lambda: None,
        lambda: residual_block_pallas.self_check(x, None),
        lambda: residual_block_pallas.auto_prefers_xla(x, config))

  with caplog.at_level(logging.INFO, logger="deepcrl_kernels"):
    assert select() == "xla"
  assert "modelled no faster than XLA at width 512" in caplog.text and not _warnings(caplog)
  with pytest.raises(pytest.fail.Exception):  # an explicit config asks for the kernels
    select(residual_block_pallas.BlockConfig(block_rows=16))
  assert residual_block_pallas.auto_prefers_xla(jnp.zeros((8, 256))) is None


def test_stack_under_auto_uses_the_same_check(monkeypatch, caplog):
  monkeypatch.setattr(residual_block_pallas, "residual_block", _compile_failure)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, WIDTH))
  stacked = block_params(jax.random.PRNGKey(2), WIDTH, blocks=3)

  def loss(x, p):
    return jnp.sum(kernels.fused_residual_stack(x, p, impl="auto") ** 2)

  with caplog.at_level(logging.WARNING, logger="deepcrl_kernels"):
    got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, stacked)
    jax.jit(loss)(x, stacked)
  want = jax.value_and_grad(lambda x, p: jnp.sum(kernels.fused_residual_stack(
      x, p, impl="xla") ** 2), argnums=(0, 1))(x, stacked)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  [msg] = _warnings(caplog)
  assert "simulated Triton compile failure" in msg
