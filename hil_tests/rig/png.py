"""A small, strict PNG reader and writer for the panel's pictures (no Pillow on the host).

`read()` checks what a viewer would trip over -- the signature, every chunk's CRC, the zlib
stream's Adler-32 (zlib.decompress verifies it), the exact amount of image data -- and returns
the image as rows of palette indices (colour type 3) or grey values (colour type 0), unpacked
from bit depths 1, 2, 4 or 8. Only filter type 0 is accepted: the firmware writes no other, so
anything else means the file is not the firmware's.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import cast

SIGNATURE = b"\x89PNG\r\n\x1a\n"
Rgb = tuple[int, int, int]


class PngError(ValueError):
    pass


@dataclass
class Image:
    width: int
    height: int
    depth: int
    colour_type: int
    palette: list[tuple[int, int, int]] | None
    rows: list[list[int]]  # palette index or grey sample per pixel
    chunks: list[str]

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        v = self.rows[y][x]
        if self.palette is not None:
            return self.palette[v]
        g = v * 255 // ((1 << self.depth) - 1)
        return (g, g, g)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG signature")
    out = []
    pos = len(SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise PngError("truncated chunk header")
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n or pos + 12 + n > len(data):
            raise PngError(f"truncated {kind!r} chunk")
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            raise PngError(f"bad CRC in {kind!r} chunk")
        out.append((kind, body))
        pos += 12 + n
        if kind == b"IEND":
            break
    if not out or out[-1][0] != b"IEND" or pos != len(data):
        raise PngError("no IEND at the end of the file")
    return out


def read(data: bytes) -> Image:
    cs = chunks(data)
    if cs[0][0] != b"IHDR":
        raise PngError("IHDR is not the first chunk")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", cs[0][1])
    if (comp, filt, interlace) != (0, 0, 0) or ctype not in (0, 3) or depth not in (1, 2, 4, 8):
        raise PngError(f"unsupported IHDR {cs[0][1]!r}")
    palette: list[Rgb] | None = None
    idat = b""
    for kind, body in cs[1:]:
        if kind == b"PLTE":
            # (r, g, b) triples; a PLTE chunk is a multiple of 3 bytes long
            palette = [cast(Rgb, tuple(body[i:i + 3])) for i in range(0, len(body), 3)]
        elif kind == b"IDAT":
            idat += body
    if ctype == 3 and palette is None:
        raise PngError("palette image without PLTE")
    try:
        raw = zlib.decompress(idat)  # checks the Adler-32
    except zlib.error as e:
        raise PngError(f"image data: {e}") from e
    rb = (w * depth + 7) // 8
    if len(raw) != h * (1 + rb):
        raise PngError(f"{len(raw)} bytes of image data, expected {h * (1 + rb)}")
    per = 8 // depth
    mask = (1 << depth) - 1
    rows = []
    for y in range(h):
        line = raw[y * (1 + rb):(y + 1) * (1 + rb)]
        if line[0] != 0:
            raise PngError(f"row {y}: filter type {line[0]}")
        row = []
        for x in range(w):
            b = line[1 + x // per]
            shift = 8 - depth * (x % per + 1)
            row.append((b >> shift) & mask)
        rows.append(row)
    return Image(w, h, depth, ctype, palette, rows, [k.decode() for k, _ in cs])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_rgb(img: Image, scale: int = 1) -> bytes:
    """The image as an 8-bit RGB PNG, each pixel a scale x scale square (for the docs)."""
    raw = bytearray()
    for y in range(img.height):
        line = bytearray([0])
        for x in range(img.width):
            line += bytes(img.rgb(x, y)) * scale
        raw += bytes(line) * scale
    ihdr = struct.pack(">IIBBBBB", img.width * scale, img.height * scale, 8, 2, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + \
        _chunk(b"IEND", b"")
