"""Modbus RTU framing: requests and replies for function codes 01-06, 15 and 16. No I/O.

Reference: "MODBUS over Serial Line, Specification and Implementation Guide V1.02" (§2.5.1 RTU
framing, §6.2.2 CRC) and "MODBUS Application Protocol Specification V1.1b3" (§6.1 read coils,
§6.2 read discrete inputs, §6.3/§6.4 read holding/input registers, §6.5 write single coil,
§6.6 write single register, §6.11 write multiple coils, §6.12 write multiple registers, §7
exception codes). Multi-byte fields are big-endian except the CRC, which is sent low byte first
and covers every byte before it.

Requests (master -> slave), after a t3.5 silence; unit 1..247 (broadcast is not supported)::

    01/02/03/04 read   [unit][fc][start hi][start lo][count hi][count lo][crc lo][crc hi]   8 bytes
    05/06 write one    [unit][fc][addr hi ][addr lo ][value hi][value lo][crc lo][crc hi]   8 bytes
    15/16 write many   [unit][fc][start hi][start lo][count hi][count lo][N][N bytes][crc]  9 + N

    count: 01/02 1..2000 bits, 03/04 1..125 registers, 15 1..1968 coils (N = ceil(count / 8)),
    16 1..123 registers (N = 2 * count); always start + count <= 65536.
    05 value: 0xFF00 switches the coil on, 0x0000 off; nothing else is legal.

Replies (slave -> master)::

    01/02   [unit][fc][N = ceil(count / 8)][N bytes of bits][crc]       5 + N
    03/04   [unit][fc][N = 2 * count][N bytes, registers big-endian][crc]   5 + N
    05/06   the request, echoed                                            8
    15/16   [unit][fc][start hi][start lo][count hi][count lo][crc]      8
    error   [unit][fc | 0x80][exception code][crc]                       5

Bits are packed LSB first: bit i of a read is bit (i % 8) of data byte i // 8; unused high bits
of the last byte are padding (zero per the spec; not checked, since a non-zero pad carries no
value). The same packing is used for the coils of a 15 request. The longest frame either way is
255 bytes (2000 bits, 125 registers, 1968 coils or 123 registers); Serial Line §2.5.1 allows 256.
A reply's length is known from its function byte (5 for an exception, 8 for a write reply) or,
for a read, from its third byte.

Recovery rules (carried out by `master.Master`, which owns the bus; this module only judges):

- Before a request the bus must have been silent for t3.5; whatever is waiting in the receive
  buffer then is stale (a late reply, noise, an echo) and is dropped, so a late reply is never
  matched to the next request. RTU has no transaction id, so timing is the only match: a late
  reply that arrives only after the next request went out is skipped if it names another unit,
  is a frame error if its function, byte count or echo differs, and is indistinguishable if it
  has the same unit, function and length (the master therefore holds the line for the full
  timeout after a timed-out request; for its retry of the same request it is the same answer).
- Leading bytes that cannot begin the awaited reply (wrong unit, wrong function) are dropped one
  at a time until the header matches: garbage before a frame does not spoil the frame after it.
- A header that matches but announces the wrong byte count for the request, or a write reply
  whose echo of address and value/quantity differs from the request, is a frame error; a
  complete frame whose CRC does not match is a CRC error (checked before the echo, so a garbled
  echo counts as a CRC error).
- An exception response with a good CRC is raised as `ModbusException(code)`.
- No reply within the deadline is `ModbusTimeout`.
"""

from array import array

try:
    # (pyright: the stub's const is positional-only, the CPython stand-in below is not)
    from micropython import const  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython, for cross-checking against pymodbus on the host

    def const(x):
        return x


# Public names cost heap (a module dict entry and a qstr each); the private ones are inlined.
READ_HOLDING = const(3)
READ_INPUT = const(4)
DATA_OFFSET = const(3)  # read data starts after unit, function and byte count
_READ_COILS = const(1)
_READ_DISCRETE = const(2)
_WRITE_COIL = const(5)
_WRITE_REGISTER = const(6)
_WRITE_COILS = const(15)
_WRITE_REGISTERS = const(16)
_COIL_ON = const(0xFF00)  # §6.5: a 05 request carries FF00 (on) or 0000 (off), nothing else
_MAX_BITS = const(2000)  # §6.1/§6.2
_MAX_COUNT = const(125)  # §6.3/§6.4 registers per read
_MAX_WRITE_COILS = const(1968)  # §6.11
_MAX_WRITE_REGISTERS = const(123)  # §6.12
# The longest request or reply of these function codes is 255 bytes: a caller's buffer of 255
# serves every request and every reply.

# §7. Codes 05 (acknowledge: a long command was accepted) and 06 (busy) are the slave's way of
# saying "later"; 0A/0B come only from gateways (e.g. a TCP-RTU bridge in front of the device).
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


# Builders write a request into buf (a bytearray or memoryview of at least 8 bytes, 255 for
# 15/16) and return its length. They raise ValueError for a request the protocol cannot carry;
# buf may then hold part of it.


def _head(buf, unit, fc, a, b):
    # The first 6 bytes of every request: unit, function, two 16-bit fields.
    if not 1 <= unit <= 247:
        raise ValueError("unit must be 1..247")
    buf[0] = unit
    buf[1] = fc
    buf[2] = a >> 8
    buf[3] = a & 0xFF
    buf[4] = b >> 8
    buf[5] = b & 0xFF


