"""What one site's MQTT password can do to others, through the real Mosquitto with the config
`sot mqtt-auth` writes, the real gateway and the real firmware (docs/security.md).

Each account is tied to one client id (`use_username_as_clientid`): connecting with another
client's id kicks nobody, fires no Will and resumes no one else's session. Anonymous clients are
refused. The broker drops a publish over `message_size_limit` and keeps the publisher connected,
and closes the connection of a client whose packet is over `max_packet_size`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway import mqttauth
from gateway.config import load_sites
from hil_tests.conftest import OBSERVER, wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread
from hil_tests.rig.gatewayprocess import event_keys
from hil_tests.rig.mqttpeer import Peer
from hil_tests.rig.sitesim import SimulatedSite

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "network")]

A = "harjedalen-hede"  # the attacker holds this site's password
B = "are-kall"  # the victim's controller runs the real firmware


class Conn:
    """One paho client; `result` is (reason code, session_present) of its CONNACK."""

    def __init__(self, broker: Broker, client_id: str, user: str | None, *,
                 clean: bool = True) -> None:
        self.c = broker.client(client_id, clean_session=clean)
        self.result: tuple[Any, bool] | None = None
        self.closed = threading.Event()
        self._acked = threading.Event()
        self.got: list[tuple[str, bytes]] = []
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.closed.set()
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        if user is not None:
            self.c.username_pw_set(user, broker.auth[user])  # type: ignore[index]
        self.c.connect(broker.host, broker.port, keepalive=30)
        self.c.loop_start()
        assert self._acked.wait(5), "no CONNACK"

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.result = (rc, bool(flags.session_present))
        self._acked.set()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def fw_connects(sim: SimulatedSite) -> int:
    return sim.firmware.log().count("I telemetry: connected")  # type: ignore[union-attr]


def test_one_sites_password_cannot_take_another_clients_id(broker: Broker,
                                                          gateway: GatewayThread,
                                                          tmp_path: Path):
    watch = Peer(broker.port, "sot/v1/+/status", **broker.login(OBSERVER))
    sim = SimulatedSite(load_sites()[B], tmp_path, mqtt_host=broker.host, mqtt_port=broker.port,
                        heartbeat_s=5, keepalive_s=5, login=broker.login(B)).start()
    db = tmp_path / "sot.sqlite3"
    try:
        wait_for(lambda: event_keys(db, B) or sim.press("shop"), 30, "B's controller connected")
        ingest = gateway.gateway.mqtt
        assert ingest is not None
        gw_connects, b_connects = ingest.connects, fw_connects(sim)
        # B's controller's own id ("sot-" + site), its account name, the gateway's id: each
        # once with a clean session and once asking to resume the session stored under it.
        for cid in (f"sot-{B}", B, mqttauth.GATEWAY_USER):
            for clean in (True, False):
                bad = Conn(broker, cid, A, clean=clean)
                try:
                    assert bad.result is not None and not bad.result[0].is_failure
                    assert bad.result[1] is False, f"{cid}: got a stored session"
                    if cid == mqttauth.GATEWAY_USER and not clean:
                        # the gateway's stored session (its subscriptions) stays the gateway's:
                        # an event B journals meanwhile reaches the database
                        n = len(event_keys(db, B))
                        sim.press("shop")
                        wait_for(lambda n=n: len(event_keys(db, B)) > n, 10,
                                 "B's event filed while the intruder is connected")
                    time.sleep(1.0)
                finally:
                    bad.close()
        time.sleep(2.0)  # a Will is published at once; give the broker time to deliver it
        statuses = [(t, json.loads(p)) for t, p, _ in watch.messages if p]
        assert (f"sot/v1/{B}/status", "lost") not in [(t, s["state"]) for t, s in statuses]
        assert "offline" not in [s["state"] for t, s in statuses
                                 if t == "sot/v1/gateway/status"]
        assert ingest.connects == gw_connects, "the gateway was disconnected"
        assert fw_connects(sim) == b_connects, "B's controller was disconnected"
        assert gateway.get(f"/api/sites/{B}")["site"]["status"] == "online"
    finally:
        sim.stop()
        watch.close()


def test_anonymous_clients_are_refused(broker: Broker):
    anon = Conn(broker, "anyone", None)
    try:
        assert anon.result is not None and anon.result[0].is_failure
    finally:
        anon.close()


def test_a_second_connection_of_one_account_replaces_the_first(broker: Broker):
    """What a site's password can still end: its own account's older connection (MQTT's rule)."""
    first = Conn(broker, "one", A)
    try:
        assert first.closed.wait(0.5) is False
        second = Conn(broker, "two", A)
        try:
            assert first.closed.wait(5), "the older connection of the same account"
        finally:
            second.close()
    finally:
        first.close()


def worst_crisis_payload() -> bytes:
    """The largest crisis message the gateway's text limits allow: every character 4 bytes."""
    from gateway import crisis

    wide = "\U0001F6A8"
    return json.dumps({"id": "k" * crisis.MAX_ID, "sv": wide * crisis.MAX_TEXT,
                       "en": wide * crisis.MAX_TEXT, "severity": "warning",
                       "from": wide * crisis.MAX_FROM, "ts": 4102444799,
                       "expires": 4102444799}, ensure_ascii=False,
                      separators=(",", ":")).encode()


def test_oversize_publish_is_dropped_and_the_next_message_arrives(broker: Broker):
    watch = Peer(broker.port, f"sot/v1/{A}/#", **broker.login(OBSERVER))
    site = Conn(broker, A, A)
    site.c.subscribe(f"sot/v1/{A}/crisis/#", 1)
    gw = Peer(broker.port, **broker.login(mqttauth.GATEWAY_USER))  # no gateway runs here
    time.sleep(0.3)
    try:
        def seen(topic: str) -> list[bytes]:
            return [p for t, p, _ in watch.messages if t == topic]

        # a site: one byte over the limit, then a legal state; the PUBACK comes for both and
        # the connection stays
        state = f"sot/v1/{A}/state"
        big = b'{"pad":"' + b"x" * mqttauth.MESSAGE_SIZE_LIMIT + b'"}'
        site.c.publish(state, big, qos=1).wait_for_publish(5)
        site.c.publish(state, b'{"n":1}', qos=1).wait_for_publish(5)
        wait_for(lambda: b'{"n":1}' in seen(state), 5, "the legal message after the big one")
        assert big not in seen(state) and not site.closed.is_set()
        # the gateway: the largest legal crisis message reaches the site
        worst = worst_crisis_payload()
        assert len(worst) <= mqttauth.MESSAGE_SIZE_LIMIT
        gw.publish(f"sot/v1/{A}/crisis/k1", worst, retain=True)
        wait_for(lambda: (f"sot/v1/{A}/crisis/k1", worst) in site.got, 5,
                 "the largest legal crisis message at the site")
        # a packet over max_packet_size: the broker closes that connection (before buffering
        # it) and nobody else's
        site.c.publish(state, b"y" * mqttauth.MAX_PACKET_SIZE, qos=0)
        assert site.closed.wait(5), "the connection that sent the huge packet"
        site.close()  # no automatic reconnect: it would replace `again` below
        again = Conn(broker, A, A)
        try:
            again.c.publish(state, b'{"n":2}', qos=1).wait_for_publish(5)
            wait_for(lambda: b'{"n":2}' in seen(state), 5, "the site's message after it")
        finally:
            again.close()
        assert all(len(p) <= mqttauth.MESSAGE_SIZE_LIMIT for p in seen(state))
    finally:
        gw.publish(f"sot/v1/{A}/crisis/k1", b"", retain=True)
        site.close()
        gw.close()
        watch.close()


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_a_packet_announcing_200_mb_is_refused_before_the_broker_holds_it(broker: Broker):
    """max_packet_size works on the packet's announced length: the broker closes the connection
    as soon as it has read it, without waiting for (or buffering) the 200 MB."""
    import socket
    import struct

    def mqtt_str(x: str) -> bytes:
        return struct.pack("!H", len(x.encode())) + x.encode()

    body = (mqtt_str("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30) + mqtt_str("x")
            + mqtt_str(A) + mqtt_str(broker.auth[A]))  # type: ignore[index]
    import ssl

    tls = ssl.create_default_context(cafile=str(broker.ca))  # the broker speaks only TLS
    raw = socket.create_connection((broker.host, broker.port), timeout=5)
    with tls.wrap_socket(raw, server_hostname=broker.host) as s:
        s.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
        assert s.recv(4) == b"\x20\x02\x00\x00", "CONNACK accepted"
        s.sendall(bytes([0x30]) + _remaining_length(200_000_000) + mqtt_str("sot/v1/x") + b"y")
        t0 = time.monotonic()
        try:
            closed = s.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        assert closed and time.monotonic() - t0 < 3
    assert "disconnected due to oversize packet" in broker.log()


def test_the_files_sot_mqtt_auth_writes_run_mosquitto_as_written(tmp_path: Path):
    """`sot mqtt-auth --out DIR` then `mosquitto -c DIR/mosquitto.conf`, nothing edited: a site
    logs in with its password, its client id becomes its account, anonymous is refused."""
    import shutil
    import subprocess
    import tempfile

    from gateway.cli import main
    from hil_tests.rig.broker import client_tls, find_mosquitto, free_port
    from hil_tests.rig.proc import stop_process

    out = Path(tempfile.mkdtemp(prefix="sot-mqtt-auth-"))  # Mosquitto's own user must reach it
    os.chmod(out, 0o755)
    port = free_port()
    secrets = tmp_path / "passwords.json"
    log = tmp_path / "mosquitto.log"
    proc = None
    try:
        pki = out / "pki"
        assert main(["pki", "init", "--out", str(pki)]) == 0
        assert main(["mqtt-auth", "--out", str(out), "--secrets", str(secrets),
                     "--port", str(port), "--host", "127.0.0.1", "--pki", str(pki)]) == 0
        with open(log, "wb") as f:
            proc = subprocess.Popen([find_mosquitto(), "-c", str(out / "mosquitto.conf")],
                                    stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        def client(client_id: str = "", **kw: Any) -> mqtt.Client:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
            client_tls(c, pki / "ca.crt")  # the CA `sot pki init` made
            return c

        broker = SimpleNamespace(host="127.0.0.1", port=port, client=client,
                                 auth=json.loads(secrets.read_text()))
        wait_for(lambda: proc.poll() is None and _listening(port), 10,
                 f"mosquitto on the generated config: {log.read_text(errors='replace')}")
        ok = Conn(broker, "whatever-i-like", A)  # type: ignore[arg-type]
        try:
            assert ok.result is not None and not ok.result[0].is_failure
        finally:
            ok.close()
        anon = Conn(broker, "anyone", None)  # type: ignore[arg-type]
        try:
            assert anon.result is not None and anon.result[0].is_failure
        finally:
            anon.close()
        assert f"as {A} (" in log.read_text(errors="replace")  # its id is its account
    finally:
        stop_process(proc)
        shutil.rmtree(out, ignore_errors=True)


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
