# Point decoding (sot.points). Points are built in the compiled tuple form
# gateway/tooling/compiler.py emits; the DSE ones mirror the compiled dse-gencomm profile. f32 bit
# patterns were checked with CPython's struct.
import struct

from sot import points

H = bytes.fromhex
INVALID = (None, "invalid")
# Single-precision floats (ESP32, RP2040, the qemu board): 1 + 2**-30 rounds to 1.0 there.
SINGLE = 1.0 + 1.0 / (1 << 30) == 1.0


def near(got, want):
    """A value of more digits than the port's float holds: exact with doubles, within the
    float's own precision (2**-23 of it) with single precision."""
    value, why = got
    if SINGLE:
        return why is None and abs(value - want) <= abs(want) / (1 << 23)
    return got == (want, None)
TYPES = {"u16": points.U16, "s16": points.S16, "u32": points.U32, "s32": points.S32,
         "f32": points.F32, "str": points.STR, "u64": 7}


def point(t, o=0, n="x", b=0, w=0, s=None, r=None, inv=None, e=None, x=None):
    """A compiled point from readable keywords (e: {raw: label}, inv: [[lo, hi], ...],
    x: (lowest bit, width) of a bit field or the register count of a str)."""
    code = TYPES[t] | (points.LOW_WORD_FIRST if w else 0)
    flat = None
    if inv:
        flat = tuple(x for band in inv for x in band)
    labels = None
    if e:
        labels = [None] * (max(e) + 1)
        for raw, label in e.items():
            labels[raw] = label
        labels = tuple(labels)
    rmin, rmax = r if r else (None, None)
    return (n, b, o, code, s, rmin, rmax, flat, labels, x)


def moved(p, o):
    return p[:2] + (o,) + p[3:]


COOLANT = point("s16", n="coolant_temp", b=1, o=0, r=(-50.0, 200.0), inv=[[32760, 32767]])
FUEL = point("u16", n="fuel_level", b=1, o=2, r=(0, 100), inv=[[65528, 65535]])
BATTERY = point("u16", n="battery_voltage", b=1, o=4, s=0.1, r=(0, 40), inv=[[65528, 65535]])
GEN_V = point("u32", n="gen_voltage_l1", b=1, o=7, s=0.1, r=(0, 600),
              inv=[[4294967288, 4294967295]])
MODE = point("u16", n="control_mode", b=0, o=4, inv=[[65528, 65535]],
             e={0: "off", 1: "auto", 2: "manual", 3: "test", 4: "auto", 5: "config", 6: "test",
                7: "off"})
DIESEL = point("u32", n="diesel_litres", b=0, o=0, r=(0, 100000), inv=[[4294967295, 4294967295]])
VOLTAGE = point("f32", n="voltage_l1", b=0, o=0, r=(0, 500))


def regs(*words):
    return struct.pack(">%dH" % len(words), *words)


def test_u16():
    value, why = points.decode(point("u16"), regs(65000))
    assert value == 65000 and type(value) is int and why is None


def test_s16():
    assert points.decode(point("s16"), regs(0xFFF4)) == (-12, None)
    assert points.decode(point("s16"), regs(0x7FF7)) == (32759, None)


def test_u32_high_word_first():
    assert points.decode(point("u32"), regs(0x0001, 0x86A0)) == (100000, None)
    assert points.decode(point("u32"), regs(0xFFFF, 0xFFFE)) == (0xFFFFFFFE, None)


def test_u32_low_word_first():
    assert points.decode(point("u32", w=1), regs(0x86A0, 0x0001)) == (100000, None)


def test_s32_both_word_orders():
    assert points.decode(point("s32"), regs(0xFFFF, 0xFF38)) == (-200, None)
    assert points.decode(point("s32", w=1), regs(0xFF38, 0xFFFF)) == (-200, None)
    assert points.decode(point("s32"), regs(0x8000, 0x0000)) == (-0x80000000, None)
    assert points.decode(point("s32"), regs(0x7FFF, 0xFFFF)) == (0x7FFFFFFF, None)


