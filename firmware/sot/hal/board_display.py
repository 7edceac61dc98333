# The two panels a board drives, behind the display interface that sot/panel.py renders into
# (described in hal/unix_display.py): width, height, format, strip_h, mono, palette,
# begin_frame(), write_strip(y, buf), end_frame(texts).
#
#   Ili9341  320x240 colour over SPI. The panel hands in 16-row strips of 4-bit palette indices
#            (GS4_HMSB); framebuf.blit() with a 16-entry RGB565 palette turns ROWS rows at a time
#            into the 16-bit pixels the controller takes, in C, into one small buffer (2.5 KiB),
#            which goes out over SPI at once. The frame never exists whole in RAM.
#   Ssd1306  128x64 mono over I2C. The panel hands in the whole frame as one MONO_HLSB strip;
#            the controller's memory is in pages of 8 rows (MONO_VLSB), so the strip is blitted
#            into a 1 KiB page buffer that goes out after the frame ends.
#
# The command sequences follow the controllers' datasheets (ILI9341 V1.11, SSD1306 rev 1.1); no
# board has shown a picture from this code yet (docs/hardware.md).
import struct
import time

import framebuf
from micropython import const

_SWRESET = const(0x01)
_SLPOUT = const(0x11)
_COLMOD = const(0x3A)
_MADCTL = const(0x36)
_DISPON = const(0x29)
_CASET = const(0x2A)
_PASET = const(0x2B)
_RAMWR = const(0x2C)
# MADCTL: row/column exchange (landscape) and BGR colour filter order, for the common
# 2.4"/2.8" modules; a module mounted the other way round sets `madctl` in [board.display].
MADCTL_LANDSCAPE = const(0x28)


def rgb565_wire(r, g, b):
    """An RGB colour as the 16-bit value framebuf stores so that the two bytes reach the
    ILI9341 high byte first (framebuf keeps RGB565 pixels little-endian)."""
    c = ((r & 0xF8) << 8) | ((g & 0xFC) << 3) | (b >> 3)
    return ((c & 0xFF) << 8) | (c >> 8)


class Ili9341:
    mono = False

    ROWS = 4  # strip rows converted and sent per SPI write

    def __init__(self, spi, cs, dc, rst=None, backlight=None, madctl=MADCTL_LANDSCAPE,
                 width=320, height=240, strip_h=16):
        self.width = width
        self.height = height
        self.format = framebuf.GS4_HMSB
        self.strip_h = strip_h
        self.palette = None  # 16 (r, g, b), set by the panel
        self.frames = 0
        self._spi = spi
        self._cs = cs
        self._dc = dc
        self._out = bytearray(width * self.ROWS * 2)
        self._outmv = memoryview(self._out)
        self._ofb = framebuf.FrameBuffer(self._out, width, self.ROWS, framebuf.RGB565)
        self._pal = framebuf.FrameBuffer(bytearray(32), 16, 1, framebuf.RGB565)
        self._pal_of = None  # the palette list the RGB565 table was made from
        self._src = None  # (strip buffer, its FrameBuffer): made once, the panel reuses its buffer
        self._cmd1 = bytearray(1)
        self._win = bytearray(4)
        cs.value(1)
        if rst is not None:
            rst.value(0)
            time.sleep_ms(10)
            rst.value(1)
        # Start-up only (the app has not started its tasks yet): the controller needs these waits.
        self._cmd(_SWRESET)
        time.sleep_ms(150)
        self._cmd(_SLPOUT)
        time.sleep_ms(150)
        self._cmd(_COLMOD, b"\x55")  # 16 bits per pixel
        self._cmd(_MADCTL, bytes((madctl,)))
        self._cmd(_DISPON)
        if backlight is not None:
            backlight.value(1)

    def _cmd(self, c, data=None):
        self._cmd1[0] = c
        self._cs.value(0)
        self._dc.value(0)
        self._spi.write(self._cmd1)
        if data:
            self._dc.value(1)
            self._spi.write(data)
        self._cs.value(1)

    def begin_frame(self):
        pal = self.palette
        if pal is not None and pal is not self._pal_of:
            for i in range(16):
                r, g, b = pal[i] if i < len(pal) else (0, 0, 0)
                self._pal.pixel(i, 0, rgb565_wire(r, g, b))
            self._pal_of = pal

    def write_strip(self, y, buf):
        w = self.width
        h = min(self.strip_h, self.height - y)
        if h <= 0:
            return
        src = self._src
        if src is None or src[0] is not buf:
            src = self._src = (buf, framebuf.FrameBuffer(buf, w, self.strip_h, self.format))
        win = self._win
        struct.pack_into(">HH", win, 0, 0, w - 1)
        self._cmd(_CASET, win)
        struct.pack_into(">HH", win, 0, y, y + h - 1)
        self._cmd(_PASET, win)
        self._cmd1[0] = _RAMWR
        cs = self._cs
        dc = self._dc
        cs.value(0)
        dc.value(0)
        self._spi.write(self._cmd1)
        dc.value(1)
        rows = self.ROWS
        for r in range(0, h, rows):
            k = min(rows, h - r)
            self._ofb.blit(src[1], 0, -r, -1, self._pal)
            self._spi.write(self._outmv[:w * k * 2])
        cs.value(1)

    def end_frame(self, texts=()):
        self.frames += 1


class Ssd1306:
    mono = True
    palette = None

    _INIT = (
        0xAE,  # display off
        0x20, 0x00,  # horizontal addressing: the page buffer goes out in one write
        0x40,  # start line 0
        0xA1,  # column 127 is SEG0 (the usual module orientation)
        0xA8, 0x3F,  # multiplex 64
        0xC8,  # COM scan from COM63
        0xD3, 0x00,  # no vertical offset
        0xDA, 0x12,  # COM pins: alternative configuration (128x64 modules)
        0xD5, 0x80,  # clock divide / oscillator
        0xD9, 0xF1,  # pre-charge (internal charge pump)
        0xDB, 0x30,  # VCOMH deselect level
        0x81, 0xFF,  # contrast: readable beside a shop window
        0xA4,  # show the RAM
        0xA6,  # not inverted: 1 = lit
        0x8D, 0x14,  # charge pump on
        0xAF,  # display on
    )

    def __init__(self, i2c, addr=0x3C, width=128, height=64):
        self.width = width
        self.height = height
        self.format = framebuf.MONO_HLSB
        self.strip_h = height
        self.frames = 0
        self._i2c = i2c
        self._addr = addr
        self._page = bytearray(width * height // 8)
        self._pfb = framebuf.FrameBuffer(self._page, width, height, framebuf.MONO_VLSB)
        self._src = None
        self._c = bytearray(2)  # control byte 0x00 (a command follows), the command
        for c in self._INIT:
            self._command(c)

    def _command(self, c):
        self._c[1] = c
        self._i2c.writeto(self._addr, self._c)

    def begin_frame(self):
        self._pfb.fill(0)

    def write_strip(self, y, buf):
        src = self._src
        if src is None or src[0] is not buf:
            src = self._src = (buf, framebuf.FrameBuffer(buf, self.width, self.strip_h,
                                                         self.format))
        self._pfb.blit(src[1], 0, y)

    def end_frame(self, texts=()):
        for c in (0x21, 0, self.width - 1, 0x22, 0, self.height // 8 - 1):
            self._command(c)
        self._i2c.writevto(self._addr, (b"\x40", self._page))  # 0x40: data follows
        self.frames += 1
