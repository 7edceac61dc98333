"""Modbus RTU framing for reads of holding (03) and input (04) registers. No I/O, no asyncio.

Reference: "MODBUS over Serial Line, Specification and Implementation Guide V1.02" (§2.5.1 RTU
framing, §6.2.2 CRC) and "MODBUS Application Protocol Specification V1.1b3" (§6.3, §6.4 read
registers, §7 exception codes). Multi-byte fields are big-endian except the CRC, which is sent
low byte first.

Request (master -> slave), always 8 bytes::

    [ t3.5 silence ][ unit ][ fc ][ start hi ][ start lo ][ count hi ][ count lo ][ crc lo, hi ]
                      1b      1b    2b                      2b                      2b
      unit 1..247, fc 03 or 04, count 1..125, start + count <= 65536

Normal response (slave -> master), 5 + 2 * count bytes::

    [ unit ][ fc ][ byte count ][ register 0 hi ][ register 0 lo ] ... [ crc lo ][ crc hi ]
      1b      1b    1b = 2*count  2 * count bytes                         2b

Exception response, always 5 bytes::

    [ unit ][ fc | 0x80 ][ exception code ][ crc lo ][ crc hi ]

The length of a response is known after its third byte: 5 + byte count, or 5 when the function
byte has bit 7 set. The CRC covers every byte before it.

Recovery rules (carried out by `master.Master`, which owns the bus; this module only judges):

- Before a request the bus must have been silent for t3.5; whatever is waiting in the receive
  buffer then is stale (a late reply, noise, an echo) and is dropped, so a late reply is never
  matched to the next request. RTU has no transaction id, so timing is the only match: a late
  reply that arrives only after the next request went out is skipped if it names another unit,
  is a frame error if its byte count differs, and is indistinguishable if it has the same
  unit, function and length (a timeout well above the slave's worst reply time prevents that).
- Leading bytes that cannot begin the awaited reply (wrong unit, wrong function) are dropped one
  at a time until the header matches: garbage before a frame does not spoil the frame after it.
- A header that matches but announces the wrong byte count for the request is a frame error; a
  complete frame whose CRC does not match is a CRC error. Neither is retried here: the device
  poller above decides what a failure means.
- An exception response with a good CRC is raised as `ModbusException(code)`.
- No reply within the deadline is `ModbusTimeout`.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython, for cross-checking against pymodbus on the host

    def const(x):
        return x


READ_HOLDING = const(3)
READ_INPUT = const(4)
MAX_COUNT = const(125)  # Application Protocol §6.3: 1..125 registers per read
REQUEST_LEN = const(8)
MAX_RESPONSE_LEN = const(255)  # 5 + 2 * 125
DATA_OFFSET = const(3)  # register bytes start after unit, function and byte count

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


class ModbusError(Exception):
    """Any failed transaction."""


class ModbusTimeout(ModbusError):
    """No complete reply before the deadline."""


class ModbusCRCError(ModbusError):
    """A complete frame arrived but its CRC does not match."""


class ModbusFrameError(ModbusError):
    """Bytes arrived that are not a well-formed reply to the request."""


class ModbusException(ModbusError):
    """The slave answered with an exception response (function | 0x80, code)."""

    def __init__(self, code):
        self.code = code
        self.name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(code, self.name)


# CRC-16/MODBUS: reflected polynomial 0xA001, initial value 0xFFFF (Serial Line §6.2.2).
# A 256-entry table turns the 8-step bit loop per byte into one lookup. Measured on the unix port
# over a 253-byte reply: 30 us with the table, 170 us bit by bit; a microcontroller is some 50x
# slower, so the bit loop would cost ~10 ms of event loop per full block. The price is 512 bytes
# of RAM, built once at import (array 'H', not a list: no object per entry).
def _make_table():
    table = array("H", bytes(512))
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[i] = crc
    return table


_TABLE = _make_table()


def crc16(buf, n=-1):
    """CRC-16/MODBUS of buf[0:n] (all of buf if n < 0). On the wire the low byte goes first."""
    if n < 0:
        n = len(buf)
    table = _TABLE
    crc = 0xFFFF
    for i in range(n):
        crc = (crc >> 8) ^ table[(crc ^ buf[i]) & 0xFF]
    return crc


def build_read(buf, unit, fc, start, count):
    """Write a read-registers request into buf (at least 8 bytes); return its length, 8."""
    if not 1 <= unit <= 247:
        raise ValueError("unit must be 1..247")
    if fc != READ_HOLDING and fc != READ_INPUT:
        raise ValueError("function must be 3 or 4")
    if not 1 <= count <= MAX_COUNT or start < 0 or start + count > 0x10000:
        raise ValueError("registers out of range")
    buf[0] = unit
    buf[1] = fc
    buf[2] = start >> 8
    buf[3] = start & 0xFF
    buf[4] = count >> 8
    buf[5] = count & 0xFF
    crc = crc16(buf, 6)
    buf[6] = crc & 0xFF
    buf[7] = crc >> 8
    return REQUEST_LEN


def response_length(frame, n):
    """Total length of the response whose first n bytes are in frame, or 0 while unknown."""
    if n >= 2 and frame[1] & 0x80:
        return 5
    if n >= 3:
        return 5 + frame[2]
    return 0


def parse_read(frame, n, unit, fc, count):
    """Check frame[0:n] as the reply to a read of `count` registers from `unit` with `fc`.

    Returns the number of register data bytes (2 * count), found at frame[DATA_OFFSET:].
    Raises ModbusFrameError, ModbusCRCError or ModbusException.
    """
    if n < 5:
        raise ModbusFrameError("truncated: %d bytes" % n)
    if frame[0] != unit:
        raise ModbusFrameError("reply from unit %d, expected %d" % (frame[0], unit))
    f = frame[1]
    if f != fc and f != fc | 0x80:
        raise ModbusFrameError("function %d in reply, expected %d" % (f, fc))
    if f == fc and frame[2] != 2 * count:
        raise ModbusFrameError("byte count %d, expected %d" % (frame[2], 2 * count))
    length = response_length(frame, n)
    if n != length:
        raise ModbusFrameError("%d bytes, frame says %d" % (n, length))
    crc = crc16(frame, n - 2)
    if frame[n - 2] != crc & 0xFF or frame[n - 1] != crc >> 8:
        raise ModbusCRCError("crc %02x%02x, expected %02x%02x"
                             % (frame[n - 2], frame[n - 1], crc & 0xFF, crc >> 8))
    if f != fc:
        raise ModbusException(frame[2])
    return n - 5
