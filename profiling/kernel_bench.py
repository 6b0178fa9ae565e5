"""Fused kernels vs XLA: correctness on the device and timings of forward and forward+backward.

For the residual block (4 layers + skip; times also reported per layer) and InfoNCE, each
(impl, shape) is jitted with ``--inner`` dependent applications inside one ``lax.scan`` so
Python dispatch is excluded; the best of ``--repeats`` calls is reported, with XLA's temp
memory of the compiled step. Before timing, the Pallas path is checked against the XLA
reference at ``precision=highest`` (TF32 tolerance, ~1e-3 relative to each array's scale).

  python profiling/kernel_bench.py                          # GPU: the full sweep
  python profiling/kernel_bench.py --tiny                   # CPU smoke test (xla only)
  python profiling/kernel_bench.py --ops=block --tune       # GPU: search block tiles too
  python profiling/kernel_bench.py --out=$OUT/kernels.md    # also write the tables
  python profiling/kernel_bench.py --model                  # roofline MODEL, no GPU needed
  python profiling/kernel_bench.py --profile=$OUT/prof      # GPU: profiler device times

Exit status 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import os
import sys
import time

import deepcrl_core  # noqa: E402

deepcrl_core.configure_cpu_xla_flags()  # before jax starts its backends

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import deepcrl_kernels as kernels  # noqa: E402
from profiling_common import (device_header, ints_problem, markdown_table,  # noqa: E402
                              names_problem, tiled_prologue_config, time_calls)  # (this folder)

CHECK_RTOL = {"forward": 5e-3, "grad": 1e-2}  # TF32 matmuls vs a float32 HIGHEST reference


def _parse_ints(s: str):
  return [int(v) for v in s.split(",") if v]


def _block_params(key, width, dtype=jnp.float32):
  kw, kb, ks, ko = jax.random.split(key, 4)
  return {
      "w": (jax.random.normal(kw, (4, width, width)) / math.sqrt(width)).astype(dtype),
      "b": 0.1 * jax.random.normal(kb, (4, width)),
      "scale": 1.0 + 0.2 * jax.random.normal(ks, (4, width)),
      "offset": 0.1 * jax.random.normal(ko, (4, width)),
  }


def _max_rel_err(got, want) -> float:
  errs = [float(jnp.max(jnp.abs(g.astype(jnp.float32) - w.astype(jnp.float32)))
                / max(float(jnp.max(jnp.abs(w))), 1e-12))
          for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want))]
  return max(errs)


def _time(fn, args, repeats: int):
  """(best seconds per call, compile seconds, temp bytes) of a jitted ``fn(*args)``."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  try:
    temp = compiled.memory_analysis().temp_size_in_bytes
  except Exception:  # pylint: disable=broad-except  (not every backend reports it)
    temp = float("nan")
  best = time_calls(lambda: compiled(*args), repeats).best_s
  return best, compile_s, temp


# ---------------------------------------------------------------------------------------------
# Residual block.


def _block_steps(impl, inner, config, matmul_dtype):
  def apply(x, p):
    return kernels.fused_residual_block(x, p, impl=impl, config=config,
                                        matmul_dtype=matmul_dtype)

  def forward(x, p):
    def body(h, _):
      return apply(h, p) * 0.5, None  # dependent steps; the 0.5 keeps values bounded
    return jax.lax.scan(body, x, None, length=inner)[0]

  def forward_backward(x, p):
    def body(carry, _):
      h, acc = carry
      dh, dp = jax.grad(lambda h, p: jnp.sum(apply(h, p) ** 2), argnums=(0, 1))(h, p)
      return (h + 1e-4 * dh, jax.tree.map(jnp.add, acc, dp)), None
    acc = jax.tree.map(jnp.zeros_like, p)
    return jax.lax.scan(body, (x, acc), None, length=inner)[0]

  return forward, forward_backward


def check_block(batch, width, impl="pallas", matmul_dtype=None, config=None):
  key = jax.random.PRNGKey(batch + width)
  x = jax.random.normal(key, (batch, width))
  p = _block_params(jax.random.fold_in(key, 1), width)

  def vg(impl):
    def f(x, p):
      y, vjp = jax.vjp(lambda x, p: kernels.fused_residual_block(
          x, p, impl=impl, config=config, matmul_dtype=matmul_dtype), x, p)
      return y, vjp(jnp.cos(y))
    return jax.jit(f)

  y, g = vg(impl)(x, p)
  with jax.default_matmul_precision("highest"):
    y_ref, g_ref = vg("xla")(x, p)
  return _max_rel_err(y, y_ref), _max_rel_err(g, g_ref)


def bench_block(args, impls, rows, failures, flush):
  dtypes = [None] + ([jnp.bfloat16] if args.bf16 else [])
  for width, batch, matmul_dtype in itertools.product(args.widths, args.batches, dtypes):
    dname = "bf16" if matmul_dtype else "f32"
    try:
      _bench_block_shape(args, impls, rows, failures, width, batch, matmul_dtype, dname)
    except Exception as e:  # pylint: disable=broad-except  (report, go on with other shapes)
      failures.append(f"block b={batch} w={width} {dname}: ERROR {type(e).__name__}: "
                      f"{str(e)[:300]}")
    flush()
    print(f"block width={width} batch={batch} {dname}: done", file=sys.stderr)


