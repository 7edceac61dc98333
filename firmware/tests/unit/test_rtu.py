# Modbus RTU framing (sot.modbus.rtu), under MicroPython.
#
# Expected bytes were checked independently: the CRCs of the two requests below are the textbook
# examples (01 03 00 00 00 0A -> C5 CD; Simply Modbus "read holding 40108-40110 of slave 17",
# 11 03 00 6B 00 03 -> 76 87), "123456789" -> 0x4B37 is the CRC-16/MODBUS check value of the
# CRC catalogue, and every other frame's CRC was computed with pymodbus 3.16.1
# (FramerRTU.compute_CRC) on the host. The requests for 01, 02, 05, 06, 15 and 16 were also
# encoded by pymodbus (FramerRTU.buildFrame of its request PDUs) and compared byte for byte; those
# for unit 17 (0x11) are the worked examples of the Application Protocol spec (§6.1, 6.2, 6.5,
# 6.6, 6.11, 6.12) wrapped in RTU, whose CRCs match the well-known Simply Modbus examples
# (...4E8B, ...9A9B, ...BF0B, ...C6F0).
from sot.modbus import rtu
from sot.modbus.rtu import (
    ModbusCRCError,
    ModbusError,
    ModbusException,
    ModbusFrameError,
)

H = bytes.fromhex


def raises(exc, fn, *args):
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s not raised" % exc.__name__)


def test_crc_known_vectors():
    assert rtu.crc16(b"123456789") == 0x4B37
    assert rtu.crc16(H("01030000000A")) == 0xCDC5  # sent C5 CD
    assert rtu.crc16(H("1103006B0003")) == 0x8776  # sent 76 87


def test_crc_table_is_the_polynomial_bit_by_bit():
    # the stored table against the definition: every byte value, then a long frame
    def slow(data):
        crc = 0xFFFF
        for b in data:
            crc ^= b
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        return crc

    for i in range(256):
        assert rtu.crc16(bytes([i])) == slow(bytes([i])), i
    frame = bytes((i * 37 + 11) & 0xFF for i in range(253))
    assert rtu.crc16(frame) == slow(frame)


def test_crc_prefix_length():
    buf = H("01030000000A") + b"junk"
    assert rtu.crc16(buf, 6) == 0xCDC5
    assert rtu.crc16(b"") == 0xFFFF


def test_crc_of_frame_with_its_crc_is_zero():
    # A property of this CRC: appending it (low byte first) makes the remainder zero.
    assert rtu.crc16(H("0A0304" "00E6010F" "E090")) == 0


def test_build_read_holding():
    buf = bytearray(8)
    assert rtu.build_read(buf, 1, 3, 0, 10) == 8
    assert buf == H("01030000000AC5CD")
    rtu.build_read(buf, 17, 3, 0x6B, 3)
    assert buf == H("1103006B00037687")


def test_build_read_input_and_high_address():
    buf = bytearray(8)
    rtu.build_read(buf, 20, 4, 0, 2)
    assert buf == H("140400000002730E")
    rtu.build_read(buf, 10, 3, 0xFFFE, 2)
    assert buf == H("0A03FFFE00029494")


def test_build_read_reuses_buffer_in_place():
    buf = bytearray(8)
    mv = memoryview(buf)
    rtu.build_read(mv, 10, 3, 1025, 4)
    assert buf == H("0A0304010004" "1582")


def test_build_read_rejects_bad_requests():
    buf = bytearray(8)
    raises(ValueError, rtu.build_read, buf, 0, 3, 0, 1)  # broadcast cannot be read
    raises(ValueError, rtu.build_read, buf, 248, 3, 0, 1)
    raises(ValueError, rtu.build_read, buf, 1, 6, 0, 1)
    raises(ValueError, rtu.build_read, buf, 1, 3, 0, 0)
    raises(ValueError, rtu.build_read, buf, 1, 3, 0, 126)
    raises(ValueError, rtu.build_read, buf, 1, 3, 0xFFFF, 2)
    rtu.build_read(buf, 1, 3, 0, 125)
    rtu.build_read(buf, 1, 3, 0xFFFF, 1)


def test_parse_normal_response():
    frame = H("0A0304" "00E6010F" "E090")
    assert rtu.parse_read(frame, len(frame), 10, 3, 2) == 4
    assert frame[rtu.DATA_OFFSET:rtu.DATA_OFFSET + 4] == H("00E6010F")
    frame = H("0A0404" "00E6010F" "E127")
    assert rtu.parse_read(frame, len(frame), 10, 4, 2) == 4


def test_parse_in_larger_buffer():
    buf = bytearray(255)
    frame = H("0A0308" "0001000200030004" "2830")
    buf[0:len(frame)] = frame
    assert rtu.parse_read(buf, len(frame), 10, 3, 4) == 8


def test_reply_length():
    assert rtu.reply_length(3, 2) == 9
    assert rtu.reply_length(4, 125) == 255
    assert rtu.reply_length(1, 1) == 6
    assert rtu.reply_length(1, 8) == 6
    assert rtu.reply_length(2, 9) == 7
    assert rtu.reply_length(1, 2000) == 255
    for fc in (5, 6, 15, 16):
        assert rtu.reply_length(fc, 100) == 8


