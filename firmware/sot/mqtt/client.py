# A small asyncio MQTT 3.1.1 client (QoS 0 and 1) for the controller.
#
#   packets.py  encodes what we send, frames what we receive (layouts, spec sections)
#   link.py     one connection: reader and keepalive tasks, writes, failure, keepalive timing
#   client.py   the session: CONNECT/CONNACK, publish, subscribe, in-flight QoS 1, disconnect
#
# (Three modules rather than one because compiling a big module from source needs more than the
# 64 KiB heap the unit tests run in.)
#
# Transport-agnostic: the caller passes `open_connection(host, port) -> (reader, writer)`, so
# Wi-Fi, Ethernet or an LTE modem can carry it. The streams need readinto(), write(), drain(),
# close() and wait_closed(), as MicroPython's asyncio.Stream has.
#
# TLS: with `ca` (the municipality's CA certificate, DER bytes or the base64 text of config.json's
# mqtt.ca) every connection is `open_connection(host, port, ca)`: the HAL connects with TLS and
# verifies the broker's certificate against that CA (hal/unix.py). A handshake that fails (a
# plaintext broker, a certificate from another CA) fails connect() like any connect failure;
# there is no fallback to plaintext (docs/mqtt.md, "TLS").
#
# Failure model: no reconnect loop here; the session layer above reconnects with backoff. Every
# failure surfaces as an exception (MQTTError or OSError) and as `connected` False;
# wait_closed() returns when the link is gone and `error` says why. Every wait has a deadline.
#
# Memory: one receive buffer of MAX_PACKET bytes per client. A longer incoming packet is read
# through it and discarded (counted in `dropped`), so a flood cannot exhaust a 64 KiB heap.
import asyncio
import sys
from micropython import const
from time import ticks_diff, ticks_ms

from sot.mqtt import packets as p
from sot.mqtt.link import Link
from sot.mqtt.packets import MQTTError  # noqa: F401  (for callers: one import)

# Largest incoming Remaining Length that is delivered: the contract's limit for what the gateway
# sends a controller (docs/mqtt.md, "Crisis messages: sizes and refusals"; gateway/crisis.py
# MAX_PACKET checks the same quantity).
MAX_PACKET = const(2048)


