"""Selection of a kernel implementation (``impl``) shared by every op in ``kernels``."""

from __future__ import annotations

import logging
from typing import Callable

import jax

IMPLS = ("auto", "pallas", "interpret", "xla")
logger = logging.getLogger("deepcrl_kernels")


def check_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  return impl


def resolve_impl(impl: str) -> str:
  """Maps ``"auto"`` to ``"pallas"`` on GPU and ``"xla"`` elsewhere."""
  check_impl(impl)
  if impl == "auto":
    return "pallas" if jax.default_backend() == "gpu" else "xla"
  return impl


def select_impl(impl: str, op: str, unsupported: Callable[[], str | None]) -> str:
  """Resolves ``impl`` for one call of ``op``, checking the Pallas path can take its inputs.

  ``unsupported()`` returns why the Pallas path cannot run these inputs, or None. Then an
  explicit ``"pallas"``/``"interpret"`` raises ``ValueError`` with that reason, while
  ``"auto"`` falls back to ``"xla"`` with a logged warning (at trace time, once per trace).
  """
  resolved = resolve_impl(impl)
  if resolved in ("pallas", "interpret"):
    reason = unsupported()
    if reason:
      if impl != "auto":
        raise ValueError(f"{op}(impl={impl!r}): {reason}")
      logger.warning("%s: falling back to impl='xla' because %s", op, reason)
      return "xla"
  return resolved