def test_f32_both_word_orders():
    assert points.decode(point("f32"), H("4366199A")) == (230.1, None)  # not 230.1000061...
    assert points.decode(point("f32", w=1), H("199A4366")) == (230.1, None)
    assert points.decode(point("f32"), H("C49A5000")) == (-1234.5, None)
    assert points.decode(point("f32"), H("3F7AE148")) == (0.98, None)
    assert points.decode(point("f32"), H("4996B43E")) == (1234567.8, None)
    assert points.decode(point("f32"), H("00000000")) == (0.0, None)


def test_f32_nan_and_infinity_are_invalid():
    for bits in ("7FC00000", "FFFFFFFF", "7F800000", "FF800000"):
        assert points.decode(point("f32"), H(bits)) == INVALID, bits


def test_offset_within_block():
    data = regs(1, 2, 0x0001, 0x86A0, 7)
    assert points.decode(point("u16", o=1), data) == (2, None)
    assert points.decode(point("u32", o=2), data) == (100000, None)
    assert points.decode(point("u16", o=4), data) == (7, None)


def test_memoryview_data():
    buf = bytearray(b"\x0a\x03\x04" + regs(274, 80) + b"\x00\x00")
    data = memoryview(buf)[3:7]  # what Master.read_registers returns
    assert points.decode(moved(BATTERY, 0), data) == (27.4, None)
    assert points.decode(moved(FUEL, 1), data) == (80, None)


def test_scale_gives_tidy_floats():
    assert points.decode(BATTERY, regs(0, 0, 0, 0, 274)) == (27.4, None)  # 274 * 0.1
    assert points.decode(point("u16", s=0.01), regs(23000)) == (230.0, None)
    assert points.decode(point("s16", s=0.1), regs(0xFF83)) == (-12.5, None)
    # 10 digits: more than a single-precision float holds
    assert near(points.decode(point("u32", s=0.1), regs(0xFFFF, 0xFFFE)), 429496729.4)
    assert near(points.decode(point("s32", s=0.001), regs(0x8000, 0)), -2147483.648)
    assert points.decode(point("f32", s=1000.0), H("3F7AE148")) == (980.0, None)
    value, _ = points.decode(point("u16", s=1.0), regs(5))
    assert type(value) is float


def test_scaled_16_bit_registers_read_as_written():
    # what a meter's register means is what the value shows, with single precision too
    # (2305 * 0.1 rounded to 12 digits in single precision came out as 230.50002)
    for raw, scale, want in ((2305, 0.1, 230.5), (84, 0.1, 8.4), (65535, 0.01, 655.35),
                             (4999, 0.01, 49.99), (12345, 0.001, 12.345), (2301, 0.1, 230.1)):
        assert points.decode(point("u16", s=scale), regs(raw)) == (want, None), (raw, scale)
        assert repr(points.decode(point("u16", s=scale), regs(raw))[0]) == repr(want)


def test_dse_u16_sentinel_band():
    data = regs(0, 0, 0xFFF8)
    assert points.decode(FUEL, data) == INVALID
    for raw in (0xFFF8, 0xFFFB, 0xFFFF):
        assert points.decode(BATTERY, regs(0, 0, 0, 0, raw)) == INVALID
    assert points.decode(point("u16", inv=[[65528, 65535]]), regs(0xFFF7)) == (0xFFF7, None)


def test_dse_s16_sentinel_band():
    for raw in (0x7FF8, 0x7FFC, 0x7FFF):
        assert points.decode(COOLANT, regs(raw)) == INVALID
    assert points.decode(point("s16", inv=[[32760, 32767]]), regs(0x7FF7)) == (32759, None)
    assert points.decode(COOLANT, regs(0xFFF8)) == (-8, None)  # -8 degC is not in the s16 band


