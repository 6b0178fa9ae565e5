"""A dependency-free log-log line plot written as PNG (used when matplotlib is not installed).

Only what the profiling scripts need: side-by-side panels, log2 x axis, log10 y axis with
decade grid lines and labels, one coloured polyline with markers per series, a legend, and
a 3x5 pixel font (scaled) for lowercase text and digits. Standard library only (zlib).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Dict, List, Sequence, Tuple

# 3x5 glyphs, rows top to bottom, 3 bits each (MSB = left column).
_GLYPHS = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 2, 2),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), "a": (2, 5, 7, 5, 5), "b": (6, 5, 6, 5, 6),
    "c": (3, 4, 4, 4, 3), "d": (6, 5, 5, 5, 6), "e": (7, 4, 6, 4, 7), "f": (7, 4, 6, 4, 4),
    "g": (3, 4, 5, 5, 3), "h": (5, 5, 7, 5, 5), "i": (7, 2, 2, 2, 7), "j": (1, 1, 1, 5, 2),
    "k": (5, 5, 6, 5, 5), "l": (4, 4, 4, 4, 7), "m": (5, 7, 7, 5, 5), "n": (6, 5, 5, 5, 5),
    "o": (2, 5, 5, 5, 2), "p": (6, 5, 6, 4, 4), "q": (2, 5, 5, 6, 3), "r": (6, 5, 6, 5, 5),
    "s": (3, 4, 2, 1, 6), "t": (7, 2, 2, 2, 2), "u": (5, 5, 5, 5, 7), "v": (5, 5, 5, 5, 2),
    "w": (5, 5, 7, 7, 5), "x": (5, 5, 2, 5, 5), "y": (5, 5, 2, 2, 2), "z": (7, 1, 2, 4, 7),
    ".": (0, 0, 0, 0, 2), ",": (0, 0, 0, 2, 4), "-": (0, 0, 7, 0, 0), "+": (0, 2, 7, 2, 0),
    "/": (1, 1, 2, 4, 4), "(": (1, 2, 2, 2, 1), ")": (4, 2, 2, 2, 4), ":": (0, 2, 0, 2, 0),
    "=": (0, 7, 0, 7, 0), "%": (5, 1, 2, 4, 5), "_": (0, 0, 0, 0, 7), " ": (0, 0, 0, 0, 0),
    "e+": (0, 0, 0, 0, 0),
}
COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127)]
GRID, AXIS, TEXT, BG = (225, 225, 225), (60, 60, 60), (20, 20, 20), (255, 255, 255)


class Canvas:
  def __init__(self, width: int, height: int):
    self.w, self.h = width, height
    self.px = bytearray(bytes(BG) * (width * height))

  def set(self, x: int, y: int, c) -> None:
    if 0 <= x < self.w and 0 <= y < self.h:
      i = 3 * (y * self.w + x)
      self.px[i:i + 3] = bytes(c)

  def rect(self, x0, y0, x1, y1, c) -> None:
    for y in range(max(0, y0), min(self.h, y1 + 1)):
      for x in range(max(0, x0), min(self.w, x1 + 1)):
        self.set(x, y, c)

  def line(self, x0, y0, x1, y1, c, thick: int = 1) -> None:
    n = max(abs(x1 - x0), abs(y1 - y0), 1)
    for i in range(n + 1):
      x = round(x0 + (x1 - x0) * i / n)
      y = round(y0 + (y1 - y0) * i / n)
      r = thick // 2
      self.rect(x - r, y - r, x - r + thick - 1, y - r + thick - 1, c)

  def text(self, x: int, y: int, s: str, c=TEXT, scale: int = 2) -> int:
    """Draws ``s`` with its top-left at (x, y); returns the x after it."""
    for ch in s.lower():
      glyph = _GLYPHS.get(ch, _GLYPHS["-"] if ch not in _GLYPHS else _GLYPHS[" "])
      for row, bits in enumerate(glyph):
        for col in range(3):
          if bits >> (2 - col) & 1:
            self.rect(x + col * scale, y + row * scale, x + col * scale + scale - 1,
                      y + row * scale + scale - 1, c)
      x += 4 * scale
    return x

  def png(self) -> bytes:
    raw = b"".join(b"\x00" + bytes(self.px[3 * y * self.w: 3 * (y + 1) * self.w])
                   for y in range(self.h))

    def chunk(tag, data):
      return (struct.pack(">I", len(data)) + tag + data
              + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def text_width(s: str, scale: int = 2) -> int:
  return 4 * scale * len(s)


def _tick_label(v: float) -> str:
  if v >= 1 and float(v).is_integer():
    return str(int(v))
  return f"{v:g}"


def _panel(cv: Canvas, x0: int, y0: int, w: int, h: int, name: str,
           series: Dict[str, List[Tuple[float, float]]], xlabel: str, colors) -> None:
  left, bottom, top, right = 70, 50, 30, 10
  px0, py0, px1, py1 = x0 + left, y0 + top, x0 + w - right, y0 + h - bottom
  pts = [p for s in series.values() for p in s if p[0] > 0 and p[1] > 0]
  cv.text(x0 + left, y0 + 8, name, scale=2)
  cv.line(px0, py1, px1, py1, AXIS)
  cv.line(px0, py0, px0, py1, AXIS)
  if not pts:
    cv.text(px0 + 10, py0 + 10, "no data")
    return
  lx = [math.log2(p[0]) for p in pts]
  ly = [math.log10(p[1]) for p in pts]
  xlo, xhi = math.floor(min(lx)), math.ceil(max(lx))
  ylo, yhi = math.floor(min(ly)), math.ceil(max(ly))
  if xhi == xlo:
    xhi += 1
  if yhi == ylo:
    yhi += 1

  def X(v):
    return round(px0 + (math.log2(v) - xlo) / (xhi - xlo) * (px1 - px0))

  def Y(v):
    return round(py1 - (math.log10(v) - ylo) / (yhi - ylo) * (py1 - py0))

  for e in range(xlo, xhi + 1):
    x = X(2.0 ** e)
    cv.line(x, py0, x, py1 - 1, GRID)
    label = _tick_label(2.0 ** e)
    cv.text(x - text_width(label) // 2, py1 + 8, label)
  for e in range(ylo, yhi + 1):
    for m in range(2, 10):
      if e < yhi:
        y = Y(m * 10.0 ** e)
        for x in range(px0 + 1, px1, 4):
          cv.set(x, y, GRID)
    y = Y(10.0 ** e)
    cv.line(px0 + 1, y, px1, y, GRID)
    label = _tick_label(10.0 ** e)
    cv.text(px0 - 6 - text_width(label), y - 5, label)
  cv.text(px0 + (px1 - px0) // 2 - text_width(xlabel) // 2, py1 + 28, xlabel)
  for i, (label, s) in enumerate(series.items()):
    c = colors[i % len(colors)]
    s = sorted(p for p in s if p[0] > 0 and p[1] > 0)
    for (a, b), (u, v) in zip(s, s[1:]):
      cv.line(X(a), Y(b), X(u), Y(v), c, thick=2)
    for a, b in s:
      cv.rect(X(a) - 3, Y(b) - 3, X(a) + 3, Y(b) + 3, c)
    ty = py0 + 6 + 16 * i
    cv.rect(px0 + 8, ty + 2, px0 + 20, ty + 7, c)
    cv.text(px0 + 26, ty, label)


def loglog_panels(path: str, panels: Sequence[Tuple[str, Dict[str, List[Tuple[float, float]]]]],
                  xlabel: str = "", title: str = "", panel_size=(520, 400)) -> None:
  """Writes side-by-side log-log panels ``[(name, {series label: [(x, y), ...]})]`` to PNG."""
  pw, ph = panel_size
  head = 30 if title else 0
  cv = Canvas(pw * len(panels), ph + head)
  if title:
    cv.text(10, 8, title[: (cv.w - 20) // 8])
  for i, (name, series) in enumerate(panels):
    _panel(cv, i * pw, head, pw, ph, name, series, xlabel, COLORS)
  with open(path, "wb") as f:
    f.write(cv.png())
