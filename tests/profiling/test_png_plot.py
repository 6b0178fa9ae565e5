"""The dependency-free PNG fallback writes a valid image with lines in it."""

import struct
import zlib

import png_plot


def test_loglog_png_is_valid(tmp_path):
  path = tmp_path / "p.png"
  png_plot.loglog_panels(str(path), [
      ("step ms", {"xla": [(4, 1.0), (16, 3.0), (64, 11.0)], "pallas": [(4, 0.5), (64, 4.0)]}),
      ("peak mem mb", {"xla": [(4, 500.0), (64, 900.0)]})], xlabel="depth", title="t")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  w, h = struct.unpack(">II", data[16:24])
  assert (w, h) == (1040, 430)
  # Decode the pixels: both series colours appear.
  idat = b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                  for i in _chunks(data, b"IDAT"))
  raw = zlib.decompress(idat)
  stride = 1 + 3 * w
  pixels = {bytes(raw[y * stride + 1 + 3 * x: y * stride + 4 + 3 * x])
            for y in range(h) for x in range(0, w, 1)}
  assert bytes(png_plot.COLORS[0]) in pixels and bytes(png_plot.COLORS[1]) in pixels


def _chunks(data, tag):
  i = 8
  while i < len(data):
    n = struct.unpack(">I", data[i:i + 4])[0]
    if data[i + 4:i + 8] == tag:
      yield i
    i += 12 + n
