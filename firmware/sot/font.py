# Text for the status panel: framebuf's built-in 8x8 ASCII font plus the few glyphs Swedish
# needs, at scale 1 to 4.
#
# Extra glyphs are 8 bytes each, one byte per row, MSB = leftmost pixel (MONO_HLSB). They follow
# the built-in font's metrics: capitals occupy rows 0-6, lowercase bodies rows 2-6, row 7 and
# column 7 stay empty so letters never touch. The built-in capitals leave no room above them, so
# Ä and Ö have one-pixel dots in row 0 over a body one row shorter (rows 1-6), placed so that dot
# and body only meet at a corner; Å has a three-row ring over a four-row A. Lowercase letters
# have room for two-pixel marks in rows 0-1.
import framebuf
from micropython import const

W = const(8)  # advance per character at scale 1, in pixels

EXTRA = "ÅÄÖåäöé·–…"
_DATA = (
    b"\x18\x24\x18\x3c\x66\x7e\x66\x00"  # Å
    b"\x42\x18\x3c\x66\x7e\x66\x66\x00"  # Ä
    b"\x42\x3c\x66\x66\x66\x66\x3c\x00"  # Ö
    b"\x18\x24\x3c\x06\x3e\x66\x3e\x00"  # å
    b"\x66\x00\x3c\x06\x3e\x66\x3e\x00"  # ä
    b"\x66\x00\x3c\x66\x66\x66\x3c\x00"  # ö
    b"\x0c\x18\x3c\x66\x7e\x60\x3e\x00"  # é
    b"\x00\x00\x00\x18\x18\x00\x00\x00"  # · middle dot
    b"\x00\x00\x00\xff\x00\x00\x00\x00"  # – en dash
    b"\x00\x00\x00\x00\x00\xdb\xdb\x00"  # … ellipsis
)
# Typographic characters that are common in pasted messages, drawn as their ASCII look-alike.
_ALIAS_FROM = "\u2018\u2019\u201c\u201d\u2014\u00a0\u00ab\u00bb\u00c9\u00fc\u00dc"
_ALIAS_TO = "''\"\"\u2013 \"\"EuU"

_buf = bytearray(8)
_fb = framebuf.FrameBuffer(_buf, 8, 8, framebuf.MONO_HLSB)


def width(s, scale=1):
    return len(s) * W * scale


def _load(ch):
    """Put the glyph of one character into the 8x8 scratch buffer."""
    o = ord(ch)
    if 32 <= o < 127:
        _fb.fill(0)
        _fb.text(ch, 0, 0, 1)
        return
    i = EXTRA.find(ch)
    if i < 0:
        j = _ALIAS_FROM.find(ch)
        if j >= 0:
            _load(_ALIAS_TO[j])
            return
        _fb.fill(0)
        # A combining mark (U+0300-036F) that got this far (crisis texts arrive composed,
        # docs/mqtt.md) is left blank rather than drawn as a "?" after its letter.
        if not 0x300 <= o <= 0x36F:
            _fb.text(" " if o < 32 else "?", 0, 0, 1)
        return
    i *= 8
    for r in range(8):
        _buf[r] = _DATA[i + r]


def _blit(fb, x, y, c, s):
    # One filled rect per horizontal run of set pixels: a letter is a handful of rects.
    for r in range(8):
        bits = _buf[r]
        if not bits:
            continue
        col = 0
        while bits:
            if bits & 0x80:
                start = col
                while bits & 0x80:
                    bits = (bits << 1) & 0xFF
                    col += 1
                fb.fill_rect(x + start * s, y + r * s, (col - start) * s, s, c)
            else:
                bits = (bits << 1) & 0xFF
                col += 1


def text(fb, s, x, y, c, scale=1):
    """Draw s at (x, y) in colour c, each font pixel a scale x scale square. Characters that are
    neither ASCII nor in EXTRA are drawn as '?' (control characters as a space)."""
    n = len(s)
    i = 0
    if scale == 1:
        # Runs of printable ASCII go straight to the built-in font, which is much faster.
        while i < n:
            j = i
            while j < n and 32 <= ord(s[j]) < 127:
                j += 1
            if j > i:
                fb.text(s[i:j], x + i * W, y, c)
                i = j
            else:
                _load(s[i])
                _blit(fb, x + i * W, y, c, 1)
                i += 1
        return
    step = W * scale
    while i < n:
        ch = s[i]
        if ch != " ":
            _load(ch)
            _blit(fb, x + i * step, y, c, scale)
        i += 1
