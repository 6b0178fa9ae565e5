"""Reporting for profiling/step_time.py: the CSV, the markdown table with linear depth fits, and
the log-log PNG of step time and memory versus depth.
"""

from __future__ import annotations

import csv
import math
from typing import Dict, List, Sequence


CSV_COLUMNS = [
    "depth", "width", "batch", "impl", "agent", "status", "actor_depth", "critic_depth", "params",
    "compile_s", "step_ms", "step_ms_min", "step_ms_p90", "repeats", "gflops_per_step",
    "tflops", "frac_peak", "xla_mem_mb", "peak_mem_mb", "mem_source", "num_envs",
    "unroll_length", "sgd_steps", "unroll_compile_s", "unroll_ms", "env_steps_per_s",
    "train_compile_s", "train_ms", "train_ms_kind", "sgd_h_100M", "total_h_100M", "device",
    "note",
]


def _fmt(v, digits=3):
  if v is None or v == "":
    return ""
  if isinstance(v, float):
    if not math.isfinite(v):
      return ""
    if v == 0:
      return "0"
    mag = math.floor(math.log10(abs(v)))
    return f"{v:.{max(0, digits - 1 - mag)}f}" if mag < digits else f"{v:.0f}"
  return str(v)


def fit_linear(xs: Sequence[float], ys: Sequence[float]):
  """Least-squares ``y = a + b x``; returns (intercept a, slope b)."""
  n = len(xs)
  mx, my = sum(xs) / n, sum(ys) / n
  sxx = sum((x - mx) ** 2 for x in xs)
  if sxx == 0:
    return my, float("nan")
  b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
  return my - b * mx, b


def depth_fits(rows: Sequence[dict]) -> List[dict]:
  """Per (agent, impl, width, batch): step time fitted against depth (>= 2 measured depths)."""
  groups: Dict[tuple, List[dict]] = {}
  for r in rows:
    if isinstance(r.get("step_ms"), float):
      groups.setdefault((r.get("agent", "crl"), r["impl"], r["width"], r["batch"]), []).append(r)
  fits = []
  for (agent, impl, width, batch), rs in sorted(groups.items()):
    depths = sorted({r["depth"] for r in rs})
    if len(depths) < 2:
      continue
    xs, ys = [r["depth"] for r in rs], [r["step_ms"] for r in rs]
    a, b = fit_linear(xs, ys)
    big = [r for r in rs if r["depth"] >= 16] or rs
    lo = min(big, key=lambda r: r["depth"]) if len(big) >= 2 else min(rs, key=lambda r: r["depth"])
    hi = max(rs, key=lambda r: r["depth"])
    loglog = (math.log(hi["step_ms"] / lo["step_ms"]) / math.log(hi["depth"] / lo["depth"])
              if hi["depth"] != lo["depth"] else float("nan"))
    fits.append({"agent": agent, "impl": impl, "width": width, "batch": batch, "depths": depths,
                 "intercept_ms": a, "slope_ms_per_layer": b, "loglog_slope": loglog})
  return fits


def markdown(rows: Sequence[dict], fits: Sequence[dict], header: Sequence[str]) -> str:
  cols = ["depth", "width", "batch", "impl", "agent", "params", "compile_s", "step_ms", "gflops_per_step",
          "tflops", "frac_peak", "peak_mem_mb", "xla_mem_mb", "unroll_compile_s", "unroll_ms",
          "train_ms", "sgd_h_100M", "total_h_100M", "status"]
  lines = list(header) + [""]
  lines.append("| " + " | ".join(cols) + " |")
  lines.append("|" + "---|" * len(cols))
  for r in rows:
    cells = []
    for c in cols:
      v = r.get(c, "")
      if c == "params" and isinstance(v, int):
        v = f"{v / 1e6:.2f}M"
      elif c == "train_ms" and v not in ("", None):
        v = _fmt(v) + (" (est)" if r.get("train_ms_kind") == "estimated" else "")
      elif c == "frac_peak" and isinstance(v, float):
        v = f"{100 * v:.1f}%"
      cells.append(_fmt(v) if not isinstance(v, str) else v)
    lines.append("| " + " | ".join(cells) + " |")
  if fits:
    lines += ["", "Step time against depth, least squares `step_ms = intercept + slope * depth` "
              "(depth = Dense layers per trunk; log-log slope between the deepest row and the "
              "shallowest row of depth >= 16):", "",
              "| agent | impl | width | batch | depths | intercept ms | ms per layer | log-log "
              "slope |", "|---|---|---|---|---|---|---|---|"]
    for f in fits:
      lines.append(f"| {f.get('agent', 'crl')} | {f['impl']} | {f['width']} | {f['batch']} | "
                   f"{','.join(map(str, f['depths']))} | {_fmt(f['intercept_ms'])} | "
                   f"{_fmt(f['slope_ms_per_layer'])} | {_fmt(f['loglog_slope'])} |")
  notes = sorted({n for r in rows for n in r.get("notes", [])})
  if notes:
    lines += [""] + [f"- {n}" for n in notes]
  return "\n".join(lines)


def write_csv(path: str, rows: Sequence[dict]) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      row = {c: r.get(c, "") for c in CSV_COLUMNS}
      row["note"] = "; ".join(r.get("notes", []))
      for c, v in row.items():
        if isinstance(v, float):
          row[c] = "" if not math.isfinite(v) else f"{v:.6g}"
      w.writerow(row)


def plot(path: str, rows: Sequence[dict], title: str) -> str:
  """Step time and peak memory against depth (log-log), one line per impl (and shape)."""
  series: Dict[str, List[dict]] = {}
  shapes = {(r["width"], r["batch"]) for r in rows}
  for r in rows:
    if not isinstance(r.get("step_ms"), float):
      continue
    label = r["impl"] if len(shapes) == 1 else f"{r['impl']} w{r['width']} b{r['batch']}"
    if len({x.get("agent", "crl") for x in rows}) > 1:
      label = f"{r.get('agent', 'crl')} {label}"
    series.setdefault(label, []).append(r)
  panels = [("step ms", "step_ms"), ("peak mem MB", "peak_mem_mb")]
  data = {lab: {key: sorted((r["depth"], r[key]) for r in rs
                            if isinstance(r.get(key), (int, float)) and r[key] > 0)
                for _, key in panels} for lab, rs in series.items()}
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    import png_plot  # pylint: disable=g-import-not-at-top
    png_plot.loglog_panels(path, [(name, {lab: d[key] for lab, d in data.items()})
                                  for name, key in panels], xlabel="depth", title=title)
    return "builtin"
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, (name, key) in zip(axes, panels):
    for lab, d in data.items():
      if d[key]:
        xs, ys = zip(*d[key])
        ax.plot(xs, ys, marker="o", label=lab)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth (Dense layers per trunk)")
    ax.set_ylabel(name)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return "matplotlib"
