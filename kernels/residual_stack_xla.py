"""The stacked residual blocks on the XLA path: one ``lax.scan`` that saves little for backward.

Plain autodiff of a scanned block keeps every intermediate its backward pass reads -- about ten
``[batch, width]`` arrays per layer (matmul output, centred values, reciprocal std, normalised
values, sigmoid, Swish output, ...) -- and a scan stores each of them as its own
``[blocks, batch, width]`` output buffer. XLA:CPU zero-fills and copies every one of those
buffers before the loop and writes and reads them once per iteration, so at width 256 the
backward loop ran at about half the FLOP rate of the same network unrolled (profiling/RESULTS.md,
"Step time vs depth").

Here each block is a ``jax.checkpoint`` whose policy saves only the four matmul outputs (the
pre-LayerNorm ``h @ w + b`` of each layer, tagged :data:`MATMUL_OUTPUT` in
:func:`deepcrl_kernels.residual_block.layer_reference`) besides the block input: 5 arrays of
``[batch, width]`` per block instead of ~40. The backward pass recomputes LayerNorm and Swish
from them (O(batch * width) per layer, against the O(batch * width^2) of its two matmuls) and
never recomputes a matmul. Values are those of the reference; gradients agree with plain
autodiff to float32 rounding (``tests/core/test_trunk_loop.py``).

``unroll`` is the scan's unroll factor (blocks per loop iteration). The default, 1, keeps compile
time flat in depth; larger factors grow compile time roughly linearly and measured no faster on
CPU once the residuals are lean (see RESULTS.md). :func:`scan_unroll` changes the default for
traces made inside it (used to count FLOPs of fully unrolled steps: XLA's cost analysis counts a
loop body once whatever its trip count).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Mapping, Union

import jax

from deepcrl_kernels import residual_block as rb

Unroll = Union[int, bool]

DEFAULT_UNROLL = 1
_state = threading.local()


def _default_unroll() -> Unroll:
  return getattr(_state, "unroll", DEFAULT_UNROLL)


@contextlib.contextmanager
def scan_unroll(unroll: Unroll) -> Iterator[None]:
  """Within the context, XLA-path stacks traced without an explicit ``unroll`` use this one.

  ``True`` unrolls every block (compile time then grows with depth). Trace-time only: a
  function jitted and traced before keeps its compiled loop; trace a fresh one inside.
  """
  check_unroll(unroll)
  previous = _default_unroll()
  _state.unroll = unroll
  try:
    yield
  finally:
    _state.unroll = previous


def check_unroll(unroll) -> Unroll:
  if isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1):
    return unroll
  raise ValueError(f"unroll must be a positive int or a bool, got {unroll!r}")


def lean_block(matmul_dtype=None):
  """``block(x, params) -> y``: the reference block, saving only its matmul outputs for backward."""
  def block(x, params: Mapping[str, jax.Array]):
    return rb.residual_block_reference(x, params, matmul_dtype)
  return jax.checkpoint(
      block, policy=jax.checkpoint_policies.save_only_these_names(rb.MATMUL_OUTPUT))


def residual_stack(x, stacked_params, *, remat=False, matmul_dtype=None, unroll=None):
  """Applies ``n`` residual blocks (params with a leading axis ``n``) on the XLA path.

  ``remat`` as in :func:`deepcrl_kernels.fused_residual_stack`: ``False`` keeps each block's
  input and matmul outputs; ``True``/``"block"`` keeps block inputs only and recomputes each
  block's forward in the backward pass; ``"nested"`` keeps the inputs of groups of ~sqrt(n)
  blocks and, while one group's backward runs, its block inputs. ``unroll``: blocks per loop
  iteration (``None``: the default, see :func:`scan_unroll`).
  """
  unroll = check_unroll(_default_unroll() if unroll is None else unroll)
  block = lean_block(matmul_dtype)
  if remat:
    block = jax.checkpoint(block)

  def run_blocks(h, params):
    return jax.lax.scan(lambda h, p: (block(h, p), None), h, params, unroll=unroll)[0]

  n = stacked_params["w"].shape[0]
  group = rb.nested_group_size(n) if remat == "nested" else 1
  if group == 1:
    return run_blocks(x, stacked_params)
  grouped = jax.tree.map(lambda a: a.reshape((n // group, group) + a.shape[1:]), stacked_params)
  run_group = jax.checkpoint(run_blocks)
  return jax.lax.scan(lambda h, p: (run_group(h, p), None), x, grouped, unroll=unroll)[0]
