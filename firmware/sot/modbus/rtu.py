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
# slower, so the bit loop would cost ~10 ms of event loop per full block. The table is a bytes
# constant (entry i little-endian at 2i), not built at import: frozen into a board's image it
# stays in flash, where a computed one took 512 bytes of the heap. test_rtu.py checks it
# against the polynomial.
_TABLE = (
    b"\x00\x00\xc1\xc0\x81\xc1\x40\x01\x01\xc3\xc0\x03\x80\x02\x41\xc2\x01\xc6\xc0\x06"
    b"\x80\x07\x41\xc7\x00\x05\xc1\xc5\x81\xc4\x40\x04\x01\xcc\xc0\x0c\x80\x0d\x41\xcd"
    b"\x00\x0f\xc1\xcf\x81\xce\x40\x0e\x00\x0a\xc1\xca\x81\xcb\x40\x0b\x01\xc9\xc0\x09"
    b"\x80\x08\x41\xc8\x01\xd8\xc0\x18\x80\x19\x41\xd9\x00\x1b\xc1\xdb\x81\xda\x40\x1a"
    b"\x00\x1e\xc1\xde\x81\xdf\x40\x1f\x01\xdd\xc0\x1d\x80\x1c\x41\xdc\x00\x14\xc1\xd4"
    b"\x81\xd5\x40\x15\x01\xd7\xc0\x17\x80\x16\x41\xd6\x01\xd2\xc0\x12\x80\x13\x41\xd3"
    b"\x00\x11\xc1\xd1\x81\xd0\x40\x10\x01\xf0\xc0\x30\x80\x31\x41\xf1\x00\x33\xc1\xf3"
    b"\x81\xf2\x40\x32\x00\x36\xc1\xf6\x81\xf7\x40\x37\x01\xf5\xc0\x35\x80\x34\x41\xf4"
    b"\x00\x3c\xc1\xfc\x81\xfd\x40\x3d\x01\xff\xc0\x3f\x80\x3e\x41\xfe\x01\xfa\xc0\x3a"
    b"\x80\x3b\x41\xfb\x00\x39\xc1\xf9\x81\xf8\x40\x38\x00\x28\xc1\xe8\x81\xe9\x40\x29"
    b"\x01\xeb\xc0\x2b\x80\x2a\x41\xea\x01\xee\xc0\x2e\x80\x2f\x41\xef\x00\x2d\xc1\xed"
    b"\x81\xec\x40\x2c\x01\xe4\xc0\x24\x80\x25\x41\xe5\x00\x27\xc1\xe7\x81\xe6\x40\x26"
    b"\x00\x22\xc1\xe2\x81\xe3\x40\x23\x01\xe1\xc0\x21\x80\x20\x41\xe0\x01\xa0\xc0\x60"
    b"\x80\x61\x41\xa1\x00\x63\xc1\xa3\x81\xa2\x40\x62\x00\x66\xc1\xa6\x81\xa7\x40\x67"
    b"\x01\xa5\xc0\x65\x80\x64\x41\xa4\x00\x6c\xc1\xac\x81\xad\x40\x6d\x01\xaf\xc0\x6f"
    b"\x80\x6e\x41\xae\x01\xaa\xc0\x6a\x80\x6b\x41\xab\x00\x69\xc1\xa9\x81\xa8\x40\x68"
    b"\x00\x78\xc1\xb8\x81\xb9\x40\x79\x01\xbb\xc0\x7b\x80\x7a\x41\xba\x01\xbe\xc0\x7e"
    b"\x80\x7f\x41\xbf\x00\x7d\xc1\xbd\x81\xbc\x40\x7c\x01\xb4\xc0\x74\x80\x75\x41\xb5"
    b"\x00\x77\xc1\xb7\x81\xb6\x40\x76\x00\x72\xc1\xb2\x81\xb3\x40\x73\x01\xb1\xc0\x71"
    b"\x80\x70\x41\xb0\x00\x50\xc1\x90\x81\x91\x40\x51\x01\x93\xc0\x53\x80\x52\x41\x92"
    b"\x01\x96\xc0\x56\x80\x57\x41\x97\x00\x55\xc1\x95\x81\x94\x40\x54\x01\x9c\xc0\x5c"
    b"\x80\x5d\x41\x9d\x00\x5f\xc1\x9f\x81\x9e\x40\x5e\x00\x5a\xc1\x9a\x81\x9b\x40\x5b"
    b"\x01\x99\xc0\x59\x80\x58\x41\x98\x01\x88\xc0\x48\x80\x49\x41\x89\x00\x4b\xc1\x8b"
    b"\x81\x8a\x40\x4a\x00\x4e\xc1\x8e\x81\x8f\x40\x4f\x01\x8d\xc0\x4d\x80\x4c\x41\x8c"
    b"\x00\x44\xc1\x84\x81\x85\x40\x45\x01\x87\xc0\x47\x80\x46\x41\x86\x01\x82\xc0\x42"
    b"\x80\x43\x41\x83\x00\x41\xc1\x81\x81\x80\x40\x40"
)


def crc16(buf, n=-1):
    """CRC-16/MODBUS of buf[0:n] (all of buf if n < 0). On the wire the low byte goes first."""
    if n < 0:
        n = len(buf)
    table = _TABLE
    crc = 0xFFFF
    for i in range(n):
        j = ((crc ^ buf[i]) & 0xFF) << 1
        crc = (crc >> 8) ^ table[j] ^ (table[j + 1] << 8)
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
