"""Selection of a kernel implementation (``impl``) shared by every op in ``kernels``."""

from __future__ import annotations

import jax

IMPLS = ("auto", "pallas", "interpret", "xla")


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