def _seal(buf, n):
    crc = crc16(buf, n)
    buf[n] = crc & 0xFF
    buf[n + 1] = crc >> 8
    return n + 2


def _span(start, count, most):
    if not 1 <= count <= most or start < 0 or start + count > 0x10000:
        raise ValueError("out of range")


def build_read(buf, unit, fc, start, count):
    """Read `count` bits (01/02) or registers (03/04) from `start`: 8 bytes."""
    if fc == READ_HOLDING or fc == READ_INPUT:
        _span(start, count, _MAX_COUNT)
    elif fc == _READ_COILS or fc == _READ_DISCRETE:
        _span(start, count, _MAX_BITS)
    else:
        raise ValueError("bad function")
    _head(buf, unit, fc, start, count)
    return _seal(buf, 6)


def build_write(buf, unit, fc, address, value):
    """Write one coil (05, value 0xFF00 on or 0 off) or one register (06): 8 bytes."""
    if fc == _WRITE_COIL:
        ok = value == _COIL_ON or value == 0
    elif fc == _WRITE_REGISTER:
        ok = 0 <= value <= 0xFFFF
    else:
        raise ValueError("bad function")
    if not ok or not 0 <= address <= 0xFFFF:
        raise ValueError("out of range")
    _head(buf, unit, fc, address, value)
    return _seal(buf, 6)


def build_write_coils(buf, unit, start, bits):
    """Write len(bits) coils from `start` (15); bits is a sequence of truth values."""
    count = len(bits)
    _span(start, count, _MAX_WRITE_COILS)
    _head(buf, unit, _WRITE_COILS, start, count)
    size = (count + 7) >> 3
    buf[6] = size
    for i in range(7, 7 + size):
        buf[i] = 0
    for i in range(count):
        if bits[i]:
            buf[7 + (i >> 3)] |= 1 << (i & 7)
    return _seal(buf, 7 + size)


def build_write_registers(buf, unit, start, values):
    """Write len(values) registers from `start` (16); values are 0..65535."""
    count = len(values)
    _span(start, count, _MAX_WRITE_REGISTERS)
    _head(buf, unit, _WRITE_REGISTERS, start, count)
    buf[6] = 2 * count
    i = 7
    for v in values:
        if not 0 <= v <= 0xFFFF:
            raise ValueError("out of range")
        buf[i] = v >> 8
        buf[i + 1] = v & 0xFF
        i += 2
    return _seal(buf, i)


def reply_length(fc, count):
    """Length of the normal reply to a valid request with this function and count."""
    if fc <= _READ_DISCRETE:
        return 5 + ((count + 7) >> 3)
    if fc <= READ_INPUT:
        return 5 + 2 * count
    return 8


def bit(data, i):
    """Bit i (0 or 1) of the packed bits of a 01/02 reply (LSB first)."""
    return (data[i >> 3] >> (i & 7)) & 1


def _check(frame, n, unit, fc, size):
    # frame[0:n] as a reply from `unit` to `fc`; size is the byte count a read reply must
    # announce, or -1 for a write reply (fixed 8 bytes). Raises unless it is a good normal reply.
    if n < 5:
        raise ModbusFrameError("truncated: %d bytes" % n)
    if frame[0] != unit:
        raise ModbusFrameError("reply from unit %d, expected %d" % (frame[0], unit))
    f = frame[1]
    if f == fc:
        if size < 0:
            length = 8
        elif frame[2] != size:
            raise ModbusFrameError("byte count %d, expected %d" % (frame[2], size))
        else:
            length = 5 + size
    elif f == fc | 0x80:
        length = 5
    else:
        raise ModbusFrameError("function %d in reply, expected %d" % (f, fc))
    if n != length:
        raise ModbusFrameError("%d bytes, frame says %d" % (n, length))
    crc = crc16(frame, n - 2)
    if frame[n - 2] != crc & 0xFF or frame[n - 1] != crc >> 8:
        raise ModbusCRCError("crc %02x%02x, expected %02x%02x"
                             % (frame[n - 2], frame[n - 1], crc & 0xFF, crc >> 8))
    if f != fc:
        raise ModbusException(frame[2])


def parse_read(frame, n, unit, fc, count):
    """Check frame[0:n] as the reply to a read of `count` bits or registers (fc 01..04).

    Returns the number of data bytes, found at frame[DATA_OFFSET:].
    Raises ModbusFrameError, ModbusCRCError or ModbusException.
    """
    size = (count + 7) >> 3 if fc <= _READ_DISCRETE else 2 * count
    _check(frame, n, unit, fc, size)
    return size


def parse_write(frame, n, unit, fc, address, value):
    """Check frame[0:n] as the reply to a write (fc 05/06/15/16).

    `value` is the value written (05: 0xFF00 or 0, 06: the register) or, for 15/16, the
    quantity; the reply must echo it and the address exactly.
    Raises ModbusFrameError, ModbusCRCError or ModbusException.
    """
    _check(frame, n, unit, fc, -1)
    a = frame[2] << 8 | frame[3]
    v = frame[4] << 8 | frame[5]
    if a != address or v != value:
        raise ModbusFrameError("echo %d:%d, sent %d:%d" % (a, v, address, value))