def test_parse_exception_response():
    frame = H("0A8302B133")
    e = raises(ModbusException, rtu.parse_read, frame, 5, 10, 3, 2)
    assert e.code == 2
    assert e.name == "illegal data address"
    assert isinstance(e, ModbusError)
    assert "illegal data address" in repr(e)
    e = raises(ModbusException, rtu.parse_read, H("1484045307"), 5, 20, 4, 2)
    assert e.code == 4 and e.name == "server device failure"


def test_exception_names():
    for code, name in ((1, "illegal function"), (2, "illegal data address"),
                       (3, "illegal data value"), (4, "server device failure"),
                       (5, "acknowledge"), (6, "server device busy"),
                       (8, "memory parity error"), (0x0A, "gateway path unavailable"),
                       (0x0B, "gateway target device failed to respond")):
        assert ModbusException(code).name == name
    assert ModbusException(0x55).code == 0x55


def test_parse_bad_crc():
    frame = bytearray(H("0A0304" "00E6010F" "E090"))
    frame[4] ^= 0x01  # one bit flipped in the data
    raises(ModbusCRCError, rtu.parse_read, frame, len(frame), 10, 3, 2)
    frame = H("0A0304" "00E6010F" "90E0")  # CRC bytes swapped
    raises(ModbusCRCError, rtu.parse_read, frame, len(frame), 10, 3, 2)
    raises(ModbusCRCError, rtu.parse_read, H("0A830233B1"), 5, 10, 3, 2)


def test_parse_wrong_unit():
    frame = H("0B0304" "00E6010F" "F050")  # a valid frame, but from unit 11
    e = raises(ModbusFrameError, rtu.parse_read, frame, len(frame), 10, 3, 2)
    assert "unit 11" in str(e)


def test_parse_wrong_function():
    frame = H("0A0404" "00E6010F" "E127")
    raises(ModbusFrameError, rtu.parse_read, frame, len(frame), 10, 3, 2)
    raises(ModbusFrameError, rtu.parse_read, H("1484045307"), 5, 20, 3, 2)


def test_parse_wrong_byte_count():
    frame = H("0A0302002A9C5A")  # a good frame with one register, two were asked for
    raises(ModbusFrameError, rtu.parse_read, frame, len(frame), 10, 3, 2)


def test_parse_truncated():
    frame = H("0A0304" "00E6010F" "E090")
    for n in (0, 3, 4, 8):
        raises(ModbusFrameError, rtu.parse_read, frame, n, 10, 3, 2)
    raises(ModbusFrameError, rtu.parse_read, H("0A8302B1"), 4, 10, 3, 2)


# -- function codes 01/02 (bits), 05/06 (single writes), 15/16 (multiple writes) ----------------
# Table-driven: the test module is compiled on the device-sized heap, and a table compiles smaller
# than one statement per case.

COILS_REPLY = H("110103" "CD6B05" "4012")  # §6.1 example: coils 20-38 of unit 17
INPUTS_REPLY = H("110203" "ACDB35" "2018")  # §6.2 example: inputs 197-218


def test_build_new_function_codes():
    B = rtu.build_read
    W = rtu.build_write
    for fn, args, want in (
            (B, (17, 1, 0x13, 19), "1101001300138E92"),
            (B, (17, 2, 0xC4, 22), "110200C40016BAA9"),
            (B, (1, 1, 0, 2000), "0101000007D03FA6"),
            (W, (17, 5, 0xAC, 0xFF00), "110500ACFF004E8B"),
            (W, (17, 5, 0xAC, 0), "110500AC00000F7B"),
            (W, (17, 6, 1, 3), "1106000100039A9B"),
            (W, (10, 6, 0xFFFF, 0xABCD), "0A06FFFFABCD3630"),
            # §6.11: coils 20-29 = 1011 0011 11 -> CD 01 (the first coil is the LSB)
            (rtu.build_write_coils, (17, 0x13, [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]),
             "110F0013000A02CD01BF0B"),
            (rtu.build_write_coils, (10, 0, [True]), "0A0F000000010101AEE4"),
            (rtu.build_write_registers, (17, 1, [0x000A, 0x0102]), "11100001000204000A0102C6F0"),
            (rtu.build_write_registers, (10, 100, [1]), "0A10006400010200011C84")):
        buf = bytearray(b"\xff" * 255)  # old bytes must not leak into the frame (pad bits)
        assert bytes(buf[:fn(buf, *args)]) == H(want), want
    # coils are truth values, not just 0/1
    buf = bytearray(255)
    n = rtu.build_write_coils(buf, 17, 0x13, [5, None, "x", True, 0, False, 1, 1, 1, ""])
    assert bytes(buf[:n]) == H("110F0013000A02CD01BF0B")


