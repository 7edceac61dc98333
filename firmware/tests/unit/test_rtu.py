# Modbus RTU framing (sot.modbus.rtu), under MicroPython.
#
# Expected bytes were checked independently: the CRCs of the two requests below are the textbook
# examples (01 03 00 00 00 0A -> C5 CD; Simply Modbus "read holding 40108-40110 of slave 17",
# 11 03 00 6B 00 03 -> 76 87), "123456789" -> 0x4B37 is the CRC-16/MODBUS check value of the
# CRC catalogue, and every other frame's CRC was computed with pymodbus 3.16.1
# (FramerRTU.compute_CRC) on the host.
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


def test_response_length():
    assert rtu.response_length(H("0A"), 1) == 0
    assert rtu.response_length(H("0A03"), 2) == 0
    assert rtu.response_length(H("0A0308"), 3) == 13
    assert rtu.response_length(H("0A83"), 2) == 5


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
    for code, name in ((1, "illegal function"), (3, "illegal data value"),
                       (6, "server device busy"), (0x0A, "gateway path unavailable"),
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