def _bench_block_shape(args, impls, rows, failures, width, batch, matmul_dtype, dname):
  """Checks (once) and times every impl (and tuning config) at one shape; appends rows."""
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (batch, width))
  p = _block_params(jax.random.fold_in(key, 1), width)
  configs = {"default": None}
  if args.tune and impls[0] != "xla":
    configs.update(_tuning_order(_block_tuning_grid(width), batch, width, dname))
  results = {}
  for impl in impls:
    tune_start, tried = None, 0
    for cname, config in (configs.items() if impl != "xla" else [("-", None)]):
      tuned = cname not in ("default", "-")
      if tuned:
        tune_start = tune_start or time.perf_counter()
        if tried and args.tune_budget_s and time.perf_counter() - tune_start > args.tune_budget_s:
          print(f"  tuning budget ({args.tune_budget_s:g} s) spent after {tried} of "
                f"{len(configs) - 1} configs (tried in the model's order)", file=sys.stderr)
          break
        tried += 1
      err = ""
      if impl != "xla" and args.check and cname == "default":
        e_fwd, e_grad = check_block(batch, width, impl, matmul_dtype)
        ok = e_fwd <= CHECK_RTOL["forward"] and e_grad <= CHECK_RTOL["grad"]
        err = f"{e_fwd:.1e} / {e_grad:.1e}" + ("" if ok else " FAIL")
        if not ok:
          failures.append(f"block b={batch} w={width} {dname}: {err}")
      if args.check_only:
        if err:
          results[(impl, cname)] = (float("nan"), float("nan"), float("nan"), 0.0, err)
        continue
      fwd, fwd_bwd = _block_steps(impl, args.inner, config, matmul_dtype)
      try:
        t_f, c_f, _ = _time(fwd, (x, p), args.repeats)
        t_fb, c_fb, mem = _time(fwd_bwd, (x, p), args.repeats)
      except Exception as e:  # pylint: disable=broad-except  (a tuning config may not compile)
        if cname == "default":
          raise
        print(f"  config {cname} failed: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
        continue
      results[(impl, cname)] = (t_f / args.inner, t_fb / args.inner, mem, c_f + c_fb, err)
      if tuned:  # the log keeps what a timeout would lose
        print(f"  config {cname}: fwd+bwd {t_fb / args.inner * 1e6:.1f} us "
              f"(compile {c_f + c_fb:.1f} s)", file=sys.stderr, flush=True)
  xla = results.get(("xla", "-"))
  best_tuned = None
  for (impl, cname), (t_f, t_fb, mem, comp, err) in results.items():
    if cname not in ("default", "-"):
      if best_tuned is None or t_fb < results[best_tuned][1]:
        best_tuned = (impl, cname)
      continue
    rows.append(_block_row(batch, width, dname, impl, cname, t_f, t_fb, mem, comp, err, xla))
  if best_tuned:
    t_f, t_fb, mem, comp, err = results[best_tuned]
    rows.append(_block_row(batch, width, dname, best_tuned[0], best_tuned[1], t_f, t_fb, mem,
                           comp, err, xla))


def _block_tuning_grid(width):
  grid = {}
  if kernels.uses_tiled_block(width):
    # Tiled kernels: output tiles, K-chunk, dW batch split, and where the activation is formed.
    for (bm, bn), bk, splits, pro in itertools.product(
        ((128, 128), (64, 128), (128, 64), (64, 64)), (32, 64), (1, 2, 4, 8), (False, True)):
      cfg = kernels.TiledBlockConfig(block_m=bm, block_n=bn, block_k=bk, dw_splits=splits,
                                     activation_prologue=pro)
      grid[f"t{bm}x{bn}/k{bk}/s{splits}" + ("/pro" if pro else "")] = cfg
    return grid
  padded = 1 << (width - 1).bit_length()
  for rows, bk, warps, stages in itertools.product((16, 32, 64), (8, 16, 32), (4, 8), (2,)):
    # Keep the one [rows, width] f32 accumulator within ~64 registers per thread.
    if bk > padded or rows * padded > 64 * 32 * warps:
      continue
    cfg = kernels.BlockConfig(block_rows=rows, block_k=bk, num_warps=warps, num_stages=stages,
                              block_batch=min(32, rows))
    grid[f"r{rows}/k{bk}/w{warps}/s{stages}"] = cfg
  return grid


def _tuning_order(grid, batch, width, dname):
  """The tuning configs, most promising first by the roofline model (the mean of its serial
  and overlapped bounds: an order to try them in under a time budget, not a prediction)."""
  mm = "bf16" if dname == "bf16" else "f32"

  def predicted(item):
    fused, _ = model_block(batch, width, mm, item[1])
    return (fused["t"] + fused["t_overlap"]) / 2

  return dict(sorted(grid.items(), key=predicted))


def _block_row(batch, width, dname, impl, cname, t_f, t_fb, mem, comp, err, xla):
  speed_f = speed_fb = ""
  if xla and impl != "xla":
    speed_f, speed_fb = f"{xla[0] / t_f:.2f}x", f"{xla[1] / t_fb:.2f}x"
  return ("block", batch, width, dname, impl, cname, f"{t_f * 1e6:.1f}", f"{t_f * 1e6 / 4:.1f}",
          f"{t_fb * 1e6:.1f}", f"{t_fb * 1e6 / 4:.1f}", speed_f, speed_fb, _mib(mem),
          f"{comp:.1f}", err)


# ---------------------------------------------------------------------------------------------
# InfoNCE.


def _infonce_steps(impl, inner, energy, variant):
  def loss(phi, psi):
    return kernels.infonce_loss(phi, psi, energy=energy, variant=variant,
                                logsumexp_penalty=0.01, impl=impl)[0]

  def forward(phi, psi):
    def body(a, _):
      return a + 1e-6 * loss(a, psi), None
    return jax.lax.scan(body, phi, None, length=inner)[0]

  def forward_backward(phi, psi):
    def body(carry, _):
      a, b = carry
      da, db = jax.grad(loss, argnums=(0, 1))(a, b)
      return (a - 1e-3 * da, b - 1e-3 * db), None
    return jax.lax.scan(body, (phi, psi), None, length=inner)[0]

  return forward, forward_backward


def _infonce_inputs(batch, dim):
  k1, k2 = jax.random.split(jax.random.PRNGKey(batch + dim))
  phi = jax.random.normal(k1, (batch, dim))
  return phi, phi + 0.5 * jax.random.normal(k2, (batch, dim))


def check_infonce(batch, dim, energy, variant, impl="pallas"):
  phi, psi = _infonce_inputs(batch, dim)

  def vg(impl):
    return jax.jit(jax.value_and_grad(
        lambda a, b: kernels.infonce_loss(a, b, energy=energy, variant=variant,
                                          logsumexp_penalty=0.01, impl=impl),
        argnums=(0, 1), has_aux=True))

  (l, aux), g = vg(impl)(phi, psi)
  with jax.default_matmul_precision("highest"):
    (l_ref, aux_ref), g_ref = vg("xla")(phi, psi)
  return _max_rel_err((l, aux["logsumexp"], aux["logsumexp_col"], aux["positive"]),
                      (l_ref, aux_ref["logsumexp"], aux_ref["logsumexp_col"],
                       aux_ref["positive"])), _max_rel_err(g, g_ref)


def bench_infonce(args, impls, rows, failures, flush):
  for dim, batch, energy in itertools.product(args.dims, args.batches, args.energies):
    try:
      _bench_infonce_shape(args, impls, rows, failures, dim, batch, energy)
    except Exception as e:  # pylint: disable=broad-except  (report, go on with other shapes)
      failures.append(f"infonce b={batch} d={dim} {energy}: ERROR {type(e).__name__}: "
                      f"{str(e)[:300]}")
    flush()
    print(f"infonce dim={dim} batch={batch} {energy}: done", file=sys.stderr)


def _bench_infonce_shape(args, impls, rows, failures, dim, batch, energy):
  variant = args.variant
  phi, psi = _infonce_inputs(batch, dim)
  results = {}
  for impl in impls:
    err = ""
    if impl != "xla" and args.check:
      e_fwd, e_grad = check_infonce(batch, dim, energy, variant, impl)
      ok = e_fwd <= CHECK_RTOL["forward"] and e_grad <= CHECK_RTOL["grad"]
      err = f"{e_fwd:.1e} / {e_grad:.1e}" + ("" if ok else " FAIL")
      if not ok:
        failures.append(f"infonce b={batch} d={dim} {energy} {variant}: {err}")
    if args.check_only:
      if err:
        results[impl] = (float("nan"), float("nan"), float("nan"), 0.0, err)
      continue
    fwd, fwd_bwd = _infonce_steps(impl, args.inner, energy, variant)
    t_f, c_f, _ = _time(fwd, (phi, psi), args.repeats)
    t_fb, c_fb, mem = _time(fwd_bwd, (phi, psi), args.repeats)
    results[impl] = (t_f / args.inner, t_fb / args.inner, mem, c_f + c_fb, err)
  xla = results.get("xla")
  for impl, (t_f, t_fb, mem, comp, err) in results.items():
    speed_f = speed_fb = ""
    if xla and impl != "xla":
      speed_f, speed_fb = f"{xla[0] / t_f:.2f}x", f"{xla[1] / t_fb:.2f}x"
    rows.append(("infonce", batch, dim, energy, impl, variant, f"{t_f * 1e6:.1f}",
                 f"{t_fb * 1e6:.1f}", speed_f, speed_fb, _mib(mem), f"{comp:.1f}", err))


def _mib(n):
  return "" if n != n else f"{n / 2**20:.1f}"  # NaN-safe


# ---------------------------------------------------------------------------------------------
# Roofline MODEL (--model): counted FLOPs and bytes, times implied at H100 SXM peak rates.
# Nothing here is measured. Rates are the vendor's datasheet figures or stated assumptions.

H100 = {
    "sms": 132,
    "hbm_Bps": 3.35e12,            # HBM3, datasheet
    "l2_Bps": 5.5e12,              # aggregate L2 -> SM read bandwidth (assumption)
    "l2_per_sm_Bps": 64 * 1.755e9,  # 64 B/clock per SM at the boost clock (assumption)
    "tf32_flops": 494.7e12,        # dense TF32 tensor cores, datasheet
    "bf16_flops": 989.4e12,        # dense bf16 tensor cores, datasheet
    "fp32_flops": 66.9e12,         # CUDA cores (FMA = 2 flops), datasheet
    "mma_sync_fraction": 0.5,      # mma.sync (Ampere-style) vs wgmma peak (assumption)
    "sfu_ops": 132 * 16 * 1.755e9,  # exp/sqrt/rcp: 16 per SM per clock (assumption)
    "launch_s": 2e-6,              # per kernel: launch gap + ramp (assumption)
    "gemm_tile": 128,              # library GEMM output tile, for wave quantisation
}


def _tiled_gemm(m, n, k, tile_m, tile_n, a_bytes, b_bytes, rate, hw=H100, hbm=None,
                extra_l2=0.0, extra_s=0.0):
  """A GEMM ``[m,k] @ [k,n]`` computed in ``tile_m x tile_n`` output tiles (library or ours):
  its tensor-core time with wave quantisation, its L2 traffic (A re-read once per column of
  tiles, B once per row of tiles) at the aggregate L2 rate, its HBM traffic (operands once, f32
  output by default); ``extra_s`` (CUDA-core / SFU work of a fused prologue or epilogue) is
  added serially, i.e. assumed not to overlap the tensor cores."""
  tiles = -(-m // tile_m) * -(-n // tile_n)
  util = tiles / (-(-tiles // hw["sms"]) * hw["sms"])
  flops = 2.0 * m * n * k
  if hbm is None:
    hbm = m * k * a_bytes + k * n * b_bytes + m * n * 4
  l2 = m * k * a_bytes * -(-n // tile_n) + k * n * b_bytes * -(-m // tile_m) + extra_l2
  t = max(flops / (rate * util), hbm / hw["hbm_Bps"], l2 / hw["l2_Bps"])
  return {"kernels": 1, "flops": flops, "hbm": hbm, "l2": l2, "t": t + extra_s + hw["launch_s"],
          "t_overlap": max(t, extra_s) + hw["launch_s"]}


def _gemm(m, n, k, in_bytes, rate, hw=H100):
  """A library GEMM ``[m,k] @ [k,n]`` that reads its operands and writes f32 once (output
  tiles of ``gemm_tile`` squared)."""
  return _tiled_gemm(m, n, k, hw["gemm_tile"], hw["gemm_tile"], in_bytes, in_bytes, rate, hw)


def _matmul_bytes_and_rate(matmul_dtype, hw=H100):
  """Bytes per matmul operand element and the tensor-core rate for ``"f32"`` (TF32) or
  ``"bf16"``."""
  return (2, hw["bf16_flops"]) if matmul_dtype == "bf16" else (4, hw["tf32_flops"])


def _vector_s(elements, fp32_per_element, sfu_per_element=0.0, hw=H100):
  """CUDA-core and SFU time of an elementwise computation spread over every SM."""
  return elements * (fp32_per_element / hw["fp32_flops"] + sfu_per_element / hw["sfu_ops"])


def _elementwise(hbm_bytes, hw=H100, kernels=1, flops=0.0):
  return {"kernels": kernels, "flops": flops, "hbm": hbm_bytes, "l2": hbm_bytes,
          "t": max(hbm_bytes / hw["hbm_Bps"], flops / hw["fp32_flops"]) + kernels * hw["launch_s"]}


def _fused(ctas, flops_per_cta, l2_per_cta, hbm, rate, hw=H100, extra_s=0.0):
  """A Pallas kernel: each CTA's critical path (its matmuls at one SM's share of the rate,
  its L2 reads at one SM's bandwidth), in waves of one CTA per SM, bounded by the aggregates."""
  per_cta = max(flops_per_cta / (rate / hw["sms"]), l2_per_cta / hw["l2_per_sm_Bps"]) + extra_s
  waves = -(-ctas // hw["sms"])
  t = max(waves * per_cta, ctas * l2_per_cta / hw["l2_Bps"], hbm / hw["hbm_Bps"])
  return {"kernels": 1, "flops": ctas * flops_per_cta, "hbm": hbm, "l2": ctas * l2_per_cta,
          "t": t + hw["launch_s"]}


def _total(parts):
  """Sums the parts; ``t_overlap`` (fused prologue/epilogue vector work hidden under the
  tensor-core and memory time, as warp-specialised pipelines do) is ``t`` where not given."""
  out = {"kernels": 0, "flops": 0.0, "hbm": 0.0, "l2": 0.0, "t": 0.0, "t_overlap": 0.0}
  for p in parts:
    for k in out:
      out[k] += p.get(k, p["t"]) if k == "t_overlap" else p[k]
  return out


def model_block_tiled(batch, width, matmul_dtype="f32", config=None, hw=H100):
  """The fused path of :mod:`residual_block_tiled` (per-layer tiled GEMMs, LayerNorm statistics
  in their epilogues, each layer's activation materialised once per element in the matmul dtype
  or recomputed in the GEMM prologues) for one block's forward+backward."""
  from deepcrl_kernels import residual_block_tiled as tiled  # pylint: disable=g-import-not-at-top
  wb, rate = _matmul_bytes_and_rate(matmul_dtype, hw)
  cfg = config or tiled.default_tiled_config(width, batch, sms=hw["sms"])
  b = -(-batch // cfg.batch_multiple) * cfg.batch_multiple
  w = -(-width // cfg.width_multiple) * cfg.width_multiple
  bm, bn, bw, s = cfg.block_m, cfg.block_n, cfg.dw_block, cfg.dw_splits
  pro_on = cfg.activation_prologue
  act = b * w * 4
  act_mm = b * w * wb  # an activation or dz in the matmul dtype
  elems = b * w
  parts = []
  # Activation per element: ~6 CUDA-core flops (normalise, scale, offset, product) and 2 SFU
  # ops (exp and reciprocal of the sigmoid); recomputed once per column tile in a prologue.
  for layer in range(4):  # forward GEMMs (the first reads x as given)
    a_bytes = 4 if layer == 0 or pro_on else wb
    pro = _vector_s(elems * (w // bn), 6, 2, hw) if layer and pro_on else 0.0
    parts.append(_tiled_gemm(b, w, w, bm, bn, a_bytes, wb, rate, hw,
                             hbm=b * w * a_bytes + w * w * wb + act,
                             extra_s=pro + _vector_s(elems, 6, 0, hw)))
    parts.append(_elementwise(2 * (w // bn) * b * 4 + 8 * b, hw))  # merge the row statistics
    if layer < 3 and not pro_on:  # h = swish(LN(z)) once: read z, write h (matmul dtype)
      parts.append(_elementwise(act + act_mm, hw, flops=14.0 * elems))
  parts.append(_elementwise(3 * act, hw, flops=8.0 * elems))  # y = x + swish(LN(z3))
  for layer in reversed(range(4)):  # backward
    if layer == 3:
      # Layer 3's Swish and LayerNorm backward from dy: the same jnp as XLA's own path, so
      # costed as XLA's (row sums, then dz: dy and z read twice, dz written; 2 kernels).
      parts.append(_elementwise(4 * act + act_mm, hw, kernels=2, flops=26.0 * elems))
    else:
      # LayerNorm backward in one XLA fusion: read du and z, write dz (matmul dtype); column
      # sums db, dscale, doffset; materialised, it also writes the layer's activation h (the
      # dW operand of the layer above) from the same zhat.
      emit_h = not pro_on
      parts.append(_elementwise(2 * act + act_mm * (2 if emit_h else 1), hw,
                                flops=(26.0 if emit_h else 12.0) * elems))
    # dA = dz w^T; epilogue: Swish backward of the layer below (reads its z tile: L2 bytes
    # beyond the operands; writes du, the GEMM's output) and partial row sums.
    epi = _vector_s(elems, 14, 2, hw) if layer else _vector_s(elems, 1, 0, hw)
    parts.append(_tiled_gemm(b, w, w, bm, bn, wb, wb, rate, hw, hbm=act_mm + w * w * wb + 2 * act,
                             extra_l2=act, extra_s=epi))
    if layer:
      parts.append(_elementwise(2 * (w // bn) * b * 4 + 8 * b, hw))  # merge the row sums
    # dW = h^T dz over the batch (split s ways); h read (x: as given) or recomputed per
    # column tile in a Swish prologue.
    h_bytes = 4 if layer == 0 or pro_on else wb
    pro = _vector_s(elems * (w // bw), 6, 2, hw) if layer and pro_on else 0.0
    parts.append(_tiled_gemm(w, w, b, bw, bw, h_bytes, wb, rate, hw,
                             hbm=b * w * h_bytes + act_mm + s * w * w * 4, extra_s=pro))
    if s > 1:
      parts.append(_elementwise((s + 1) * w * w * 4, hw))  # sum the splits
  parts.append(_elementwise(4 * w * w * (4 + 2), hw) if wb == 2 else
               {"kernels": 0, "flops": 0.0, "hbm": 0.0, "l2": 0.0, "t": 0.0})  # cast w once
  return _total(parts)


def model_block(batch, width, matmul_dtype="f32", config=None, hw=H100):
  """(fused, xla) dicts for one block's forward+backward (``kernels, flops, hbm, l2, t``).

  The fused path is the one ``impl="pallas"`` runs for this shape and ``config``: the
  whole-row kernels, or the tiled kernels (:func:`model_block_tiled`) for a
  ``TiledBlockConfig`` and by default above width 256."""
  from deepcrl_kernels import residual_block_tiled as tiled  # pylint: disable=g-import-not-at-top
  xla = _model_block_xla(batch, width, matmul_dtype, hw)
  if isinstance(config, tiled.TiledBlockConfig) or (
      config is None and kernels.uses_tiled_block(width)):
    return model_block_tiled(batch, width, matmul_dtype, config, hw), xla
  wb, rate = _matmul_bytes_and_rate(matmul_dtype, hw)
  cfg = config or kernels.default_block_config(width, batch)
  rows = cfg.block_rows
  ctas = -(-batch // rows)
  mma_rate = rate * (1.0 if rows >= 64 else hw["mma_sync_fraction"])
  act = batch * width * 4
  w_all = 4 * width * width * wb
  # Fused forward: every CTA streams all 4 weights; per layer its tile goes through scratch
  # (read the activation, write z, read z, write h: 4 passes of rows x width f32).
  tile = rows * width * 4
  saved = 4 * act if cfg.save_preactivations else 0  # the four z written, then read back
  fwd = _fused(ctas, 4 * 2.0 * rows * width * width, w_all + 16 * tile + tile,
               w_all + 3 * act + saved, mma_rate, hw)
  # Backward rows kernel: per layer 2 chunked passes over z and g, a dz write, the dh matmul
  # streaming dz and w (~28 tile passes); without saved z it first recomputes the forward's
  # four matmuls, streaming the weights a second time.
  mms, w_reads = (4, 1) if cfg.save_preactivations else (8, 2)
  rows_k = _fused(ctas, mms * 2.0 * rows * width * width, w_reads * w_all + 28 * tile + 3 * tile,
                  w_reads * w_all + 3 * act + 8 * act + act + saved, mma_rate, hw)
  bw = min(cfg.block_w, width)
  dw_ctas = 4 * (width // bw) ** 2
  dw_k = _fused(dw_ctas, 2.0 * batch * bw * bw, 2 * batch * bw * 4, 8 * act + 4 * width * width * 4,
                rate, hw)
  partial_sums = _elementwise(3 * ctas * 4 * width * 4, hw)
  cast = _elementwise(4 * width * width * (4 + 2), hw) if wb == 2 else None
  fused = _total([p for p in (cast, fwd, rows_k, dw_k, partial_sums) if p])
  return fused, xla


def _model_block_xla(batch, width, matmul_dtype="f32", hw=H100):
  wb, rate = _matmul_bytes_and_rate(matmul_dtype, hw)
  act = batch * width * 4
  # XLA: per layer a GEMM and a LayerNorm+Swish fusion (forward, saving z and h); backward per
  # layer an LN/Swish-backward fusion pair (row reductions, then dz and the column sums), the
  # dh GEMM and the dW GEMM.
  parts = []
  for _ in range(4):
    if wb == 2:
      parts.append(_elementwise(width * width * 6, hw))  # cast w to bf16
    parts.append(_gemm(batch, width, width, wb, rate, hw))
    parts.append(_elementwise(2 * act, hw))             # z -> h
  for _ in range(4):
    parts.append(_elementwise(5 * act, hw, kernels=2))  # read dh, z twice; write dz
    parts.append(_gemm(batch, width, width, wb, rate, hw))   # dh = dz w^T
    parts.append(_gemm(width, width, batch, wb, rate, hw))   # dw = h^T dz
  parts.append(_elementwise(3 * act, hw))               # skip connection (y = x + h), dx sum
  return _total(parts)


def model_infonce(batch, dim, precision="tf32", hw=H100):
  """(fused, xla) for the forward-variant InfoNCE loss + gradients (l2 energy)."""
  cfg = kernels.default_infonce_config(dim, batch)
  from deepcrl_kernels import infonce_pallas  # pylint: disable=g-import-not-at-top
  rate = hw["tf32_flops"] if precision == "tf32" else hw["fp32_flops"]
  bm = cfg.block_rows
  padded = -(-batch // bm) * bm
  splits = infonce_pallas.num_splits(cfg, padded)
  ctas = (padded // bm) * splits
  cols_per_cta = padded // splits
  logits_per_cta = bm * cols_per_cta
  # Per logit: ~10 CUDA-core flops (norm sums, clamp, masks, online max/sum) and 2 SFU ops
  # (sqrt, exp) forward; backward ~16 flops and 3 SFU ops (sqrt, exp, reciprocal).
  sfu_per_sm = hw["sfu_ops"] / hw["sms"]
  fp32_per_sm = hw["fp32_flops"] / hw["sms"]

  def kern(mm_flops_per_logit, flops_per_logit, sfu_per_logit, out_bytes):
    extra = logits_per_cta * (flops_per_logit / fp32_per_sm + sfu_per_logit / sfu_per_sm)
    l2 = cols_per_cta * dim * 4 + bm * dim * 4
    return _fused(ctas, logits_per_cta * mm_flops_per_logit, l2,
                  2 * batch * dim * 4 + out_bytes, rate, hw, extra_s=extra)

  fwd = kern(2 * dim, 10, 2, splits * padded * 8)
  dphi = kern(4 * dim, 16, 3, splits * padded * dim * 4)
  dpsi = kern(4 * dim, 16, 3, splits * padded * dim * 4)
  glue = _elementwise(2 * splits * padded * dim * 4 + 8 * batch * dim * 4, hw, kernels=4)
  fused = _total([fwd, dphi, dpsi, glue])
  # XLA (the jnp reference at precision=highest): the B x B matrix goes through HBM.
  bb = batch * batch * 4
  f32 = hw["fp32_flops"] * 0.75  # SGEMM efficiency (assumption)
  xla = _total([
      _gemm(batch, batch, dim, 4, f32, hw),                 # phi psi^T
      _elementwise(2 * bb, hw, flops=10.0 * batch * batch),  # energies (read dots, write logits)
      _elementwise(bb, hw),                                 # row logsumexp, max, diagonal
      _elementwise(2 * bb, hw),                             # softmax grad -> d energy
      _gemm(batch, dim, batch, 4, f32, hw),                 # dphi = F psi
      _gemm(dim, batch, batch, 4, f32, hw),                 # dpsi = F^T phi
      _elementwise(bb, hw),                                 # row/column sums of F
  ])
  return fused, xla


def print_model(args) -> str:
  lines = ["## Kernels: roofline MODEL, not a measurement", "",
           "FLOPs and bytes counted per kernel; times are what H100 SXM peak rates imply "
           f"({', '.join(f'{k}={v:.3g}' for k, v in H100.items())}). fused = the Pallas "
           "kernels at their default configs; xla = the jnp reference as XLA runs it "
           "(one GEMM or fusion per step). Every GEMM (library or ours) is bounded by its "
           "tensor-core time, HBM bytes and the L2 bytes its output tiles re-read (library: "
           f"{H100['gemm_tile']}x{H100['gemm_tile']} tiles). 'model us' adds a fused kernel's "
           "CUDA-core/SFU prologue and epilogue work serially (conservative); 'overlapped' "
           "hides it under the tensor-core/memory time (the bound a warp-specialised pipeline "
           "approaches). A GPU must confirm every number here.", "",
           "| op | batch | width/dim | matmul | path | kernels | GFLOP | HBM MB | L2 MB | "
           "model us | model speed-up | overlapped us | overlapped speed-up |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

  def row(op, b, w, mm, name, r, other=None):
    ratio = f"{other['t'] / r['t']:.2f}x" if other else ""
    ratio_o = f"{other['t_overlap'] / r['t_overlap']:.2f}x" if other else ""
    lines.append(f"| {op} | {b} | {w} | {mm} | {name} | {r['kernels']} | {r['flops'] / 1e9:.2f} "
                 f"| {r['hbm'] / 1e6:.1f} | {r['l2'] / 1e6:.1f} | {r['t'] * 1e6:.1f} | {ratio} "
                 f"| {r['t_overlap'] * 1e6:.1f} | {ratio_o} |")

  for width, batch in itertools.product(args.widths, args.batches):
    for mm in ("f32", "bf16"):
      fused, xla = model_block(batch, width, mm)
      path = "fused (tiled)" if kernels.uses_tiled_block(width) else "fused (whole-row)"
      row("block fwd+bwd", batch, width, mm, path, fused, xla)
      if kernels.uses_tiled_block(width):  # the other place to form the activation
        row("block fwd+bwd", batch, width, mm, "fused (tiled, prologue)",
            model_block(batch, width, mm, tiled_prologue_config(width, batch))[0], xla)
      row("block fwd+bwd", batch, width, mm, "xla", xla)
  for dim, batch in itertools.product(args.dims, args.batches):
    fused, xla = model_infonce(batch, dim)
    row("infonce fwd+bwd", batch, dim, "tf32", "fused", fused, xla)
    row("infonce fwd+bwd", batch, dim, "f32", "xla", xla)
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Device-time profile (--profile=DIR, GPU): per-kernel times from the profiler trace.


def _fwd_bwd_step(op, impl, shape, matmul_dtype=None, config=None):
  """A jitted forward+backward step of ``op`` (block: with ``config``) and its inputs."""
  if op == "block":
    batch, width = shape
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (batch, width))
    p = _block_params(jax.random.fold_in(key, 1), width)

    def step(x, p):
      y, back = jax.vjp(lambda x, p: kernels.fused_residual_block(
          x, p, impl=impl, matmul_dtype=matmul_dtype, config=config), x, p)
      return back(jnp.cos(y))
    return jax.jit(step), (x, p)
  batch, dim = shape
  phi, psi = _infonce_inputs(batch, dim)
  loss = lambda a, b: kernels.infonce_loss(a, b, logsumexp_penalty=0.1, impl=impl)[0]
  return jax.jit(jax.grad(loss, argnums=(0, 1))), (phi, psi)


def device_kernel_times(logdir: str, steps: int):
  """``({kernel name: device us per step}, thread names seen)`` from the newest perfetto trace
  under ``logdir`` (events on the GPU's stream threads only)."""
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise RuntimeError(f"no perfetto_trace.json.gz under {logdir}")
  with gzip.open(paths[-1]) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  pname, tname = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      pname[e["pid"]] = str(e.get("args", {}).get("name", ""))
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      tname[(e["pid"], e.get("tid"))] = str(e.get("args", {}).get("name", ""))
  devices = {p for p, n in pname.items() if "gpu" in n.lower() or "/device:" in n.lower()}
  times = collections.defaultdict(float)
  for e in events:
    if e.get("ph") != "X" or e.get("pid") not in devices:
      continue
    thread = tname.get((e["pid"], e.get("tid")), "")
    if "stream" not in thread.lower():
      continue  # module/op summary lines repeat the kernels' time
    times[e["name"]] += float(e.get("dur", 0.0)) / steps
  seen = sorted({tname.get((p, t), "") for (p, t) in tname if p in devices})
  return dict(times), seen


def profile(args) -> int:
  """Per-kernel device time (profiler), total, achieved TFLOP/s (counted FLOPs) per path."""
  os.makedirs(args.profile, exist_ok=True)
  shapes = [("block", (b, w)) for w in args.widths for b in args.batches]
  shapes += [("infonce", (b, d)) for d in args.dims for b in args.batches]
  lines = ["## Kernels: profiler device times", "",
           f"{device_header(with_mujoco=False)}; per step = one "
           f"forward+backward, mean of {args.repeats} profiled steps after a warm-up; TFLOP/s = "
           "counted FLOPs of the step (the roofline model's count) / device time.", "",
           "| op | batch | width/dim | impl | device us | TFLOP/s | kernels (us per step) |",
           "|---|---|---|---|---|---|---|"]
  status = 0
  out_md = os.path.join(args.profile, "kernels_profile.md")

  def write():  # after every row, so a timeout keeps what was measured
    with open(out_md, "w") as f:
      f.write("\n".join(lines) + "\n")

  for op, shape in shapes:
    fused_m, xla_m = (model_block(shape[0], shape[1]) if op == "block"
                      else model_infonce(shape[0], shape[1]))
    paths = [("pallas", None), ("xla", None)]
    if op == "block" and kernels.uses_tiled_block(shape[1]):  # both activation placements
      paths.insert(1, ("pallas/prologue", tiled_prologue_config(shape[1], shape[0])))
    for impl, config in paths:
      try:
        fn, inputs = _fwd_bwd_step(op, impl.split("/")[0], shape, config=config)
        jax.block_until_ready(fn(*inputs))
        logdir = os.path.join(args.profile,
                              f"{op}_{shape[0]}_{shape[1]}_{impl.replace('/', '_')}")
        with jax.profiler.trace(logdir, create_perfetto_trace=True):
          for _ in range(args.repeats):
            jax.block_until_ready(fn(*inputs))
        times, threads = device_kernel_times(logdir, args.repeats)
      except Exception as e:  # pylint: disable=broad-except  (report, go on)
        lines.append(f"| {op} | {shape[0]} | {shape[1]} | {impl} | ERROR | | "
                     f"{type(e).__name__}: {str(e)[:200]} |")
        status = 1
        continue
      if not times:
        lines.append(f"| {op} | {shape[0]} | {shape[1]} | {impl} | no device events | | "
                     f"threads seen: {threads[:8]} |")
        status = 1
        continue
      total = sum(times.values())
      flops = (xla_m if impl == "xla" else fused_m)["flops"]
      top = sorted(times.items(), key=lambda kv: -kv[1])[:6]
      names = "; ".join(f"{n[:60]} {t:.1f}" for n, t in top)
      lines.append(f"| {op} | {shape[0]} | {shape[1]} | {impl} | {total:.1f} | "
                   f"{flops / (total * 1e-6) / 1e12:.1f} | {names} |")
      print(lines[-1], file=sys.stderr, flush=True)
      write()
  write()
  print("\n".join(lines))
  return status


def tensor_core_ops_in_dump(dump_dir: str) -> str:
  """Per kernel entry in XLA's PTX dump (``--xla_dump_to``): its PTX matrix instruction and,
  where ``ptxas`` and ``cuobjdump`` are on PATH, the SASS one (HGMMA / HMMA / none)."""
  import glob  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  have_sass = shutil.which("ptxas") and shutil.which("cuobjdump")
  lines = ["| PTX file | kernel | PTX matrix op | SASS matrix ops |", "|---|---|---|---|"]
  for path in sorted(glob.glob(os.path.join(dump_dir, "**", "*.ptx"), recursive=True)):
    with open(path) as f:
      ptx = f.read()
    sass = ""
    if have_sass:
      with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        target = re.search(r"\.target (sm_\w+)", ptx)
        arch = target[1] if target else "sm_90a"
        ok = subprocess.run(["ptxas", f"-arch={arch}", path, "-o", cubin],
                            capture_output=True, check=False).returncode == 0
        sass = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True,
                              check=False).stdout if ok else ""
    sass_by_fn = {}
    for part in re.split(r"\n\s*Function : ", sass)[1:]:
      name = part.split("\n", 1)[0].strip()
      sass_by_fn[name] = sorted(set(re.findall(r"\b(HGMMA\.\S+|HMMA\.\S+)", part)))
    for entry in re.split(r"\.entry\s+", ptx)[1:]:
      name = entry.split("(", 1)[0].strip()
      op = "wgmma" if "wgmma.mma_async" in entry else "mma" if re.search(r"\bmma\.sync",
                                                                          entry) else "none"
      ops = ",".join(sass_by_fn.get(name, [])) or ("-" if have_sass else "(no ptxas)")
      lines.append(f"| {os.path.basename(path)[:50]} | {name[:60]} | {op} | {ops} |")
  return "\n".join(lines)


def _arg_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--ops", default="block,infonce")
  ap.add_argument("--batches", default="256,512,1024,4096")
  ap.add_argument("--widths", default="256,512,1024", help="residual block widths")
  ap.add_argument("--dims", default="64", help="InfoNCE representation dims")
  ap.add_argument("--energies", default="l2")
  ap.add_argument("--variant", default="forward", choices=kernels.VARIANTS)
  ap.add_argument("--impls", default="",
                  help="default: pallas,xla on GPU, xla elsewhere (interpret,xla: CPU check)")
  ap.add_argument("--inner", type=int, default=20, help="dependent applications per call")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--no-check", dest="check", action="store_false")
  ap.add_argument("--check-only", action="store_true", help="correctness only, no timings")
  ap.add_argument("--bf16", action="store_true", help="also time matmul_dtype=bfloat16 blocks")
  ap.add_argument("--tune", action="store_true",
                  help="also search block tiles (slow; in the roofline model's order)")
  ap.add_argument("--tune_budget_s", type=float, default=0.0,
                  help="per shape: stop trying tuning configs after this many seconds (0: all)")
  ap.add_argument("--tiny", action="store_true", help="CPU smoke test: one small shape")
  ap.add_argument("--out", default="", help="also write the markdown here")
  ap.add_argument("--model", action="store_true",
                  help="print the roofline MODEL (counted FLOPs/bytes at H100 peak rates; no "
                       "timing, no GPU needed)")
  ap.add_argument("--profile", default="",
                  help="GPU: per-kernel device times from the profiler into this directory")
  ap.add_argument("--ptx-dump", default="",
                  help="list each kernel's tensor-core instruction in XLA's --xla_dump_to "
                       "directory (PTX; SASS where ptxas and cuobjdump are on PATH)")
  return ap


BENCH_OPS = ("block", "infonce")
BENCH_IMPLS = ("pallas", "xla", "interpret")


def parse_args(argv=None):
  """(parser, args): the command line parsed and checked, every problem named at once (exit 2)
  before jax compiles anything. Values are still strings; ``main`` converts them."""
  ap = _arg_parser()
  args = ap.parse_args(argv)
  problems = [names_problem("ops", args.ops, BENCH_OPS),
              names_problem("energies", args.energies, kernels.ENERGIES),
              args.impls and names_problem("impls", args.impls, BENCH_IMPLS)]
  problems += [ints_problem(flag, getattr(args, flag)) for flag in ("batches", "widths", "dims")]
  problems = [p for p in problems if p]
  for flag in ("inner", "repeats"):
    if getattr(args, flag) < 1:
      problems.append(f"--{flag}={getattr(args, flag)}: expected >= 1")
  if problems:
    ap.error("; ".join(problems))
  return ap, args


def main(argv=None) -> int:
  ap, args = parse_args(argv)
  if args.ptx_dump:
    print(tensor_core_ops_in_dump(args.ptx_dump))
    return 0
  if args.profile:
    args.batches, args.widths, args.dims = map(_parse_ints, (args.batches, args.widths,
                                                             args.dims))
    if jax.default_backend() != "gpu":
      ap.error("--profile needs a GPU")
    return profile(args)
  if args.model:
    args.batches, args.widths, args.dims = map(_parse_ints, (args.batches, args.widths,
                                                             args.dims))
    text = print_model(args)
    if args.out:
      with open(args.out, "w") as f:
        f.write(text + "\n")
    print(text)
    return 0

  on_gpu = jax.default_backend() == "gpu"
  impls = args.impls.split(",") if args.impls else (["pallas", "xla"] if on_gpu else ["xla"])
  if "pallas" in impls and not on_gpu:
    ap.error("impl pallas needs a GPU (use --impls=xla, or interpret mode in the tests)")
  if args.tiny:
    args.batches, args.widths, args.dims = "64", "64", "16"
    args.inner, args.repeats = 2, 2
  args.batches, args.widths, args.dims = map(_parse_ints, (args.batches, args.widths, args.dims))
  args.energies = args.energies.split(",")
  ops = args.ops.split(",")

  block_rows, infonce_rows, failures = [], [], []

  def flush():  # rewrite --out after every shape, so a timeout keeps what was measured
    if args.out:
      with open(args.out, "w") as f:
        f.write(_render(args, block_rows, infonce_rows, failures) + "\n")

  if "block" in ops:
    bench_block(args, impls, block_rows, failures, flush)
  if "infonce" in ops:
    bench_infonce(args, impls, infonce_rows, failures, flush)
  flush()
  print(_render(args, block_rows, infonce_rows, failures))
  return 1 if failures else 0


def _render(args, block_rows, infonce_rows, failures) -> str:
  out = [f"## Kernels: fused vs XLA ({datetime.date.today().isoformat()})", "",
         f"{device_header(with_mujoco=False)}; times are the best of "
         f"{args.repeats} calls of {args.inner} dependent steps, in microseconds per step; "
         "check = max error relative to each array's scale vs the XLA reference at "
         "precision=highest (forward / gradients); temp = XLA temp memory of the fwd+bwd step.",
         ""]
  if block_rows:
    out += ["### Residual block (4 layers + skip)", "", markdown_table(
        ["op", "batch", "width", "matmul", "impl", "config", "fwd us", "fwd us/layer",
         "fwd+bwd us", "fwd+bwd us/layer", "fwd speed-up", "fwd+bwd speed-up", "temp MiB",
         "compile s", "check"], block_rows), ""]
  if infonce_rows:
    out += ["### InfoNCE", "", markdown_table(
        ["op", "batch", "dim", "energy", "impl", "variant", "fwd us", "fwd+bwd us",
         "fwd speed-up", "fwd+bwd speed-up", "temp MiB", "compile s", "check"],
        infonce_rows), ""]
  if failures:
    out += ["**correctness FAILURES / errors:**", ""] + [f"- {f}" for f in failures] + [""]
  return "\n".join(out)


if __name__ == "__main__":
  sys.exit(main())
