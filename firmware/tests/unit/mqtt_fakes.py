# A fake transport for the MQTT client tests: the test plays the broker.
#
# FakeStream stands in for what open_connection() returns on MicroPython (one asyncio.Stream
# used as reader and writer). The client reads what the test feed()s; what the client writes
# collects in `tx`, and packet() takes it apart one MQTT packet at a time.
import asyncio


class FakeStream:
    def __init__(self, eof_on_disconnect=True, trailing=b""):
        self.rx = bytearray()
        self.rpos = 0
        self.tx = bytearray()
        self.eof = False
        self.closed = False
        self.unread_at_close = None
        # Like a broker: close our side after a DISCONNECT, after sending `trailing` bytes.
        self.eof_on_disconnect = eof_on_disconnect
        self.trailing = trailing
        self._rx_ev = asyncio.Event()
        self._tx_ev = asyncio.Event()

    # -- the client's side ----------------------------------------------------------------

    async def readinto(self, buf):
        while self.rpos >= len(self.rx) and not self.eof:
            self._rx_ev.clear()
            await self._rx_ev.wait()
        n = min(len(buf), len(self.rx) - self.rpos)
        if n:
            buf[:n] = memoryview(self.rx)[self.rpos : self.rpos + n]
            self.rpos += n
            if self.rpos == len(self.rx):
                self.rx = bytearray()
                self.rpos = 0
        return n

    def write(self, buf):
        if self.closed:
            raise OSError(32)
        self.tx += buf
        self._tx_ev.set()
        if self.eof_on_disconnect and bytes(buf) == b"\xe0\x00":
            self.feed(self.trailing)
            self.feed_eof()

    async def drain(self):
        await asyncio.sleep_ms(0)

    def close(self):
        if not self.closed:
            self.unread_at_close = len(self.rx) - self.rpos
        self.closed = True

    async def wait_closed(self):
        self.close()

    # -- the test's (broker's) side --------------------------------------------------------

    def feed(self, data):
        self.rx += data
        self._rx_ev.set()

    def feed_eof(self):
        self.eof = True
        self._rx_ev.set()

    def unread(self):
        return len(self.rx) - self.rpos

    async def consumed(self, timeout_ms=1000):
        """Wait until the client has read everything fed so far."""
        t = 0
        while self.unread():
            assert t < timeout_ms, "client did not read its input"
            await asyncio.sleep_ms(2)
            t += 2

    async def packet(self, timeout_ms=1000):
        """The next whole packet the client wrote, as (first byte, body)."""
        while True:
            p = self._split()
            if p is not None:
                return p
            self._tx_ev.clear()
            await asyncio.wait_for_ms(self._tx_ev.wait(), timeout_ms)

    def _split(self):
        tx = self.tx
        n = shift = 0
        i = 1
        while True:
            if i >= len(tx):
                return None
            n |= (tx[i] & 0x7F) << shift
            i += 1
            if tx[i - 1] < 0x80:
                break
            shift += 7
        if len(tx) < i + n:
            return None
        first = tx[0]
        body = bytes(tx[i : i + n])
        self.tx = tx[i + n :]
        return first, body


class Opener:
    """An open_connection(host, port[, ca]) that hands out the given streams, one per call; a
    stream that is an exception is raised instead (a failed TLS handshake)."""

    def __init__(self, *streams):
        self.streams = streams
        self.calls = []

    async def __call__(self, host, port, *ca):
        self.calls.append((host, port) + ca)
        s = self.streams[len(self.calls) - 1]
        if isinstance(s, Exception):
            raise s
        return s, s


# -- helpers shared by the MQTT client tests ---------------------------------------------------

CONNACK = b"\x20\x02\x00\x00"
CONNACK_PRESENT = b"\x20\x02\x01\x00"  # session present (3.2.2.2)


def puback(pid):
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def incoming_publish(topic, payload, qos=0, retain=False, pid=0):
    from sot.mqtt.packets import publish_packet

    return bytes(publish_packet(topic, payload, qos, retain, pid))


async def connected(**kw):
    """A client connected to a fresh FakeStream, its CONNECT already taken off the wire."""
    from sot.mqtt.client import MQTTClient

    s = FakeStream()
    s.feed(CONNACK)
    c = MQTTClient("c1", Opener(s), "broker", 1883, **kw)
    await c.connect()
    first, _ = await s.packet()
    assert first == 0x10
    return c, s


async def fails_with(code, aw):
    """Await aw and check that it raises MQTTError with this code."""
    from sot.mqtt.packets import MQTTError

    try:
        await aw
    except MQTTError as e:
        assert e.code == code, (e.code, code)
        return
    raise AssertionError("no MQTTError %d" % code)
