# Turn a block of register bytes into point values. A point is the tuple that
# gateway/tooling/compiler.py compiles (a tuple, not a dict: the controller keeps every point of
# every device in RAM, and on a 64 KiB heap each saved object counts):
#
#   (name, block, offset, type, scale, rmin, rmax, inv, enum, extra)
#     block   index into the device's read blocks; offset: register offset inside that block
#     type    U16 | S16 | U32 | S32 | F32 | STR, plus LOW_WORD_FIRST for 32-bit values stored low
#             word first
#     scale   multiplier or None;  rmin/rmax: plausible engineering range or None
#     inv     flat tuple of raw sentinel ranges (lo, hi, lo, hi, ...) or None
#     enum    tuple of labels indexed by the raw value (None for unused codes) or None
#     extra   (lowest bit, width) of a bit field, the register count of a STR, or None
#
# A bit field is checked against `inv` as the whole register (an unimplemented alarm word reads
# as the sentinel), then shifted and masked, then mapped by `enum`. A STR is ASCII, two
# characters per register, high byte first, with trailing NULs and spaces dropped.
#
# decode() returns (value, None) or (None, "invalid"). Invalid means the device sent no number:
# a sentinel (e.g. the DSE GenComm n/a band 0xFFF8-0xFFFF), a value outside the engineering range
# (a fuel level of 150 %), an enum code the map does not know, or an f32 NaN/infinity.
#
# "Raw" is the integer the registers hold as the type says (s16/s32 signed); for f32 it is the
# 32-bit pattern, so a sentinel like 0xFFFFFFFF can be listed for a float too.
#
# Rounding: raw * scale in binary floating point gives 27.400000000000002 for 274 * 0.1. Scaled
# values are rounded to as many significant digits as the port's float reliably holds: 12 with
# double precision (unix port) -- more than any 32-bit register carries (10), fewer than the
# error of a double (15-16) -- and 6 with single precision (ESP32, RP2040, the qemu board), where
# a float carries only 6 to 7 digits: asking round() for more there multiplies the error instead
# of removing it (2305 * 0.1 rounded to 12 digits gave 230.50002). 6 digits give every 16-bit
# register times 0.1, 0.01 or 0.001 exactly; a 32-bit register's full range (10 digits) does not
# fit a single-precision float at all.
# An f32 is returned as the shortest decimal (6 to 9 digits) that reads back as the same f32, so
# a meter's 230.1 is 230.1, not 230.10000610351562 (with single precision floats the f32 is the
# value itself and this only keeps it).
import math
import struct

from micropython import const

U16 = const(0)
S16 = const(1)
U32 = const(2)
S32 = const(3)
F32 = const(4)
STR = const(5)
LOW_WORD_FIRST = const(8)
NAME = const(0)
BLOCK = const(1)

_INVALID = (None, "invalid")
# Significant digits a scaled value keeps: 1 + 2**-30 is 1.0 only in single precision. Only
# values with digits after the point are rounded: one with more whole digits is kept as the
# float holds it (rounding to tens would drop digits a single-precision float still has).
_DIGITS = 12 if 1.0 + 1.0 / (1 << 30) != 1.0 else 6
_TIDY_BELOW = 10.0 ** (_DIGITS - 1)
_f32 = bytearray(4)  # scratch for reinterpreting register bits as a float


def decode(point, data):
    """(value, None) for a good reading of `point` from the block's bytes, else (None, why)."""
    _name, _block, off, t, scale, rmin, rmax, inv, enum, extra = point
    off <<= 1
    if t == STR:
        text = bytes(data[off:off + 2 * extra]).rstrip(b"\0 ")
        try:
            return text.decode(), None
        except UnicodeError:
            return _INVALID
    if t == U16:
        raw = struct.unpack_from(">H", data, off)[0]
    elif t == S16:
        raw = struct.unpack_from(">h", data, off)[0]
    else:
        hi, lo = struct.unpack_from(">HH", data, off)
        if t & LOW_WORD_FIRST:
            hi, lo = lo, hi
            t &= ~LOW_WORD_FIRST
        raw = (hi << 16) | lo
        if t == S32:
            if raw & 0x80000000:
                raw -= 0x100000000
        elif t != U32 and t != F32:
            raise ValueError("point %s: unknown type %d" % (point[0], t))

    if inv:
        for i in range(0, len(inv), 2):
            if inv[i] <= raw <= inv[i + 1]:
                return _INVALID
    if extra is not None:
        raw = (raw >> extra[0]) & ((1 << extra[1]) - 1)

    if enum is not None:
        label = enum[raw] if 0 <= raw < len(enum) else None
        return _INVALID if label is None else (label, None)

    if t == F32:
        struct.pack_into(">I", _f32, 0, raw)
        value = struct.unpack_from(">f", _f32, 0)[0]
        if math.isnan(value) or math.isinf(value):
            return _INVALID
        value = _shortest_f32(value, raw)
    else:
        value = raw
    if scale is not None:
        value = value * scale
        if -_TIDY_BELOW < value < _TIDY_BELOW:
            value = _round_sig(value, _DIGITS)

    if rmin is not None and not rmin <= value <= rmax:
        return _INVALID
    return value, None


def _round_sig(x, digits):
    if x == 0:
        return x
    places = digits - 1 - int(math.floor(math.log10(abs(x))))
    if not -20 <= places <= 20:  # far outside any plant quantity; round() would need 10**places
        return x
    return round(x, places)


def _shortest_f32(x, bits):
    for digits in (6, 7, 8):
        y = _round_sig(x, digits)
        struct.pack_into(">f", _f32, 0, y)
        if struct.unpack_from(">I", _f32, 0)[0] == bits:
            return y
    return x  # 9 digits always round-trip: x itself is the answer
