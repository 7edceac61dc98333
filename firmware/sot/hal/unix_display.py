# Unix-port stand-ins for the shop panel: each frame becomes <prefix>.png plus <prefix>.txt (the
# text items drawn, one per line, in drawing order), both written to a .new file and renamed so a
# reader never sees a torn frame.
#
# The interface is the one a board driver (ILI9341 over SPI, SSD1306 over I2C) implements:
#   width, height      pixels
#   format             framebuf constant of the strips the panel hands in
#   strip_h            rows per strip; the renderer draws one strip at a time
#   mono               True for a 1-bit display
#   palette            16 (r, g, b) for a colour display (the panel sets its own)
#   begin_frame()      a new frame starts; strips follow top to bottom
#   write_strip(y, buf) rows y .. y+strip_h-1, width*strip_h pixels in `format`
#   end_frame(texts)   the frame is complete; texts = the strings drawn on it
#
# The frame is streamed to the file strip by strip: a 320x240 frame would not fit the heap.
# There is no compressor on the port, so the PNG's zlib stream is made of stored deflate blocks.
import binascii
import framebuf
import os
import struct
from micropython import const

_STORED_MAX = const(65535)  # bytes of one stored deflate block (RFC 1951 3.2.4: LEN is 16 bits)
_ADLER_MOD = const(65521)


class _PngDisplay:
    mono = False
    palette = None

    def __init__(self, path_prefix, width, height, fmt, depth, strip_h):
        self.width = width
        self.height = height
        self.format = fmt
        self.strip_h = strip_h
        self.frames = 0
        self._png = path_prefix + ".png"
        self._txt = path_prefix + ".txt"
        self._depth = depth
        self._rb = (width * depth + 7) // 8
        # One PNG scanline: filter byte 0 ("None"), then the row exactly as framebuf stores it.
        self._row = bytearray(1 + self._rb)
        self._rowmv = memoryview(self._row)
        self._hdr = bytearray(5)
        self._f = None

    # -- PNG chunks ---------------------------------------------------------------------------
    # A chunk is: length (4 bytes, big-endian, data only), type (4 ASCII), data, CRC-32 over type
    # and data. IDAT's length must be written first, so the whole stream length is computed
    # up front (stored blocks make it exact).

    def _chunk(self, kind, data):
        f = self._f
        f.write(struct.pack(">I", len(data)))
        f.write(kind)
        f.write(data)
        f.write(struct.pack(">I", binascii.crc32(data, binascii.crc32(kind)) & 0xFFFFFFFF))

    def _put(self, data):
        self._f.write(data)
        self._crc = binascii.crc32(data, self._crc)

    def begin_frame(self):
        if self._f is not None:
            self._f.close()
        self._f = open(self._png + ".new", "wb")
        self._f.write(b"\x89PNG\r\n\x1a\n")
        colour_type = 0 if self.mono else 3  # 0 = greyscale, 3 = palette index
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, self._depth,
                                         colour_type, 0, 0, 0))
        if not self.mono:
            pal = self.palette or [(i * 17, i * 17, i * 17) for i in range(16)]
            plte = bytearray(3 * len(pal))
            for i, c in enumerate(pal):
                plte[3 * i] = c[0]
                plte[3 * i + 1] = c[1]
                plte[3 * i + 2] = c[2]
            self._chunk(b"PLTE", plte)
        raw = self.height * (1 + self._rb)
        blocks = (raw + _STORED_MAX - 1) // _STORED_MAX
        # zlib stream (RFC 1950): CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (no dictionary,
        # check bits so that 0x7801 % 31 == 0); deflate blocks, each with a 5-byte stored
        # header; Adler-32 of the raw data, big-endian.
        self._f.write(struct.pack(">I", 2 + blocks * 5 + raw + 4))
        self._f.write(b"IDAT")
        self._crc = binascii.crc32(b"IDAT")
        self._put(b"\x78\x01")
        self._left = raw
        self._block_left = 0
        self._s1 = 1
        self._s2 = 0
        self._y = 0

    def _block(self):
        # Stored block header: byte 0 = BFINAL in bit 0, BTYPE 00 in bits 1-2, the rest padding
        # to the byte boundary; then LEN and its ones' complement NLEN, little-endian.
        n = min(self._left, _STORED_MAX)
        h = self._hdr
        h[0] = 1 if n == self._left else 0
        h[1] = n & 0xFF
        h[2] = n >> 8
        h[3] = ~n & 0xFF
        h[4] = (~n >> 8) & 0xFF
        self._put(h)
        self._block_left = n

    def _scanline(self):
        row = self._row
        s1 = self._s1
        s2 = self._s2
        for b in row:
            s1 += b
            s2 += s1
        # One modulo per row is enough: s2 < 65521 + 161 * (65521 + 161 * 255) stays a small int.
        self._s1 = s1 % _ADLER_MOD
        self._s2 = s2 % _ADLER_MOD
        off = 0
        n = len(row)
        while off < n:
            if self._block_left == 0:
                self._block()
            k = min(n - off, self._block_left)
            self._put(self._rowmv[off:off + k] if k < n else row)
            off += k
            self._block_left -= k
            self._left -= k
        self._y += 1

    def write_strip(self, y, buf):
        if self._f is None:
            raise ValueError("write_strip outside a frame")
        if y != self._y:
            raise ValueError("strips must come top to bottom")
        rb = self._rb
        mv = memoryview(buf)
        for r in range(min(self.strip_h, self.height - y)):
            self._row[1:] = mv[r * rb:(r + 1) * rb]
            self._scanline()

    def end_frame(self, texts=()):
        if self._f is None:
            return
        # An unfinished frame still becomes a valid picture: the missing rows are colour 0.
        if self._y < self.height:
            self._row[1:] = bytes(self._rb)
            while self._y < self.height:
                self._scanline()
        self._put(struct.pack(">I", (self._s2 << 16) | self._s1))
        f = self._f
        f.write(struct.pack(">I", self._crc & 0xFFFFFFFF))
        self._chunk(b"IEND", b"")
        f.close()
        self._f = None
        os.rename(self._png + ".new", self._png)
        with open(self._txt + ".new", "w") as t:
            for s in texts:
                t.write(s)
                t.write("\n")
        os.rename(self._txt + ".new", self._txt)
        self.frames += 1


class ColorDisplay(_PngDisplay):
    """A colour panel (ILI9341-like, 320x240): 16 colours from a palette, 4 bits per pixel.
    framebuf's GS4_HMSB puts the left pixel in the high nibble, which is PNG's 4-bit layout."""

    def __init__(self, path_prefix, width=320, height=240, strip_h=16):
        super().__init__(path_prefix, width, height, framebuf.GS4_HMSB, 4, strip_h)


class MonoDisplay(_PngDisplay):
    """A 1-bit panel (SSD1306-like, 128x64), one strip for the whole frame. MONO_HLSB puts the
    left pixel in the most significant bit, which is PNG's 1-bit layout; 1 = lit = white."""

    mono = True

    def __init__(self, path_prefix, width=128, height=64, strip_h=64):
        super().__init__(path_prefix, width, height, framebuf.MONO_HLSB, 1, strip_h)
