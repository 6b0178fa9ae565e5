"""Selection of a kernel implementation (``impl``) shared by every op in ``kernels``.

``impl="auto"`` on a GPU uses a Pallas kernel only after a one-time self-check in this process
for that kernel and configuration (see :class:`SelfCheck`): the kernel is compiled, run forward
and backward on a small input and compared with the XLA reference at TF32 tolerance. A kernel
that fails to compile or run, or disagrees, is reported by one logged warning naming the op,
the shape, the configuration and the reason, and that configuration uses ``"xla"`` for the
rest of the process. An explicit ``impl="pallas"`` skips the check and fails loudly.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
from typing import Callable, Hashable

import jax
import numpy as np

from deepcrl_kernels import _pallas_common as common

IMPLS = ("auto", "pallas", "interpret", "xla")
logger = logging.getLogger("deepcrl_kernels")

# Set to "0" to trust the Pallas kernels under impl="auto" without the self-check.
SELF_CHECK_ENV = "DEEPCRL_KERNELS_SELF_CHECK"
# What the self-check compiles and runs. Tests set "interpret" (and pretend to be on a GPU) to
# exercise the check on a CPU.
CHECK_IMPL = "pallas"

_self_check_results: dict[Hashable, str | None] = {}


def check_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  return impl


def on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def resolve_impl(impl: str) -> str:
  """Maps ``"auto"`` to ``"pallas"`` on GPU and ``"xla"`` elsewhere (before any self-check)."""
  check_impl(impl)
  if impl == "auto":
    return "pallas" if on_gpu() else "xla"
  return impl


@dataclasses.dataclass(frozen=True)
class SelfCheck:
  """A one-time check that a Pallas kernel configuration computes what the reference does.

  Attributes:
    key: identifies the kernel and configuration (everything that changes the compiled
      kernels: widths, dtypes, tiles, options); checked once per process.
    describe: the shape and configuration in words, for the warning.
    run: ``run(impl) -> None`` when the kernels agree with the XLA reference, else the reason;
      may raise (a compile or launch failure).
  """
  key: Hashable
  describe: str
  run: Callable[[str], str | None]


def self_check_failure(op: str, check: SelfCheck) -> str | None:
  """Runs ``check`` once per process and ``(op, check.key)``; returns why it failed, or None."""
  if os.environ.get(SELF_CHECK_ENV, "1") == "0":
    return None
  key = (op, check.key)
  if key in _self_check_results:
    return _self_check_results[key]
  try:
    # A fresh thread has no trace context: the check runs eagerly even when this call is
    # being traced (jit, grad, scan), and its own kernels trace as they would at top level.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kernel-self-check") as ex:
      reason = ex.submit(check.run, CHECK_IMPL).result()
  except Exception as e:  # pylint: disable=broad-except  (any failure means: do not use it)
    first = (str(e).strip().splitlines() or [""])[0]
    reason = f"it failed to compile or run ({type(e).__name__}: {first[:300]})"
  _self_check_results[key] = reason
  if reason:
    logger.warning("%s: the Pallas kernel failed its self-check at %s: %s; impl='auto' uses "
                   "'xla' for this configuration in this process", op, check.describe, reason)
  else:
    logger.info("%s: the Pallas kernel passed its self-check at %s", op, check.describe)
  return reason


def self_check_results() -> dict[Hashable, str | None]:
  """``{(op, key): None (passed) or the failure reason}`` of the checks run in this process."""
  return dict(_self_check_results)


def clear_self_checks() -> None:
  """Forgets every self-check result (the next ``auto`` call checks again)."""
  _self_check_results.clear()


def max_relative_error(got, want) -> float:
  """``max |got - want| / max |want|`` (NaN-aware: any non-finite ``got`` gives ``inf``)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if not np.all(np.isfinite(got)):
    return float("inf")
  scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-30)
  return float(np.max(np.abs(got - want))) / scale if got.size else 0.0


def compare(named_pairs, tolerances) -> str | None:
  """``named_pairs``: ``[(name, got, want, kind)]``; ``tolerances[kind]`` is the allowed
  :func:`max_relative_error`. Returns the first violation in words, or None."""
  for name, got, want, kind in named_pairs:
    if np.shape(got) != np.shape(want):
      return f"{name} has shape {np.shape(got)}, the reference {np.shape(want)}"
    err = max_relative_error(got, want)
    if not err <= tolerances[kind]:
      return (f"{name} differs from the XLA reference by {err:.2e} of its scale "
              f"(tolerance {tolerances[kind]:.0e})")
  return None


def select_impl(impl: str, op: str, unsupported: Callable[[], str | None],
                self_check: Callable[[], SelfCheck] | None = None,
                prefer_xla: Callable[[], str | None] | None = None) -> str:
  """Resolves ``impl`` for one call of ``op``, checking the Pallas path can take its inputs.

  ``unsupported()`` returns why the Pallas path cannot run these inputs, or None (a jax
  without the Pallas Triton backend is such a reason for ``"pallas"``). Then an
  explicit ``"pallas"``/``"interpret"`` raises ``ValueError`` with that reason, while
  ``"auto"`` falls back to ``"xla"`` with a logged warning (at trace time, once per trace).
  Under ``"auto"`` on a GPU, ``prefer_xla()`` may name a reason to keep XLA's path where the
  kernels are not expected to win (logged at INFO: a choice, not a failure), and otherwise
  ``self_check()`` builds the :class:`SelfCheck` that must pass (once per process and
  configuration) before the Pallas kernels are used.
  """
  resolved = resolve_impl(impl)
  if resolved in ("pallas", "interpret"):
    reason = unsupported() or (common.TRITON_MISSING if resolved == "pallas" else None)
    if reason:
      if impl != "auto":
        raise ValueError(f"{op}(impl={impl!r}): {reason}")
      logger.warning("%s: falling back to impl='xla' because %s", op, reason)
      return "xla"
    if impl == "auto" and prefer_xla is not None:
      why = prefer_xla()
      if why:
        logger.info("%s: impl='auto' uses 'xla' because %s", op, why)
        return "xla"
    if impl == "auto" and self_check is not None and self_check_failure(op, self_check()):
      return "xla"
  return resolved
