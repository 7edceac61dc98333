# MQTT client: bytes on the wire against a fake stream (the test plays the broker).
# Expected bytes are worked out by hand from the MQTT 3.1.1 specification. Link life cycle
# (timeouts, keepalive, resend, disconnect) is in test_mqtt_link.py.
import asyncio

# the client first: it is the biggest to compile, best done while the heap is emptiest
from sot.mqtt import packets as mp
from sot.mqtt.client import MQTTClient
from mqtt_fakes import (CONNACK, CONNACK_PRESENT, FakeStream, Opener, connected, fails_with,
                        incoming_publish, puback)


def test_remaining_length_encoding():
    cases = ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
             (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
             (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f"))
    buf = bytearray(4)
    for n, want in cases:
        k = mp.put_rl(buf, 0, n)
        assert bytes(buf[:k]) == want, (n, bytes(buf[:k]))
        assert mp.rl_size(n) == len(want), n
    try:
        mp.put_rl(buf, 0, 268435456)
    except ValueError:
        return
    raise AssertionError("a 5-byte Remaining Length was accepted")


async def test_connect_with_will_user_password():
    s = FakeStream()
    s.feed(CONNACK)
    op = Opener(s)
    c = MQTTClient("c1", op, "broker", 1883, user="u", password="p", keepalive=30)
    assert await c.connect(will=("w", b"x", 1, True)) is False
    # 10 1A: CONNECT, 26 bytes follow (10 variable header + 16 payload)
    # 00 04 "MQTT" 04; flags EE = user 80 | password 40 | will retain 20 | will QoS 1 08 |
    # will 04 | clean session 02; keepalive 00 1E; then "c1", "w", "x", "u", "p"
    want = (b"\x10\x1a\x00\x04MQTT\x04\xee\x00\x1e"
            b"\x00\x02c1\x00\x01w\x00\x01x\x00\x01u\x00\x01p")
    assert bytes(s.tx) == want, bytes(s.tx)
    assert c.connected and c.error is None and op.calls == [("broker", 1883)]
    await c.disconnect()
    assert s.closed and not c.connected and c.error is None


async def test_with_a_ca_every_connection_is_tls_and_a_failed_handshake_is_a_failed_connect():
    # config.json carries the CA as base64 text; the HAL gets its DER bytes on every connect,
    # and a refused handshake (another CA, a plaintext broker) is never retried without it.
    der = b"\x30\x82\x01\x0a" + bytes(range(8))
    import binascii
    text = binascii.b2a_base64(der).decode().strip()
    s = FakeStream()
    s.feed(CONNACK)
    op = Opener(OSError(-9984), s)  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED, then a good one
    c = MQTTClient("c1", op, "broker", 8883, ca=text)
    try:
        await c.connect()
        raise AssertionError("a failed handshake connected")
    except OSError:
        pass
    assert not c.connected and op.calls == [("broker", 8883, der)]
    await c.connect()
    assert c.connected and op.calls[1] == ("broker", 8883, der)
    await c.disconnect()


async def test_connect_minimal_persistent_session():
    s = FakeStream()
    s.feed(CONNACK_PRESENT)
    c = MQTTClient("a", Opener(s), "h", 1, keepalive=60)
    assert await c.connect(clean_session=False) is True
    # 10 0D; 00 04 "MQTT" 04; flags 00 (nothing, not even clean session); keepalive 00 3C; "a"
    assert bytes(s.tx) == b"\x10\x0d\x00\x04MQTT\x04\x00\x00\x3c\x00\x01a", bytes(s.tx)
    await c.disconnect()


async def test_connack_refused():
    s = FakeStream()
    s.feed(b"\x20\x02\x00\x05")  # 5: not authorized (3.2.2.3)
    c = MQTTClient("c1", Opener(s), "h", 1)
    await fails_with(5, c.connect())
    assert s.closed and not c.connected


async def test_qos1_publish_waits_for_its_own_puback():
    c, s = await connected()
    t = asyncio.create_task(c.publish("a/b", b"hi", qos=1, retain=True))
    first, body = await s.packet()
    # 33 = PUBLISH 30 | QoS 1 << 1 (02) | RETAIN 01; 00 03 "a/b"; packet id 00 01; "hi"
    assert first == 0x33 and body == b"\x00\x03a/b\x00\x01hi", (first, body)
    s.feed(puback(2))  # an id nobody waits for
    await s.consumed()
    await asyncio.sleep_ms(20)
    assert not t.done() and 1 in c._inflight
    s.feed(puback(1))
    await asyncio.wait_for_ms(t, 500)
    assert not c._inflight
    await c.publish("a/b", "é")  # QoS 0: no packet id, nothing to wait for; UTF-8
    first, body = await s.packet()
    assert first == 0x30 and body == b"\x00\x03a/b\xc3\xa9", body
    await c.disconnect()


async def test_incoming_publish_delivered_and_qos1_acked():
    got = []
    c, s = await connected(on_message=lambda t, p, r: got.append((t, bytes(p), r)))
    s.feed(incoming_publish("sot/v1/x/rebirth", b"go", qos=1, retain=True, pid=0x1234))
    first, body = await s.packet()
    assert first == 0x40 and body == b"\x12\x34", (first, body)
    assert got == [("sot/v1/x/rebirth", b"go", True)], got
    s.feed(incoming_publish("q0", b""))
    await s.consumed()
    await asyncio.sleep_ms(10)
    assert got[1] == ("q0", b"", False) and not s.tx  # QoS 0: no PUBACK
    await c.disconnect()


async def test_on_message_error_keeps_link():
    def boom(t, p, r):
        raise ValueError("a bug in the layer above")

    c, s = await connected(on_message=boom)
    s.feed(incoming_publish("t", b"x", qos=1, pid=7))
    first, body = await s.packet()
    assert first == 0x40 and body == b"\x00\x07" and c.connected
    await c.disconnect()


async def feed_big(s, first, head, n):
    # A packet with an n-byte body that starts with head, the rest fed in pieces (64 KiB heap).
    rl = bytearray(4)
    s.feed(bytes((first,)) + rl[: mp.put_rl(rl, 0, n)] + head)
    chunk = b"y" * 1024
    left = n - len(head)
    while left:
        k = min(left, 1024)
        s.feed(chunk[:k])
        left -= k
        await s.consumed()


async def test_oversize_incoming_dropped():
    got = []
    c, s = await connected(on_message=lambda t, p, r: got.append((t, len(p))))
    # 2-byte Remaining Length (3007 > 127): QoS 1, dropped, but acknowledged
    await feed_big(s, 0x32, b"\x00\x03big\x00\x09", 3007)
    first, body = await s.packet()
    assert first == 0x40 and body == b"\x00\x09" and c.dropped == 1
    # 3-byte Remaining Length (17000 > 16383), QoS 0
    await feed_big(s, 0x30, b"\x00\x03big", 17000)
    s.feed(incoming_publish("small", b"ok"))
    await s.consumed()
    await asyncio.sleep_ms(10)
    assert c.dropped == 2 and c.connected
    assert got == [("small", 2)], got  # the stream stayed in step
    await c.disconnect()


async def test_subscribe_granted_and_refused():
    c, s = await connected()
    t = asyncio.create_task(c.subscribe("sot/v1/x/rebirth", 1))
    first, body = await s.packet()
    # 82 = SUBSCRIBE with its reserved flags 0010; id 00 01; filter "sot/v1/x/rebirth"; QoS 01
    assert first == 0x82 and body == b"\x00\x01\x00\x10sot/v1/x/rebirth\x01", (first, body)
    s.feed(b"\x90\x03\x00\x01\x01")  # SUBACK id 1, granted QoS 1
    assert await asyncio.wait_for_ms(t, 500) == 1
    t = asyncio.create_task(c.subscribe("forbidden/#", 0))
    await s.packet()
    s.feed(b"\x90\x03\x00\x02\x80")  # SUBACK id 2, failure
    await fails_with(0x80, asyncio.wait_for_ms(t, 500))
    assert c.connected
    await c.disconnect()
