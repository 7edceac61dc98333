"""The firmware's MQTT client (sot.mqtt) in the MicroPython unix port against a real Mosquitto.

Each test runs `hil_tests/mp/mqtt_probe.py` in `micropython -X heapsize=64k`, with the client
precompiled to .mpy as on a board, and checks what the broker did with a paho-mqtt client on
the other side: retained messages, the Last Will after a kill but not after a clean disconnect,
delivery to the firmware, and how fast the firmware notices a dead broker.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.tooling import firmware
from hil_tests.rig.broker import Broker

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "network")]

REPO = Path(__file__).resolve().parent.parent
PROBE = REPO / "hil_tests" / "mp" / "mqtt_probe.py"
KEEPALIVE = 4  # as in mqtt_probe.py
ERR_EOF, ERR_PING = 102, 104  # sot.mqtt.packets


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


@pytest.fixture
def broker() -> Iterator[Broker]:
    """An open broker (anonymous, no ACLs): these tests are about the protocol client, on topics
    of their own; the per-site ACLs are tested in test_session_faults.py (C6). Plaintext: the
    probe drives the MQTT client alone; the product's TLS is tested in test_tls.py."""
    b = Broker(tls=False)
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def mpy_dir() -> Path:
    """The firmware compiled to .mpy (source does not compile in a 64 KiB heap)."""
    return firmware.build()


class Probe:
    """mqtt_probe.py in its own process; lines of its stdout are read by a thread."""

    def __init__(self, mpy_dir: Path, port: int, *args: str) -> None:
        env = dict(os.environ, MICROPYPATH=f".frozen:{mpy_dir}")
        self.proc = subprocess.Popen(
            [_tool("micropython"), "-X", "heapsize=64k", str(PROBE), "127.0.0.1", str(port),
             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, text=True, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} from the probe in {timeout} s; "
                                     f"output so far: {self.seen}") from None
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@pytest.fixture
def probes(mpy_dir: Path) -> Iterator[list[Probe]]:
    started: list[Probe] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()


def start(probes: list[Probe], mpy_dir: Path, port: int, *args: str) -> Probe:
    p = Probe(mpy_dir, port, *args)
    probes.append(p)
    return p


class Subscriber:
    """A paho-mqtt 2.x client that records (topic, payload, retain) of what it receives."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"paho-{uuid.uuid4().hex[:8]}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain)))
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        assert self._subscribed.wait(5), "paho did not get its SUBACK"

    def get(self, timeout: float) -> tuple[str, bytes, bool] | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    try:
        yield made
    finally:
        for s in made:
            s.close()


def subscribe(subscribers: list[Subscriber], port: int, topic: str) -> Subscriber:
    s = Subscriber(port, topic)
    subscribers.append(s)
    return s


def test_retained_qos1_publish_reaches_late_subscriber(broker, mpy_dir, probes, subscribers):
    p = start(probes, mpy_dir, broker.port, "pub", "sot/v1/t1/state", '{"seq": 1}')
    p.expect("PUBACK")
    p.expect("DONE")
    assert p.wait() == 0
    s = subscribe(subscribers, broker.port, "sot/v1/t1/state")
    assert s.get(3) == ("sot/v1/t1/state", b'{"seq": 1}', True)


def test_will_published_after_kill(broker, mpy_dir, probes, subscribers):
    topic = "sot/v1/t2/status"
    p = start(probes, mpy_dir, broker.port, "will", topic)
    p.expect("READY")
    s = subscribe(subscribers, broker.port, topic)
    assert s.get(3) == (topic, b"online", True)
    p.kill()  # SIGKILL: the socket dies without DISCONNECT
    assert s.get(3) == (topic, b"lost", False)  # live delivery carries retain 0 (3.3.1.3)
    late = subscribe(subscribers, broker.port, topic)
    assert late.get(3) == (topic, b"lost", True)  # and the Will was retained


def test_clean_disconnect_sends_no_will(broker, mpy_dir, probes, subscribers):
    # The probe disconnects while the broker is still echoing a burst back to it. Closing the
    # socket with those bytes unread would make the kernel send RST: Mosquitto then logs the
    # disconnect with an error ("Broken pipe", "Connection reset") and, if DISCONNECT was not
    # read yet, publishes the Will. Five rounds, since that race does not lose every time.
    topic = "sot/v1/t3/status"
    rounds = 5
    s = subscribe(subscribers, broker.port, topic)
    for _ in range(rounds):
        p = start(probes, mpy_dir, broker.port, "clean", topic)
        p.expect("DONE")
        assert p.wait() == 0
    assert s.get(1.0) is None, "the broker published the Will after a clean disconnect"
    ends = [line.split(" probe-clean ", 1)[1] for line in broker.log().splitlines()
            if "Client probe-clean disconnected" in line]
    assert ends == ["disconnected."] * rounds, ends


def test_subscribed_message_reaches_on_message(broker, mpy_dir, probes, subscribers):
    topic = "sot/v1/t4/rebirth"
    p = start(probes, mpy_dir, broker.port, "sub", topic)
    p.expect("SUBSCRIBED")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pub")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        pub.publish(topic, b"now", qos=1).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    assert p.expect("MSG") == f"MSG {topic} now False"
    p.expect("DONE")
    assert p.wait() == 0


def test_broker_killed_is_noticed(broker, mpy_dir, probes):
    p = start(probes, mpy_dir, broker.port, "watch")
    p.expect("READY")
    t0 = time.monotonic()
    broker.kill()
    line = p.expect("DOWN", timeout=KEEPALIVE + 2)
    assert time.monotonic() - t0 < KEEPALIVE + 1
    assert line.split()[2] == str(ERR_EOF), line  # the kernel closed the socket: seen at once
    assert p.wait() == 0


def test_frozen_broker_is_noticed_by_keepalive(broker, mpy_dir, probes):
    # SIGSTOP keeps the TCP connection open but silent: only the keepalive can tell.
    p = start(probes, mpy_dir, broker.port, "watch")
    p.expect("READY")
    assert broker.proc is not None
    t0 = time.monotonic()
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        line = p.expect("DOWN", timeout=KEEPALIVE + 3)
        elapsed = time.monotonic() - t0
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    # ping after keepalive/2 of quiet, dead keepalive/2 later: at most `keepalive` after the
    # last packet from the broker (the CONNACK, just before READY)
    assert elapsed < KEEPALIVE + 1.0, elapsed
    assert line.split()[2] == str(ERR_PING), line
    assert p.wait() == 0
