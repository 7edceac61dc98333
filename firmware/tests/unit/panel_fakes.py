# A display that looks at the strips instead of showing them, for test_panel.py: it keeps the
# colour of chosen pixels, which rows have anything drawn, the strip order and the texts.
import framebuf


class ProbeDisplay:
    def __init__(self, width=320, height=240, strip_h=16, mono=False, points=()):
        self.width = width
        self.height = height
        self.strip_h = strip_h
        self.mono = mono
        self.format = framebuf.MONO_HLSB if mono else framebuf.GS4_HMSB
        self.palette = None
        self.points = list(points)
        self.frames = 0
        self.texts = None
        self.open = False

    def begin_frame(self):
        self.open = True
        self.strips = []
        self.pixels = {}
        self.lit_rows = bytearray(self.height)

    def pixel(self, buf, x, r):
        if self.mono:
            return (buf[r * (self.width // 8) + x // 8] >> (7 - x % 8)) & 1
        b = buf[(r * self.width + x) // 2]
        return b >> 4 if x % 2 == 0 else b & 15

    def write_strip(self, y, buf):
        assert self.open
        self.strips.append(y)
        rb = self.width // 8 if self.mono else self.width // 2
        for r in range(min(self.strip_h, self.height - y)):
            base = r * rb
            for i in range(base, base + rb):
                if buf[i]:
                    self.lit_rows[y + r] = 1
                    break
        for x, py in self.points:
            if y <= py < y + self.strip_h:
                self.pixels[(x, py)] = self.pixel(buf, x, py - y)

    def end_frame(self, texts):
        assert self.open
        self.open = False
        self.frames += 1
        self.texts = list(texts)

    def lit(self, y0, y1):
        """How many rows in y0..y1-1 have anything drawn on them."""
        return sum(self.lit_rows[y0:y1])


class NullDisplay:
    """Accepts frames and keeps nothing: for measuring the renderer's own heap."""

    def __init__(self, width=320, height=240, strip_h=16, mono=False):
        self.width = width
        self.height = height
        self.strip_h = strip_h
        self.mono = mono
        self.format = framebuf.MONO_HLSB if mono else framebuf.GS4_HMSB
        self.palette = None
        self.strips = 0

    def begin_frame(self):
        pass

    def write_strip(self, y, buf):
        self.strips += 1

    def end_frame(self, texts):
        pass
