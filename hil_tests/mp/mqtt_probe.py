# Drives sot.mqtt.client against a real broker, for hil_tests/test_mqtt_client.py.
#
#   micropython -X heapsize=64k mqtt_probe.py HOST PORT MODE [ARGS]
#
# MODE  pub TOPIC PAYLOAD   QoS 1 retained publish, then a clean disconnect
#       will TOPIC          Will (TOPIC, "lost", QoS 1, retained); publish "online" to TOPIC,
#                           then idle until killed
#       clean TOPIC         Will on TOPIC; subscribe to TOPIC/echo and publish a burst to it, so
#                           the broker is still sending when DISCONNECT goes out; disconnect
#       sub TOPIC           subscribe, print the first message, disconnect
#       watch               connect and wait for the link to die
#
# Prints one line per step (READY, PUBACK, SUBSCRIBED, MSG ..., DOWN <ms> <code>, DONE); the
# test reads them. Keepalive is 4 s.
import asyncio
import sys
from time import ticks_diff, ticks_ms

from sot.mqtt.client import MQTTClient

KEEPALIVE = 4


def say(*args):
    print(*args)  # stdout is unbuffered in the unix port, even into a pipe


async def main(host, port, mode, args):
    got = []
    c = MQTTClient("probe-" + mode, asyncio.open_connection, host, port, keepalive=KEEPALIVE,
                   on_message=lambda t, p, r: got.append((t, bytes(p), r)))
    will = (args[0], b"lost", 1, True) if mode in ("will", "clean") else None
    await c.connect(will=will)
    if mode == "pub":
        await c.publish(args[0], args[1], qos=1, retain=True)
        say("PUBACK")
    elif mode == "will":
        await c.publish(args[0], b"online", qos=1, retain=True)
        say("READY")
        await c.wait_closed()  # the test kills us before this returns
    elif mode == "clean":
        echo = args[0] + "/echo"
        await c.subscribe(echo, 0)
        for i in range(50):  # the broker echoes these back while DISCONNECT is on its way
            await c.publish(echo, b"burst %d" % i)
    elif mode == "sub":
        await c.subscribe(args[0], 1)
        say("SUBSCRIBED")
        t0 = ticks_ms()
        while not got and ticks_diff(ticks_ms(), t0) < 10000:
            await asyncio.sleep_ms(20)
        for t, p, r in got:
            say("MSG", t, p.decode(), r)
    elif mode == "watch":
        say("READY")
        t0 = ticks_ms()
        await c.wait_closed()
        say("DOWN", ticks_diff(ticks_ms(), t0), getattr(c.error, "code", repr(c.error)))
        return
    await c.disconnect()
    say("DONE", c.dropped)


asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]))
