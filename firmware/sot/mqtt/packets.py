# MQTT 3.1.1 packets: encoding what the controller sends, framing what it receives.
#
# No state here: one connection lives in sot.mqtt.link, the session in sot.mqtt.client. Section
# numbers are those of the OASIS MQTT 3.1.1 specification.
#
# Every packet starts with the fixed header (2.2):
#
#   byte 0      packet type << 4 | flags      (2.2.1, 2.2.2)
#   byte 1..4   Remaining Length = length of the rest: 7 bits per byte, least significant group
#               first, bit 7 set while more bytes follow; at most 4 bytes (2.2.3)
#
# Strings are a 2-byte big-endian length followed by UTF-8 (1.5.3); packet identifiers are
# 2 bytes, never 0 (2.3.1).
import struct
from micropython import const

# Control packet types, already shifted into the high nibble of byte 0 (2.2.1)
CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x80)
SUBACK = const(0x90)
PINGRESP = const(0xD0)
DUP = const(0x08)  # PUBLISH flag bit 3 (3.3.1.1)

PINGREQ_PKT = b"\xc0\x00"  # 3.12: fixed header only
DISCONNECT_PKT = b"\xe0\x00"  # 3.14: fixed header only

# MQTTError.code: 1..5 are CONNACK refusals (3.2.2.3), 0x80 a SUBACK failure (3.9.3); the
# rest are this client's own.
ERR_LINK = const(100)  # not connected, or the link went down while waiting
ERR_TIMEOUT = const(101)  # no answer (CONNACK, PUBACK, SUBACK) or a write stuck past its deadline
ERR_EOF = const(102)  # the peer closed the connection
ERR_PROTOCOL = const(103)  # malformed or unexpected packet from the broker
ERR_PING = const(104)  # nothing received within ping_timeout_ms of a PINGREQ
ERR_INFLIGHT = const(105)  # max_inflight QoS 1 publishes are already unacknowledged


class MQTTError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def rl_size(n):
    """Bytes the Remaining Length field takes for n (2.2.3)."""
    return 1 if n < 0x80 else 2 if n < 0x4000 else 3 if n < 0x200000 else 4


def put_rl(buf, i, n):
    """Write Remaining Length n at buf[i]; return the index after it (2.2.3)."""
    if n > 0xFFFFFFF:
        raise ValueError("packet too long")
    while n > 0x7F:
        buf[i] = n & 0x7F | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i + 1


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _put_str(buf, i, s):
    n = len(s)
    struct.pack_into("!H", buf, i, n)
    buf[i + 2 : i + 2 + n] = s
    return i + 2 + n


def _packet(first, n):
    # A bytearray for a packet with an n-byte body, fixed header filled in; returns it and the
    # index of the first body byte.
    pkt = bytearray(1 + rl_size(n) + n)
    pkt[0] = first
    return pkt, put_rl(pkt, 1, n)


def connect_packet(client_id, keepalive, clean, will, user, password):
    # CONNECT (3.1)
    #   fixed header  0x10, Remaining Length
    #   variable      protocol name 00 04 "MQTT", level 04 (3.1.2.1-2),
    #                 connect flags (3.1.2.3): bit 7 user name, 6 password, 5 will retain,
    #                 4-3 will QoS, 2 will flag, 1 clean session, 0 reserved,
    #                 keep alive in seconds, 2 bytes (3.1.2.10)
    #   payload       client id, [will topic, will message], [user name], [password], each a
    #                 2-byte length + bytes, in this order (3.1.3)
    fields = [_b(client_id)]
    flags = 0x02 if clean else 0
    if will:
        fields.append(_b(will[0]))
        fields.append(_b(will[1]))
        flags |= 0x04 | (will[2] & 3) << 3 | (0x20 if will[3] else 0)
    if user is not None:
        fields.append(_b(user))
        flags |= 0x80
    if password is not None:  # 3.1.2.9: only together with a user name
        fields.append(_b(password))
        flags |= 0x40
    n = 10
    for f in fields:
        n += 2 + len(f)
    pkt, i = _packet(CONNECT, n)
    pkt[i : i + 7] = b"\x00\x04MQTT\x04"
    pkt[i + 7] = flags
    struct.pack_into("!H", pkt, i + 8, keepalive)
    i += 10
    for f in fields:
        i = _put_str(pkt, i, f)
    return pkt


def publish_packet(topic, payload, qos, retain, pid):
    # PUBLISH (3.3)
    #   fixed header  0x30 | DUP << 3 | QoS << 1 | RETAIN, Remaining Length
    #   variable      topic name (string), packet identifier (2 bytes, only if QoS > 0)
    #   payload       the message, no length prefix: whatever remains
    t = _b(topic)
    p = _b(payload)
    pkt, i = _packet(PUBLISH | qos << 1 | (1 if retain else 0),
                     2 + len(t) + (2 if qos else 0) + len(p))
    i = _put_str(pkt, i, t)
    if qos:
        struct.pack_into("!H", pkt, i, pid)
        i += 2
    pkt[i:] = p
    return pkt


def subscribe_packet(topic, qos, pid):
    # SUBSCRIBE (3.8)
    #   fixed header  0x82 (the flags must be 0010, 3.8.1), Remaining Length
    #   variable      packet identifier (2 bytes)
    #   payload       topic filter (string), requested QoS (1 byte)
    t = _b(topic)
    pkt, i = _packet(SUBSCRIBE | 2, 2 + 2 + len(t) + 1)
    struct.pack_into("!H", pkt, i, pid)
    i = _put_str(pkt, i + 2, t)
    pkt[i] = qos
    return pkt


def publish_pid(first, buf, n):
    """Packet identifier of an incoming QoS 1 PUBLISH whose body (or its first n bytes) is in
    buf; 0 for QoS 0 or when the id lies beyond n."""
    # PUBLISH variable header (3.3.2): topic name, then the packet identifier if QoS > 0
    if first & 0xF6 != PUBLISH | 2:
        return 0
    i = 2 + (buf[0] << 8 | buf[1])
    return buf[i] << 8 | buf[i + 1] if i + 2 <= n else 0


async def fill(r, mv, n):
    """Read exactly n bytes from stream r into memoryview mv."""
    i = 0
    while i < n:
        k = await r.readinto(mv[i:n])
        if k is None:  # spurious wake-up of a non-blocking socket
            continue
        if not k:  # end of stream
            raise MQTTError(ERR_EOF)
        i += k


async def read_packet(r, buf, hb):
    """Read one packet; return (byte 0, Remaining Length) with the body in buf.

    If the body is longer than buf, only its first len(buf) bytes are read: the caller looks at
    them and then calls skip() for the rest. hb is a 1-byte memoryview for the header.
    """
    await fill(r, hb, 1)
    first = hb[0]
    n = shift = 0
    while True:
        await fill(r, hb, 1)
        n |= (hb[0] & 0x7F) << shift
        if hb[0] < 0x80:
            break
        shift += 7
        if shift > 21:  # a fifth length byte (2.2.3): malformed, the stream is out of step
            raise MQTTError(ERR_PROTOCOL)
    await fill(r, buf, min(n, len(buf)))
    return first, n


async def skip(r, buf, n):
    """Read n bytes through buf and throw them away."""
    while n:
        k = min(n, len(buf))
        await fill(r, buf, k)
        n -= k