def test_build_new_function_codes_rejects():
    buf = bytearray(255)
    for args in ((1, 1, 0, 2001), (1, 2, 0, 0), (1, 2, 0xFFFF, 2), (1, 5, 0, 1), (1, 3, 0, 126)):
        raises(ValueError, rtu.build_read, buf, *args)
    rtu.build_read(buf, 1, 2, 0xFFFF, 1)
    # a coil takes FF00 or 0000 only; no broadcast; no other function
    for args in ((17, 5, 0xAC, 1), (17, 5, 0xAC, 0xFF), (17, 6, 1, 0x10000), (17, 6, 1, -1),
                 (17, 6, 0x10000, 1), (17, 3, 1, 1), (0, 6, 1, 1)):
        raises(ValueError, rtu.build_write, buf, *args)
    for args in ((1, 0, bytes(1969)), (1, 0, ()), (1, 0xFFFF, (1, 1))):
        raises(ValueError, rtu.build_write_coils, buf, *args)
    for args in ((1, 0, bytes(248)), (1, 0, ()), (1, 0xFFFF, (1, 2)), (1, 0, (1, 0x10000)),
                 (1, 0, (-1,)), (248, 0, (1,))):
        raises(ValueError, rtu.build_write_registers, buf, *args)


def test_longest_frames():
    buf = bytearray(255)
    assert rtu.build_write_coils(buf, 1, 0, b"\x01" * 1968) == 255  # 9 + 246 bytes
    assert buf[6] == 246 and buf[7] == 0xFF and buf[252] == 0xFF and rtu.crc16(buf) == 0
    assert rtu.build_write_registers(buf, 1, 0, bytes(123)) == 255
    assert buf[6] == 246 and rtu.crc16(buf) == 0


def test_parse_read_bits():
    assert rtu.parse_read(COILS_REPLY, len(COILS_REPLY), 17, 1, 19) == 3
    assert rtu.parse_read(INPUTS_REPLY, len(INPUTS_REPLY), 17, 2, 22) == 3
    assert rtu.parse_read(COILS_REPLY, len(COILS_REPLY), 17, 1, 24) == 3  # 17..24 bits: 3 bytes
    for unit, fc, count in ((17, 1, 16), (17, 2, 19), (17, 3, 19), (16, 1, 19)):
        raises(ModbusFrameError, rtu.parse_read, COILS_REPLY, len(COILS_REPLY), unit, fc, count)
    assert raises(ModbusException, rtu.parse_read, H("0A8102B053"), 5, 10, 1, 8).code == 2


def test_bits_are_lsb_first():
    # §6.1: CD = 1100 1101 holds coils 27..20, i.e. coil 20 is its lowest bit; 05 holds coils
    # 38..36 and 5 pad bits.
    coils = [rtu.bit(COILS_REPLY[3:6], i) for i in range(19)]
    assert coils == [1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1], coils
    assert rtu.bit(b"\x80", 7) == 1 and rtu.bit(b"\x80", 0) == 0


def test_parse_write():
    for frame, args in (("110500ACFF004E8B", (17, 5, 0xAC, 0xFF00)),
                        ("1106000100039A9B", (17, 6, 1, 3)),
                        ("110F0013000A2699", (17, 15, 0x13, 10)),
                        ("1110000100021298", (17, 16, 1, 2))):
        assert rtu.parse_write(H(frame), 8, *args) is None
    # Good CRCs, but not the echo of what was written (value, address, quantity, function, unit)
    for frame, args in (("0A060010123545C3", (10, 6, 0x10, 0x1234)),
                        ("0A0600111234D5C3", (10, 6, 0x10, 0x1234)),
                        ("0A050003FF01BC81", (10, 5, 3, 0xFF00)),
                        ("0A05000300003CB1", (10, 5, 3, 0xFF00)),
                        ("0A1000640002016C", (10, 16, 100, 1)),
                        ("0A100065000110AD", (10, 16, 100, 1)),
                        ("0A0F000000045573", (10, 15, 0, 3)),
                        ("1106000100039A9B", (17, 16, 1, 3)),
                        ("1106000100039A9B", (16, 6, 1, 3))):
        raises(ModbusFrameError, rtu.parse_write, H(frame), 8, *args)


def test_parse_write_errors():
    frame = bytearray(H("0A0600101234" "8403"))
    rtu.parse_write(frame, 8, 10, 6, 0x10, 0x1234)
    for n in (0, 4, 5, 7):
        raises(ModbusFrameError, rtu.parse_write, frame, n, 10, 6, 0x10, 0x1234)
    frame[5] ^= 0x01  # the flipped bit makes the echo wrong too: the CRC speaks first
    raises(ModbusCRCError, rtu.parse_write, frame, 8, 10, 6, 0x10, 0x1234)
    for frame, args, code in (("0A8502B293", (5, 3, 0xFF00), 2), ("0A860373A3", (6, 16, 1), 3),
                              ("0A8F02B433", (15, 0, 3), 2), ("0A90043C01", (16, 100, 1), 4)):
        e = raises(ModbusException, rtu.parse_write, H(frame), 5, 10, *args)
        assert e.code == code and e.name == rtu.EXCEPTION_NAMES[code]
