"""One member of an MQTT shared subscription in a process of its own, so a test can kill -9 it.

    SOT_PASSWORD=... python -m hil_tests.rig.sharedsub HOST PORT CA USER FILTER [--no-ack] [--clean]

Connects (TLS, MQTT 3.1.1, persistent session unless --clean) as USER (the broker's
`use_username_as_clientid` makes that its client id; the password in the environment: a
random one may begin with "-"), subscribes FILTER with QoS 1 and prints
one line per message received: `<payload> <dup>` (dup 1: the broker sent it again). With
--no-ack it never sends a PUBACK, so every message stays in flight in its session. Prints
`ready <granted>` once the SUBACK is in (`granted`: the QoS or reason the broker gave).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt

from hil_tests.rig.broker import client_tls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    for name in ("host", "port", "ca", "user", "filter"):
        p.add_argument(name)
    p.add_argument("--no-ack", action="store_true")
    p.add_argument("--clean", action="store_true")
    a = p.parse_args(argv)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.user,
                    clean_session=a.clean, manual_ack=True)
    client_tls(c, a.ca)
    c.username_pw_set(a.user, os.environ["SOT_PASSWORD"])
    out = threading.Lock()

    def say(line: str) -> None:
        with out:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def on_connect(cl: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        cl.subscribe(a.filter, qos=1)

    def on_subscribe(cl: Any, u: Any, mid: Any, rcs: Any, props: Any) -> None:
        say(f"ready {int(rcs[0].value)}")

    def on_message(cl: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        say(f"{m.payload.decode()} {int(m.dup)}")
        if not a.no_ack:
            cl.ack(m.mid, m.qos)

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(a.host, int(a.port), keepalive=30)
    c.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
