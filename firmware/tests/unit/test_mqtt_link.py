# MQTT client link life cycle against a fake stream: timeouts, link loss, resend of unacknowledged
# QoS 1 publishes, keepalive, clean disconnect. Wire formats are in test_mqtt_packets.py.
import asyncio
from time import ticks_diff, ticks_ms

# the client first: it is the biggest to compile, best done while the heap is emptiest
from sot.mqtt import packets as mp
from sot.mqtt.client import MQTTClient
from mqtt_fakes import (CONNACK, CONNACK_PRESENT, FakeStream, Opener, connected, fails_with,
                        incoming_publish, puback)


async def test_connect_timeout_and_eof():
    s1 = FakeStream()  # never answers
    s2 = FakeStream()
    s2.feed_eof()  # hangs up at once
    c = MQTTClient("c1", Opener(s1, s2), "h", 1)
    await fails_with(mp.ERR_TIMEOUT, c.connect(timeout_ms=100))
    await fails_with(mp.ERR_EOF, c.connect(timeout_ms=100))
    assert s1.closed and s2.closed and not c.connected


async def test_publish_timeout_then_link_loss():
    c, s = await connected()
    await fails_with(mp.ERR_TIMEOUT, c.publish("t", b"1", qos=1, timeout_ms=50))
    assert len(c._inflight) == 1 and c.connected  # kept for a resend
    t = asyncio.create_task(c.publish("t", b"2", qos=1))
    await s.packet()
    await s.packet()
    s.feed_eof()
    await fails_with(mp.ERR_LINK, asyncio.wait_for_ms(t, 500))
    await asyncio.wait_for_ms(c.wait_closed(), 500)
    assert not c.connected and c.error.code == mp.ERR_EOF
    await fails_with(mp.ERR_LINK, c.publish("t", b"3"))
    await asyncio.sleep_ms(10)
    assert s.closed


async def _lose_one_publish(clean_session):
    # Connect, let a QoS 1 publish go unacknowledged, lose the link, connect again.
    s1 = FakeStream()
    s1.feed(CONNACK)
    s2 = FakeStream()
    s2.feed(CONNACK_PRESENT if not clean_session else CONNACK)
    c = MQTTClient("c1", Opener(s1, s2), "h", 1)
    await c.connect(clean_session=clean_session)
    await fails_with(mp.ERR_TIMEOUT, c.publish("t", b"x", qos=1, timeout_ms=30))
    s1.feed_eof()
    await asyncio.wait_for_ms(c.wait_closed(), 500)
    assert await c.connect(clean_session=clean_session) is (not clean_session)
    first, _ = await s2.packet()
    assert first == 0x10
    return c, s2


async def test_unacked_qos1_resent_with_dup_on_resumed_session():
    c, s = await _lose_one_publish(clean_session=False)
    first, body = await s.packet()
    assert first == 0x30 | 0x08 | 0x02, first  # DUP, QoS 1, the same packet id (4.4)
    assert body == b"\x00\x01t\x00\x01x", body
    assert c.resent == 1
    s.feed(puback(1))
    await s.consumed()
    await asyncio.sleep_ms(10)
    assert not c._inflight
    await c.disconnect()


async def test_clean_session_forgets_unacked():
    c, s = await _lose_one_publish(clean_session=True)
    await asyncio.sleep_ms(20)
    assert not c._inflight and not s.tx and c.resent == 0
    await c.disconnect()


async def test_malformed_remaining_length_drops_link():
    c, s = await connected()
    s.feed(b"\x30\xff\xff\xff\xff\x01")  # a fifth length byte (2.2.3 allows four)
    await asyncio.wait_for_ms(c.wait_closed(), 500)
    assert c.error.code == mp.ERR_PROTOCOL
    await asyncio.sleep_ms(10)
    assert s.closed


async def test_keepalive_ping_and_dead_link():
    c, s = await connected(keepalive=2)  # ping after 1 s quiet; dead 1 s after an unanswered one
    t0 = ticks_ms()
    first, body = await s.packet(timeout_ms=2000)
    dt = ticks_diff(ticks_ms(), t0)
    assert first == 0xC0 and body == b"" and 800 <= dt <= 1300, (first, dt)
    s.feed(b"\xd0\x00")  # PINGRESP
    t0 = ticks_ms()
    first, _ = await s.packet(timeout_ms=2000)  # the next ping goes unanswered
    assert first == 0xC0
    await asyncio.wait_for_ms(c.wait_closed(), 2000)
    dt = ticks_diff(ticks_ms(), t0)
    assert c.error.code == mp.ERR_PING and 1700 <= dt <= 2500, (c.error, dt)
    await asyncio.sleep_ms(10)
    assert s.closed


async def test_disconnect_reads_to_eof_before_closing():
    # After DISCONNECT the fake broker still sends a PUBACK and a PUBLISH, then hangs up.
    s = FakeStream(trailing=puback(77) + incoming_publish("late", b"x"))
    s.feed(CONNACK)
    got = []
    c = MQTTClient("c1", Opener(s), "h", 1, on_message=lambda t, p, r: got.append(t))
    await c.connect()
    await c.publish("t", b"bye")
    await c.disconnect()
    assert s.tx.endswith(b"\xe0\x00"), bytes(s.tx)
    assert s.closed and s.unread_at_close == 0 and got == ["late"]
    assert not c.connected and c.error is None
