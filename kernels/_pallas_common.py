"""Small helpers shared by the Pallas kernels (Triton lowering on GPU, interpreter on CPU).

Kept free of kernel math so a second lowering (Mosaic GPU) can reuse the per-tile helpers in
each op's module.
"""

from __future__ import annotations

import jax
from jax.experimental import pallas as pl

# The Pallas Triton backend: in jax 0.10 and 0.11 (deprecated there in favour of Mosaic GPU).
# A jax without it keeps every XLA path and the interpreter; impl="pallas" then says why not.
try:
  from jax.experimental.pallas import triton as pltriton
except ImportError as e:
  pltriton = None
  TRITON_MISSING = (f"this jax ({jax.__version__}) has no Pallas Triton backend "
                    f"(import jax.experimental.pallas.triton: {e})")
else:
  TRITON_MISSING = None

# Large finite stand-in for -inf: keeps exp(mask - max) == 0 without inf - inf = NaN.
MASK_VALUE = -0.7 * float(jax.numpy.finfo(jax.numpy.float32).max)


def triton_params(num_warps: int, num_stages: int, interpret: bool = False):
  """Compiler params that select the Triton lowering explicitly (jax 0.10 defaults to Mosaic);
  None in the interpreter when this jax has no Triton backend (the interpreter takes none)."""
  if pltriton is None:
    if interpret:
      return None
    raise RuntimeError(TRITON_MISSING)
  return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def block_barrier(interpret: bool) -> None:
  """Synchronises the threads of one program (``__syncthreads``) around global-memory scratch.

  The interpreter runs a program sequentially, so no barrier is needed (nor lowerable) there.
  """
  if not interpret:
    pltriton.debug_barrier()


def next_power_of_2(n: int) -> int:
  return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def is_power_of_2(n: int) -> bool:
  return n > 0 and (n & (n - 1)) == 0


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def chunk(start, size: int):
  """``pl.ds`` with an alignment hint for the Triton vectoriser."""
  return pl.ds(pl.multiple_of(start * size, size), size)


# Streaming multiprocessors assumed when no GPU is visible (lowering on a CPU): an H100 SXM.
DEFAULT_SM_COUNT = 132


def _first_gpu():
  """The first GPU device, or None when this process has none."""
  try:
    return jax.devices("gpu")[0]
  except (RuntimeError, IndexError):
    return None


def sm_count() -> int:
  """Streaming multiprocessors of the first GPU, or :data:`DEFAULT_SM_COUNT` without one."""
  dev = _first_gpu()
  if dev is None:
    return DEFAULT_SM_COUNT
  return int(getattr(dev, "core_count", 0) or DEFAULT_SM_COUNT)


# The GPU a CUDA lowering targets on a machine without one (offline checks on a CPU).
OFFLINE_GPU_KIND = "NVIDIA H100"


def lower_for_cuda(fn, *args):
  """``jax.jit(fn)`` traced with ``args`` and lowered for CUDA, also without a GPU.

  jax >= 0.11 asks the device for its compute capability when it lowers a Pallas Triton kernel
  (0.10 fell back to sm_90) and refuses when there is no GPU. Without one, the lowering runs
  under an abstract mesh whose abstract device is an H100 (compute capability 9.0,
  :data:`DEFAULT_SM_COUNT` SMs), which both versions accept.
  """
  jitted = jax.jit(fn)
  if _first_gpu() is not None:
    return jitted.trace(*args).lower(lowering_platforms=("cuda",))
  device = jax.sharding.AbstractDevice(device_kind=OFFLINE_GPU_KIND, num_cores=DEFAULT_SM_COUNT,
                                       platform="gpu")
  mesh = jax.sharding.AbstractMesh((1,), ("gpu",), (jax.sharding.AxisType.Auto,),
                                   abstract_device=device)
  with jax.sharding.use_abstract_mesh(mesh):
    return jitted.trace(*args).lower(lowering_platforms=("cuda",))