class MQTTClient:
    """One connection at a time; call connect() again after the link is lost.

    on_message(topic: str, payload: memoryview, retained: bool) runs in the reader task for
    each incoming PUBLISH and must not block (hand the message to a queue); a QoS 1 message is
    acknowledged after it returns. The payload is a view into the receive buffer, valid only
    during the call (copy what you keep): a 2 KiB copy per message is the allocation most likely
    to fail on a busy 64 KiB heap.
    """

    max_inflight = 8  # unacknowledged QoS 1 publishes kept for a resend

    def __init__(self, client_id, open_connection, host, port, *, user=None, password=None,
                 keepalive=30, on_message=None, ca=None):
        if password is not None and user is None:
            raise ValueError("password needs user")  # 3.1.2.9
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        if isinstance(ca, str):
            from binascii import a2b_base64

            ca = a2b_base64(ca)
        self.ca = ca or None
        self.ping_timeout_ms = keepalive * 500  # see link.py
        self.on_message = on_message
        self.session_present = False
        self.dropped = 0  # incoming packets over MAX_PACKET, read and discarded
        self.resent = 0  # QoS 1 publishes sent again with DUP after a reconnect
        self._open = open_connection
        self._buf = memoryview(bytearray(MAX_PACKET))
        self._pid = 0
        self._inflight = {}  # pid -> PUBLISH packet, until its PUBACK
        self._waiters = {}  # pid -> [Event, result]; result stays None if the link dies
        self._link = None

    @property
    def connected(self):
        return self._link is not None and self._link.up

    @property
    def error(self):
        """Why the last link went down; None while up and after disconnect()."""
        return self._link.error if self._link is not None else None

    async def connect(self, will=None, clean_session=True, timeout_ms=5000):
        """Open the transport, CONNECT, await CONNACK; return the session-present flag.

        will = (topic, payload, qos, retain). With clean_session False, unacknowledged QoS 1
        publishes go out again with DUP set (4.4); with True they are forgotten (3.1.2.4).
        """
        if self.connected:
            self._link.down(MQTTError(p.ERR_LINK))
        pkt = p.connect_packet(self.client_id, self.keepalive, clean_session, will, self.user,
                               self.password)
        try:
            r, w, present = await asyncio.wait_for_ms(self._handshake(pkt), timeout_ms)
        except asyncio.TimeoutError:
            raise MQTTError(p.ERR_TIMEOUT)
        self.session_present = present
        self._link = Link(r, w, self._buf, self.keepalive, self.ping_timeout_ms, self._dispatch,
                          self._wake)
        if clean_session:
            self._inflight.clear()
        for pid in list(self._inflight):
            pkt = self._inflight.get(pid)
            if pkt is not None:  # (its PUBACK may have come in meanwhile)
                pkt[0] |= p.DUP
                await self._link.send(pkt, timeout_ms)
                self.resent += 1
        return present

    async def _handshake(self, pkt):
        if self.ca is None:
            r, w = await self._open(self.host, self.port)
        else:
            r, w = await self._open(self.host, self.port, self.ca)
        try:
            w.write(pkt)
            await w.drain()
            # CONNACK (3.2) must come first: 20 02, flags (bit 0 session present), return code
            b = self._buf
            await p.fill(r, b, 4)
            if b[0] != p.CONNACK or b[1] != 2:
                raise MQTTError(p.ERR_PROTOCOL)
            if b[3]:
                raise MQTTError(b[3])
            return r, w, bool(b[2] & 1)
        except BaseException:  # refused, failed, or cancelled by the caller's timeout
            w.close()
            await w.wait_closed()
            raise

    async def publish(self, topic, payload, qos=0, retain=False, timeout_ms=5000):
        """Send a PUBLISH; with QoS 1 return once its PUBACK has arrived.

        A QoS 1 message that times out or meets a link loss stays in the in-flight table and
        goes out again (DUP) on the next connect(clean_session=False).
        """
        if qos not in (0, 1):
            raise ValueError("qos")
        if not self.connected:
            raise MQTTError(p.ERR_LINK)
        if not qos:
            await self._link.send(p.publish_packet(topic, payload, 0, retain, 0), timeout_ms)
            return
        if len(self._inflight) >= self.max_inflight:
            raise MQTTError(p.ERR_INFLIGHT)
        pid = self._new_pid()
        pkt = p.publish_packet(topic, payload, 1, retain, pid)
        self._inflight[pid] = pkt
        await self._exchange(pid, pkt, timeout_ms)

    async def subscribe(self, topic, qos=1, timeout_ms=5000):
        """SUBSCRIBE to one filter and await the SUBACK; return the granted QoS."""
        if qos not in (0, 1):  # no QoS 2: this client never answers PUBREC/PUBREL
            raise ValueError("qos")
        pid = self._new_pid()
        granted = await self._exchange(pid, p.subscribe_packet(topic, qos, pid), timeout_ms)
        if granted > 2:  # 0x80: failure (3.9.3)
            raise MQTTError(granted)
        return granted

    async def wait_closed(self):
        """Return when the link is down (at once if it is not up)."""
        if self._link is not None:
            await self._link.wait_down()

    async def disconnect(self, timeout_ms=2000):
        """Let in-flight QoS 1 publishes finish, send DISCONNECT, close cleanly."""
        link = self._link
        if link is None:
            return
        if link.up:
            t0 = ticks_ms()
            while self._inflight and link.up and ticks_diff(ticks_ms(), t0) < timeout_ms // 2:
                await asyncio.sleep_ms(10)
            link.closing = True
            try:
                # The write lock queues DISCONNECT behind any write still draining.
                await link.send(p.DISCONNECT_PKT, timeout_ms)
                # The broker closes the connection on DISCONNECT (3.14.4): read on until it has.
                # Closing a socket with unread bytes in it (a late PUBACK) makes the kernel send
                # RST, and Mosquitto then takes the session as failed and publishes the Will.
                left = timeout_ms - ticks_diff(ticks_ms(), t0)
                await asyncio.wait_for_ms(link.wait_down(), max(left, 100))
            except Exception:
                pass
            link.down(None)
        await link.closed()

    def _new_pid(self):
        while True:
            self._pid = self._pid % 0xFFFF + 1  # 1..65535 (2.3.1)
            if self._pid not in self._inflight and self._pid not in self._waiters:
                return self._pid

    async def _exchange(self, pid, pkt, timeout_ms):
        # Send pkt, await the acknowledgement carrying pid, return its result.
        t0 = ticks_ms()
        slot = [asyncio.Event(), None]
        self._waiters[pid] = slot
        try:
            await self._link.send(pkt, timeout_ms)
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            await asyncio.wait_for_ms(slot[0].wait(), max(left, 0))
        except asyncio.TimeoutError:
            raise MQTTError(p.ERR_TIMEOUT)
        finally:
            del self._waiters[pid]
        if slot[1] is None:  # woken by _wake(): the link went down
            raise MQTTError(p.ERR_LINK)
        return slot[1]

    def _wake(self):
        for slot in self._waiters.values():
            slot[0].set()

    def _dispatch(self, first, n):
        # One incoming packet, body in self._buf; returns a packet id to acknowledge, or 0.
        buf = self._buf
        kind = first & 0xF0
        if n > MAX_PACKET:
            # Too big to keep: dropped, but a QoS 1 PUBLISH is still acknowledged, or the broker
            # would hold it in flight and send it again on every reconnect.
            self.dropped += 1
            return p.publish_pid(first, buf, MAX_PACKET)
        if kind == p.PUBLISH:
            # 3.3.2: topic name, packet id if QoS > 0, then the payload up to the end
            qos = (first >> 1) & 3
            tl = buf[0] << 8 | buf[1]
            i = 2 + tl + (2 if qos else 0)
            if qos > 1 or i > n:  # we subscribe with QoS <= 1, so QoS 2 never comes
                raise MQTTError(p.ERR_PROTOCOL)
            if self.on_message is not None:
                try:
                    self.on_message(str(buf[2 : 2 + tl], "utf-8"), buf[i:n], bool(first & 1))
                except Exception as e:  # a bug above must not take the link down
                    sys.print_exception(e)
            return p.publish_pid(first, buf, n)
        if kind == p.PUBACK or kind == p.SUBACK:
            # PUBACK (3.4): packet id. SUBACK (3.9): packet id, a return code per filter.
            if n < 2 + (kind == p.SUBACK):
                raise MQTTError(p.ERR_PROTOCOL)
            pid = buf[0] << 8 | buf[1]
            if kind == p.PUBACK:
                self._inflight.pop(pid, None)
            slot = self._waiters.get(pid)
            if slot is not None:
                slot[1] = True if kind == p.PUBACK else buf[2]
                slot[0].set()
        elif kind == p.CONNACK:
            raise MQTTError(p.ERR_PROTOCOL)
        # PINGRESP (3.13) needs nothing but its arrival; UNSUBACK is never asked for.
        return 0
