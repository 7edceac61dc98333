# One MQTT connection's plumbing, below the session logic of sot.mqtt.client: the reader task,
# the keepalive task, whole-packet writes, and what happens when the connection fails.
#
# A Link lives from CONNACK to link loss; the client makes a new one for every connect().
#
# Writes go through one lock: MicroPython's asyncio.Stream allows only one task inside drain(),
# and packets must not interleave. A packet cut off halfway (error, timeout, cancellation)
# leaves the stream unusable, so any failed write takes the link down.
#
# Keepalive (MQTT 3.1.1, 3.1.2.10): a PINGREQ goes out when nothing was sent *or* nothing was
# received for keepalive/2; the link is declared dead when no packet at all arrives within
# ping_timeout_ms (the client's default: keepalive/2) of it. A silent link is thus noticed at
# most `keepalive` s after the last packet from the broker, and the broker (which gives up after
# 1.5 x keepalive, 3.1.2.10) hears from us at least every keepalive/2. Pinging on
# receive-silence too catches a link that swallows our QoS 0 traffic without an error.
import asyncio
from micropython import const
from time import ticks_diff, ticks_ms

from sot.mqtt import packets as p
from sot.mqtt.packets import MQTTError

WRITE_TIMEOUT_MS = const(5000)  # deadline of a write that has no caller's timeout


class Link:
    """handle(first, n) is called for each incoming packet, body in buf (only its head when
    n > len(buf); the rest is skipped afterwards); it returns a packet id to acknowledge with
    PUBACK, or 0. on_down() is called once, when the link goes down."""

    def __init__(self, r, w, buf, keepalive, ping_timeout_ms, handle, on_down):
        self.up = True
        self.error = None  # why it went down; None for a clean disconnect
        self.closing = False  # set by disconnect(): end of stream is then expected
        self._r = r
        self._w = w
        self._buf = buf
        self._handle = handle
        self._on_down = on_down
        self._lock = asyncio.Lock()
        self._ack = bytearray(b"\x40\x02\x00\x00")  # PUBACK (3.4): 40 02, packet id
        self._down_ev = asyncio.Event()
        self._closer = None
        self._idle = keepalive * 500
        self._ping_ms = ping_timeout_ms
        self._last_tx = self._last_rx = ticks_ms()
        self._ping_at = None
        self._reader = asyncio.create_task(self._read_loop())
        self._pinger = asyncio.create_task(self._keepalive_loop()) if keepalive else None

    async def send(self, pkt, timeout_ms=WRITE_TIMEOUT_MS):
        if not self.up:
            raise MQTTError(p.ERR_LINK)
        async with self._lock:
            if not self.up:
                raise MQTTError(p.ERR_LINK)
            try:
                self._w.write(pkt)
                await asyncio.wait_for_ms(self._w.drain(), timeout_ms)
            except BaseException as e:
                if isinstance(e, asyncio.TimeoutError):
                    e = MQTTError(p.ERR_TIMEOUT)
                self.down(e if isinstance(e, Exception) else MQTTError(p.ERR_LINK))
                raise e
            self._last_tx = ticks_ms()

    def down(self, exc):
        """Mark the link down (once), stop its tasks, tell the client, close the transport."""
        if not self.up:
            return
        self.up = False
        self.error = exc
        cur = asyncio.current_task()
        for t in (self._reader, self._pinger):
            if t is not None and t is not cur:
                t.cancel()
        self._down_ev.set()
        self._on_down()
        self._closer = asyncio.create_task(self._close())

    async def wait_down(self):
        await self._down_ev.wait()

    async def closed(self):
        """Return once the transport is closed (after down())."""
        if self._closer is not None:
            await self._closer

    async def _close(self):
        # Close only once no task is inside drain(): a writer that was cancelled or timed out
        # releases the lock as it unwinds. (A closed socket still registered with asyncio's
        # poller would confuse it.)
        async with self._lock:
            try:
                self._w.close()
                await self._w.wait_closed()
            except Exception:
                pass

    async def _keepalive_loop(self):
        try:
            while self.up and not self.closing:
                now = ticks_ms()
                if self._ping_at is None:
                    quiet = max(ticks_diff(now, self._last_tx), ticks_diff(now, self._last_rx))
                    left = self._idle - quiet
                    if left <= 0:
                        self._ping_at = now  # the reader clears it on any incoming packet
                        await self.send(p.PINGREQ_PKT, self._ping_ms)
                        continue
                else:
                    left = self._ping_ms - ticks_diff(now, self._ping_at)
                    if left <= 0:
                        raise MQTTError(p.ERR_PING)
                await asyncio.sleep_ms(left)
        except Exception as e:
            self.down(e)

    async def _read_loop(self):
        r = self._r
        buf = self._buf
        hb = memoryview(bytearray(1))
        try:
            while True:
                first, n = await p.read_packet(r, buf, hb)
                pid = self._handle(first, n)
                if n > len(buf):
                    await p.skip(r, buf, n - len(buf))
                self._last_rx = ticks_ms()
                self._ping_at = None  # any packet proves the link alive
                if pid:
                    a = self._ack  # reused: only this task sends PUBACKs
                    a[2] = pid >> 8
                    a[3] = pid & 0xFF
                    await self.send(a)
        except Exception as e:
            self.down(None if self.closing else e)
