"""Compiles every Pallas kernel for Hopper (sm_90a) without a GPU and reports its resources.

For each kernel (residual block: the whole-row forward, backward row kernel and weight-gradient
kernel up to width 256, the tiled forward, dA/dx and dW kernels above it, at the default config
and with ``activation_prologue=True`` (the ``*_act`` GEMMs); InfoNCE forward, dphi and dpsi) at
the trainer's shapes, the op's forward+backward is lowered
for CUDA with ``impl="pallas"``; the Triton IR (TTIR) that the Pallas Triton lowering emits
is captured, compiled with the pip ``triton`` package for an offline ``GPUTarget("cuda", 90)``
(Triton targets ``sm_90a`` at capability 90) and assembled by Triton's bundled ``ptxas``.
Written to ``DIR/kernel_ptx.csv`` (and ``DIR/kernel_ptx.md``):

  kernel,batch,width,config,tensor_core,registers,spill_bytes,smem_bytes,ctas

``tensor_core`` is ``wgmma`` (Hopper warpgroup MMA in the PTX), ``mma`` (``mma.sync``, the
Ampere path) or ``none``; ``registers``/``spill_bytes`` are ptxas's report (spill stores +
spill loads); ``smem_bytes`` is the shared memory Triton allocates; ``ctas`` the grid size.
The markdown also names the SASS matrix instruction (``HGMMA``/``HMMA``) from ``cuobjdump``.

Caveat: on a GPU, XLA compiles these TTIR modules with the Triton build inside jaxlib, not
with the pip package; the two share the TTIR input and the pass pipeline's design, so the
report is a close proxy for what XLA produces, not the same binary.

  pip install -e ".[ptx]"
  python profiling/kernel_ptx.py --out=DIR [--shapes=default|all] [--kernels=block_fwd,...]
                                 [--matmul=f32,bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # XLA's Triton fuses FMAs too

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import deepcrl_kernels as kernels  # noqa: E402
from deepcrl_kernels import _pallas_common as common  # noqa: E402
from profiling_common import (device_header, markdown_table, tiled_prologue_config,  # noqa: E402
                              write_csv)  # (this folder)

# sm_90's largest shared-memory allocation per CTA (opt-in), bytes: 227 KiB.
SM90_SMEM_LIMIT = 227 * 1024
COLUMNS = ("kernel", "batch", "width", "config", "tensor_core", "registers", "spill_bytes",
           "smem_bytes", "ctas")
# Pallas kernel name (pallas_call name=...) -> report name.
KERNEL_NAMES = {
    "residual_block_fwd": "block_fwd",
    "residual_block_bwd_rows": "block_bwd_rows",
    "residual_block_bwd_weights": "block_bwd_dw",
    "residual_block_tiled_fwd": "tiled_fwd",
    "residual_block_tiled_fwd_act": "tiled_fwd_act",
    "residual_block_tiled_bwd_dw": "tiled_bwd_dw",
    "residual_block_tiled_bwd_dw_act": "tiled_bwd_dw_act",
    "residual_block_tiled_bwd_da": "tiled_bwd_da",
    "residual_block_tiled_bwd_dx": "tiled_bwd_dx",
    "infonce_fwd": "infonce_fwd",
    "infonce_bwd_dphi": "infonce_dphi",
    "infonce_bwd_dpsi": "infonce_dpsi",
}
BLOCK_SHAPES = {
    # (batch, width): the trainer's default, and the two ends of the paper's sweeps.
    "default": [(512, 256), (4096, 1024)],
    "all": [(b, w) for w in (256, 512, 1024) for b in (256, 512, 1024, 4096)],
}
INFONCE_SHAPES = {
    "default": [(512, 64), (4096, 64)],
    "all": [(b, 64) for b in (256, 512, 1024, 2048, 4096)],
}
INFONCE_ENERGY, INFONCE_VARIANT, INFONCE_PENALTY = "l2", "forward", 0.1  # the trainer's loss


@dataclasses.dataclass
class TritonKernel:
  name: str
  ttir: str
  num_warps: int
  num_stages: int
  grid: tuple[int, ...]


@contextlib.contextmanager
def capture_triton_modules():
  """Yields a list that fills with the Triton modules Pallas lowers (name, TTIR text, grid).

  Wraps the Pallas Triton lowering's module builder for the duration; warps and stages are
  read from the lowered custom calls afterwards (:func:`lower_kernels`).
  """
  from jax._src.pallas.triton import pallas_call_registration as reg  # pylint: disable=g-import-not-at-top
  captured = []
  original = reg.lowering.lower_jaxpr_to_triton_module

  def wrapper(*args, **kwargs):
    result = original(*args, **kwargs)
    op = result.module.operation
    name = op.attributes["sym_name"].value if "sym_name" in op.attributes else "?"
    captured.append((name, op.get_asm(), tuple(result.grid)))
    return result

  reg.lowering.lower_jaxpr_to_triton_module = wrapper
  try:
    yield captured
  finally:
    reg.lowering.lower_jaxpr_to_triton_module = original


_FIELD_RE = {k: re.compile(rf"\b{k} = (\"[^\"]*\"|\d+)") for k in ("name", "num_warps", "num_stages")}


def lower_kernels(fn, *args) -> list[TritonKernel]:
  """Lowers ``jit(fn)(*args)`` for CUDA; returns its Triton kernels (deduplicated by name)."""
  with capture_triton_modules() as captured:
    text = common.lower_for_cuda(fn, *args).as_text()
  launch = {}
  for line in text.splitlines():
    if "__gpu$xla.gpu.triton" in line:
      # The backend config also holds the IR bytes; drop them before matching.
      line = re.sub(r'ir = "(?:[^"\\]|\\.)*"', "", line)
      fields = {k: r.search(line) for k, r in _FIELD_RE.items()}
      if all(fields.values()):
        launch[fields["name"][1].strip('"')] = (int(fields["num_warps"][1]),
                                                 int(fields["num_stages"][1]))
  out = {}
  for name, ttir, grid in captured:
    if name not in launch:
      raise RuntimeError(f"no launch parameters found for the Triton kernel {name}")
    warps, stages = launch[name]
    out[name] = TritonKernel(name, ttir, warps, stages, grid)
  return list(out.values())


def _triton_dirs():
  import triton  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


_compiled: dict[tuple[str, int, int], dict] = {}


def compile_for_sm90(kernel: TritonKernel, workdir: str) -> dict:
  """TTIR -> PTX -> cubin for sm_90a with pip triton; returns the resource report.

  Memoised on (TTIR, warps, stages): shapes that differ only in the grid share a binary.
  """
  memo = (kernel.ttir, kernel.num_warps, kernel.num_stages)
  if memo not in _compiled:
    _compiled[memo] = _compile_for_sm90(kernel, workdir)
  return dict(_compiled[memo])


def _compile_for_sm90(kernel: TritonKernel, workdir: str) -> dict:
  import triton  # pylint: disable=g-import-not-at-top
  from triton import knobs  # pylint: disable=g-import-not-at-top
  from triton.backends.compiler import GPUTarget  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, f"{kernel.name}.ttir")
  with open(path, "w") as f:
    f.write(kernel.ttir)
  log = io.StringIO()
  knobs.nvidia.dump_ptxas_log = True  # Triton prints its own ptxas -v log to stdout
  knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its log
  try:
    with contextlib.redirect_stdout(log):
      compiled = triton.compile(path, target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": kernel.num_warps,
                                         "num_stages": kernel.num_stages})
  finally:
    knobs.nvidia.dump_ptxas_log = False
    knobs.compilation.always_compile = False
  ptxas_log = log.getvalue()
  ptx = compiled.asm["ptx"]
  regs = re.findall(r"Used (\d+) registers", ptxas_log)
  stores = re.findall(r"(\d+) bytes spill stores", ptxas_log)
  loads = re.findall(r"(\d+) bytes spill loads", ptxas_log)
  if not regs:
    raise RuntimeError(f"no ptxas resource report for {kernel.name}:\n{ptxas_log[-2000:]}")
  if "wgmma.mma_async" in ptx:
    tensor_core = "wgmma"
  elif re.search(r"\bmma\.sync", ptx):
    tensor_core = "mma"
  else:
    tensor_core = "none"
  cubin = os.path.join(workdir, f"{kernel.name}.cubin")
  with open(cubin, "wb") as f:
    f.write(compiled.asm["cubin"])
  sass = subprocess.run([os.path.join(_triton_dirs(), "cuobjdump"), "-sass", cubin],
                        capture_output=True, text=True, check=False).stdout
  ops = sorted(set(re.findall(r"\b(HGMMA\.[0-9x]+\.F32\.[A-Z0-9]+|HMMA\.[0-9]+\.F32\.[A-Z0-9]+)",
                              sass)))
  return {
      "tensor_core": tensor_core,
      "registers": int(regs[-1]),
      "spill_bytes": int(stores[-1]) + int(loads[-1]) if stores else 0,
      "smem_bytes": int(compiled.metadata.shared),
      "sass_mma": ",".join(ops) or "-",
  }


def _block_config_str(cfg, warps, stages, batch) -> str:
  del batch
  if isinstance(cfg, kernels.TiledBlockConfig):
    return (f"tiled{cfg.block_m}x{cfg.block_n}/k{cfg.block_k}/dw{cfg.dw_block}x"
            f"{cfg.dw_block_batch}/splits{cfg.dw_splits}/warps{warps}/stages{stages}"
            + ("/prologue" if cfg.activation_prologue else ""))
  return (f"rows{cfg.block_rows}/k{cfg.block_k}/dw{cfg.block_w}x{cfg.block_batch}"
          f"/warps{warps}/stages{stages}")


def _infonce_config_str(cfg, warps, stages, batch) -> str:
  from deepcrl_kernels import infonce_pallas  # pylint: disable=g-import-not-at-top
  padded = -(-batch // max(cfg.block_rows, cfg.block_cols)) * max(cfg.block_rows, cfg.block_cols)
  splits = infonce_pallas.num_splits(cfg, padded)
  return (f"rows{cfg.block_rows}/cols{cfg.block_cols}/{cfg.precision}/splits{splits}"
          f"/warps{warps}/stages{stages}")


def block_kernels(batch: int, width: int, matmul_dtype=None, config=None):
  key = jax.random.PRNGKey(0)
  params = {"w": jnp.zeros((4, width, width)), "b": jnp.zeros((4, width)),
            "scale": jnp.ones((4, width)), "offset": jnp.zeros((4, width))}
  x = jax.random.normal(key, (batch, width))

  def loss(x, p):
    return jnp.sum(kernels.fused_residual_block(x, p, impl="pallas", matmul_dtype=matmul_dtype,
                                                config=config))

  cfg = config or kernels.default_config(width, batch)
  return lower_kernels(jax.grad(loss, argnums=(0, 1)), x, params), cfg


def infonce_kernels(batch: int, dim: int):
  x = jnp.zeros((batch, dim))

  def loss(a, b):
    return kernels.infonce_loss(a, b, energy=INFONCE_ENERGY, variant=INFONCE_VARIANT,
                                logsumexp_penalty=INFONCE_PENALTY, impl="pallas")[0]

  cfg = kernels.default_infonce_config(dim, batch)
  return lower_kernels(jax.grad(loss, argnums=(0, 1)), x, x), cfg


def report(shapes: str = "default", only: set[str] | None = None, log=sys.stderr,
           matmul: tuple[str, ...] = ("f32",)) -> list[dict]:
  """Lowers and compiles every kernel at the chosen shapes; returns one dict per kernel.

  ``matmul``: the block's matmul dtypes to report (``"bf16"`` rows carry ``/bf16`` in their
  config).
  """
  rows = []
  jobs = []
  for (batch, width), mm in itertools.product(BLOCK_SHAPES[shapes], matmul):
    jobs.append(("block", batch, width, mm, None))
    if kernels.uses_tiled_block(width):  # and the GEMMs that recompute the activation
      jobs.append(("block", batch, width, mm, tiled_prologue_config(width, batch)))
  jobs += [("infonce", b, d, "f32", None) for b, d in INFONCE_SHAPES[shapes]]
  with tempfile.TemporaryDirectory() as workdir:
    for op, batch, width, mm, config in jobs:
      if op == "block":
        found, cfg = block_kernels(batch, width, jnp.bfloat16 if mm == "bf16" else None, config)
        describe = _block_config_str if mm == "f32" else (
            lambda *a: _block_config_str(*a) + "/bf16")
        if config is not None:  # only the kernels the default config does not already have
          found = [k for k in found if k.name.endswith("_act")]
      else:
        found, cfg = infonce_kernels(batch, width)
        describe = _infonce_config_str
      for k in found:
        name = KERNEL_NAMES.get(k.name, k.name)
        if only and name not in only:
          continue
        t0 = time.perf_counter()
        res = compile_for_sm90(k, workdir)
        ctas = 1
        for g in k.grid:
          ctas *= g
        rows.append({"kernel": name, "batch": batch, "width": width,
                     "config": describe(cfg, k.num_warps, k.num_stages, batch), "ctas": ctas, **res})
        print(f"{name} batch={batch} width={width}: {res['tensor_core']} "
              f"{res['registers']} regs, {res['spill_bytes']} B spilled, "
              f"{res['smem_bytes']} B smem, {ctas} CTAs ({time.perf_counter() - t0:.1f} s)",
              file=log, flush=True)
  return rows


def markdown(rows: list[dict]) -> str:
  return markdown_table(list(COLUMNS) + ["SASS matrix op"],
                        ([r[c] for c in COLUMNS] + [r["sass_mma"]] for r in rows))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", required=True, help="directory for kernel_ptx.csv / kernel_ptx.md")
  ap.add_argument("--shapes", choices=("default", "all"), default="default")
  ap.add_argument("--kernels", default="", help=f"subset of {sorted(KERNEL_NAMES.values())}")
  ap.add_argument("--matmul", default="f32", help="block matmul dtypes: f32, bf16 or f32,bf16")
  args = ap.parse_args(argv)
  try:
    import triton  # pylint: disable=g-import-not-at-top
  except ImportError:
    ap.error('needs the pip "triton" package: pip install -e ".[ptx]"')
  only = set(args.kernels.split(",")) if args.kernels else None
  matmul = tuple(args.matmul.split(","))
  if not set(matmul) <= {"f32", "bf16"}:
    ap.error(f"--matmul takes f32 and/or bf16, got {args.matmul}")
  rows = report(args.shapes, only, matmul=matmul)
  os.makedirs(args.out, exist_ok=True)
  write_csv(os.path.join(args.out, "kernel_ptx.csv"), rows, COLUMNS)
  table = markdown(rows)
  with open(os.path.join(args.out, "kernel_ptx.md"), "w") as f:
    f.write(f"{device_header(with_mujoco=False)}; triton {triton.__version__}, target sm_90a "
            f"(offline GPUTarget('cuda', 90)); smem limit {SM90_SMEM_LIMIT} B\n\n{table}\n")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
