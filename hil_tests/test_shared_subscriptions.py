"""What Mosquitto 2.0 does with MQTT shared subscriptions, measured on the real broker with the
config and ACLs `sot mqtt-auth` writes (docs/deploy.md, "Several workers", says the same in
words). The gateway's workers rely on exactly this:

- the gateway accounts may subscribe `$share/<group>/sot/v1/...`; a site account may not
  subscribe another site's uplink that way either;
- each message goes to one member of the group;
- a member killed (kill -9) with QoS 1 messages in flight and unacknowledged, on a persistent
  session: the broker keeps them in that member's session and sends them again, to that member,
  when it comes back. They are not given to the other member. Messages published while the member
  is away are still shared out to it too, and queued in its session until it returns.
- retained messages are sent to a shared subscription's subscribing member as well (MQTT 5 says
  they should not be; the gateway works either way).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hil_tests.conftest import OBSERVER, wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.proc import stop_process

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "network")]

SITE = "are-kall"
GATEWAY = "sot-gateway"
FILTER = "$share/sot-gateway/sot/v1/+/state"


class Member:
    """`python -m hil_tests.rig.sharedsub` as a subprocess: what it received, in order."""

    def __init__(self, broker: Broker, user: str, flt: str = FILTER, *,
                 ack: bool = True, clean: bool = False) -> None:
        assert broker.auth is not None
        self.err = broker.dir / f"{user}-{time.monotonic_ns()}.err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hil_tests.rig.sharedsub", broker.host,
                 str(broker.port), str(broker.ca), user, flt,
                 *(() if ack else ("--no-ack",)), *(("--clean",) if clean else ())],
                stdout=subprocess.PIPE, stderr=err,
                env={**os.environ, "SOT_PASSWORD": broker.auth[user]})
        self.got: list[tuple[int, bool]] = []
        self.granted: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self._ready.wait(15), \
            f"{user}: no SUBACK; {self.err.read_text()[-1500:]}; {broker.log()[-1500:]}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, n = line.decode().split()
            if word == "ready":
                self.granted = int(n)
                self._ready.set()
            else:
                self.got.append((int(word), n == "1"))

    def numbers(self) -> list[int]:
        return [n for n, _dup in self.got]

    def kill(self) -> None:
        stop_process(self.proc, 9)
        self._reader.join(5)


@contextmanager
def members(*ms: Member) -> Iterator[None]:
    try:
        yield
    finally:
        for m in ms:
            if m.proc.poll() is None:
                m.kill()


def publish(broker: Broker, numbers: range, *, topic: str = f"sot/v1/{SITE}/state",
            retain: bool = False) -> None:
    """Each number as a QoS 1 message from the site's account, every PUBACK waited for."""
    c = broker.client(SITE, user=SITE)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for n in numbers:
            c.publish(topic, str(n), qos=1, retain=retain).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_gateway_accounts_may_share_and_a_site_may_not(broker: Broker):
    a, b = Member(broker, GATEWAY), Member(broker, OBSERVER)
    other = Member(broker, "harjedalen-hede", f"$share/x/sot/v1/{SITE}/state")
    with members(a, b, other):
        assert a.granted == 1 and b.granted == 1
        publish(broker, range(40))
        wait_for(lambda: len(a.got) + len(b.got) >= 40, 10, "40 messages delivered")
        time.sleep(0.3)
        # each message to one member only, and both members had their share
        assert sorted(a.numbers() + b.numbers()) == list(range(40))
        assert a.got and b.got
        assert other.got == [], "a site read another site's uplink through $share"


def test_a_killed_members_unacknowledged_messages_wait_in_its_own_session(broker: Broker):
    dead = Member(broker, GATEWAY, ack=False)  # receives, never acknowledges
    live = Member(broker, OBSERVER)
    with members(dead, live):
        publish(broker, range(20))
        wait_for(lambda: len(dead.got) + len(live.got) >= 20, 10, "20 messages delivered")
        held = dead.numbers()
        assert held and sorted(held + live.numbers()) == list(range(20))
        dead.kill()  # kill -9: in flight, never acknowledged
        publish(broker, range(100, 120))  # while it is away
        time.sleep(1.0)
        away = [n for n in live.numbers() if n >= 100]
        # Not given to the living member: neither what was in flight nor the dead one's share of
        # what came while it was away (the round robin goes on counting it).
        assert not set(held) & set(live.numbers())
        assert 0 < len(away) < 20, away
        back = Member(broker, GATEWAY)  # the same account: its persistent session
        with members(back):
            wait_for(lambda: len(back.got) >= len(held) + 20 - len(away), 10,
                     "the session's messages on return")
            time.sleep(0.5)
            # The unacknowledged ones again (marked duplicate), then the ones queued meanwhile.
            assert [n for n, dup in back.got if dup] == held
            assert sorted(back.numbers()) == sorted(held + [n for n in range(100, 120)
                                                             if n not in away])
        print(f"\nin flight at the kill: {len(held)}, redelivered to the same session on "
              f"return: {len(held)}; published while away: 20, to the living member: "
              f"{len(away)}, held for the dead one: {20 - len(away)}")


def test_a_clean_session_members_messages_in_flight_are_lost(broker: Broker):
    """Why the workers keep persistent sessions: with a clean one, what the broker had handed the
    killed member is gone (no other member gets it), though the site's PUBACK came long ago."""
    dead = Member(broker, GATEWAY, ack=False, clean=True)
    live = Member(broker, OBSERVER)
    with members(dead, live):
        publish(broker, range(20))
        wait_for(lambda: len(dead.got) + len(live.got) >= 20, 10, "20 messages delivered")
        held = dead.numbers()
        dead.kill()
        publish(broker, range(100, 110))
        time.sleep(1.0)
        # after the kill, new messages all go to the living member, but the held ones are lost
        assert [n for n in live.numbers() if n >= 100] == list(range(100, 110))
        back = Member(broker, GATEWAY, clean=True)
        with members(back):
            time.sleep(1.0)
            assert back.got == []
        assert held and not set(held) & set(live.numbers())


def test_retained_messages_reach_shared_subscriptions_too(broker: Broker):
    """MQTT 5 says a shared subscription gets no retained messages; Mosquitto 2.0 sends them to
    the member that subscribes (measured here). The gateway does not depend on either: its
    leader holds a plain subscription to the sites' status as well (gateway/ingest.py)."""
    publish(broker, range(7, 8), topic=f"sot/v1/{SITE}/status", retain=True)
    shared = Member(broker, GATEWAY, "$share/sot-gateway/sot/v1/+/status")
    plain = Member(broker, OBSERVER, "sot/v1/+/status")
    with members(shared, plain):
        wait_for(lambda: plain.got and shared.got, 5, "the retained status on both")
        time.sleep(0.5)
        assert plain.numbers() == [7] and shared.numbers() == [7]