def test_dse_u32_sentinel_band():
    data = regs(*([0] * 7 + [0xFFFF, 0xFFF8]))
    assert points.decode(GEN_V, data) == INVALID
    data = regs(*([0] * 7 + [0x0000, 2305]))
    assert points.decode(GEN_V, data) == (230.5, None)


def test_tank_probe_fault():
    assert points.decode(DIESEL, regs(0xFFFF, 0xFFFF)) == INVALID
    assert points.decode(DIESEL, regs(0x0000, 14500)) == (14500, None)


def test_range_violation():
    assert points.decode(FUEL, regs(0, 0, 150)) == INVALID  # fuel 150 %
    assert points.decode(FUEL, regs(0, 0, 100)) == (100, None)
    assert points.decode(FUEL, regs(0, 0, 0)) == (0, None)
    assert points.decode(COOLANT, regs(0xFFCD)) == INVALID  # -51 degC
    assert points.decode(BATTERY, regs(0, 0, 0, 0, 401)) == INVALID  # 40.1 V, after scaling
    assert points.decode(VOLTAGE, H("44160000")) == INVALID  # 600 V
    assert points.decode(VOLTAGE, H("4366199A")) == (230.1, None)


def test_enum_label():
    assert points.decode(MODE, regs(0, 0, 0, 0, 1)) == ("auto", None)
    assert points.decode(MODE, regs(0, 0, 0, 0, 7)) == ("off", None)


def test_unknown_enum_code_is_invalid():
    assert points.decode(MODE, regs(0, 0, 0, 0, 9)) == INVALID
    assert points.decode(MODE, regs(0, 0, 0, 0, 0xFFFF)) == INVALID  # sentinel


def test_unknown_type_is_an_error():
    try:
        points.decode(point("u64"), regs(0, 0, 0, 0))
    except ValueError:
        return
    raise AssertionError("no ValueError")


ALARM_STATES = {0: "disabled", 1: "inactive", 2: "warning", 3: "shutdown", 4: "trip"}


def test_bit_fields_of_an_alarm_word():
    # GenComm page 154 style: four 4-bit alarm states in one register, first in the top nibble.
    word = regs(0x1234)
    first = point("u16", x=(12, 4), e=ALARM_STATES, inv=[[65528, 65535]])
    second = point("u16", x=(8, 4), e=ALARM_STATES, inv=[[65528, 65535]])
    fourth = point("u16", x=(0, 4), e=ALARM_STATES, inv=[[65528, 65535]])
    assert points.decode(first, word) == ("inactive", None)
    assert points.decode(second, word) == ("warning", None)
    assert points.decode(fourth, word) == ("trip", None)
    # the whole word in the n/a band: every alarm in it is unknown, not "disabled"
    assert points.decode(first, regs(0xFFFF)) == INVALID


def test_single_bit_flag():
    flag = point("u16", x=(15, 1))
    assert points.decode(flag, regs(0x8000)) == (1, None)
    assert points.decode(flag, regs(0x7FFF)) == (0, None)


def test_string_identity():
    text = b"InteliLite4-AMF25\0\0\0"
    data = bytes(text) + bytes(32 - len(text))
    assert points.decode(point("str", x=16), data) == ("InteliLite4-AMF25", None)
    assert points.decode(point("str", x=2), b"AB  ") == ("AB", None)


def test_unimplemented_alarms_decode_as_not_fitted():
    # As the dse-gencomm profile compiles: code 15 is "not fitted", no n/a band on alarm words.
    states = dict(ALARM_STATES)
    states[15] = "not_fitted"
    first = point("u16", x=(12, 4), e=states)
    fourth = point("u16", x=(0, 4), e=states)
    assert points.decode(first, regs(0xFFFF)) == ("not_fitted", None)
    assert points.decode(fourth, regs(0xFFF1)) == ("inactive", None)
    assert points.decode(first, regs(0x7000)) == INVALID  # a code the table does not list
