"""TLS on every MQTT link (docs/mqtt.md, "TLS"): real Mosquitto with TLS and the production
accounts, the real firmware on the unix port (MicroPython's own `tls`), the real gateway (paho).

The rig's clients trust the session's CA (rig/broker.py rig_pki). A broker that shows a
certificate from another CA, or that speaks plaintext, must be refused by the controller and by
the gateway before they send a byte of MQTT: the broker then logs no client connecting. A client
that speaks plaintext to the TLS listener is refused by the broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway import mqttauth
from gateway.config import load_sites
from hil_tests.conftest import site_logins, wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread
from hil_tests.rig.sitesim import SimulatedSite

SITE = "are-kall"


def clients_seen(broker: Broker) -> str:
    """Mosquitto's log lines of clients that got as far as MQTT CONNECT."""
    return "\n".join(ln for ln in broker.log().splitlines() if "New client connected" in ln)


@pytest.fixture
def odd_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The production config, but with another CA's certificate ("other") or no TLS at all."""
    kind = request.param
    b = Broker(auth=site_logins(), tls=kind != "plaintext", pki_name="other")
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


def test_controller_and_gateway_talk_over_tls(broker: Broker, gateway: GatewayThread,
                                              tmp_path: Path):
    sim = SimulatedSite(load_sites()[SITE], tmp_path, mqtt_host=broker.host,
                        mqtt_port=broker.port, heartbeat_s=5, login=broker.login(SITE)).start()
    try:
        wait_for(lambda: [s for s in gateway.get("/api/sites")
                          if s["id"] == SITE and s["status"] == "online"], 30,
                 "the site online at the gateway")
        seen = clients_seen(broker)
        assert f"as {SITE} " in seen and f"as {mqttauth.GATEWAY_USER} " in seen
    finally:
        sim.stop()


def test_plaintext_client_is_refused_by_the_broker(broker: Broker):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain")
    c.username_pw_set(mqttauth.GATEWAY_USER, broker.auth[mqttauth.GATEWAY_USER])  # type: ignore[index]
    connacks: list[object] = []
    c.on_connect = lambda cl, u, f, rc, p: connacks.append(rc)
    try:
        c.connect(broker.host, broker.port, keepalive=5)
        c.loop_start()
        time.sleep(2)
    except OSError:
        pass  # the broker may close the connection before paho has written its CONNECT
    finally:
        c.loop_stop()
    assert connacks == [] and not c.is_connected()
    assert mqttauth.GATEWAY_USER not in clients_seen(broker)


@pytest.mark.parametrize("odd_broker", ["other-ca", "plaintext"], indirect=True)
def test_controller_refuses_a_broker_it_cannot_verify(odd_broker: Broker, tmp_path: Path):
    sim = SimulatedSite(load_sites()[SITE], tmp_path, mqtt_host=odd_broker.host,
                        mqtt_port=odd_broker.port, heartbeat_s=5,
                        login=odd_broker.login(SITE)).start()
    try:
        assert sim.firmware is not None
        assert sim.firmware.wait_log("W telemetry: cannot connect", 20), sim.firmware.log()
        time.sleep(6)  # several retries with backoff
        log = sim.firmware.log()
        assert "I telemetry: connected" not in log
        assert log.count("W telemetry: cannot connect") == 1  # logged once, retried quietly
        assert SITE not in clients_seen(odd_broker)  # no CONNECT (and no password) was sent
    finally:
        sim.stop()


@pytest.mark.parametrize("odd_broker", ["other-ca", "plaintext"], indirect=True)
def test_gateway_refuses_a_broker_it_cannot_verify(odd_broker: Broker, tmp_path: Path):
    gw = GatewayThread({
        "mqtt": {"host": odd_broker.host, "port": odd_broker.port,
                 **odd_broker.login(mqttauth.GATEWAY_USER)},
        "http": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp_path / "sot.sqlite3")},
        "alerts": {"files_dir": str(tmp_path)},
    }).start()
    try:
        time.sleep(4)  # paho retries after 1 s, 2 s, ...
        assert gw.gateway.mqtt is not None and not gw.gateway.mqtt.is_connected()
        assert mqttauth.GATEWAY_USER not in clients_seen(odd_broker)
    finally:
        gw.stop()


def _connect_through(modem_port: int, user: str, password: str) -> bytes:
    """A plaintext MQTT CONNECT into the qemu board's TLS modem stand-in; the first bytes back."""
    import socket
    import struct

    def s(x: str) -> bytes:
        return struct.pack("!H", len(x.encode())) + x.encode()

    body = s("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30) + s("x") + s(user) + s(password)
    with socket.create_connection(("127.0.0.1", modem_port), timeout=5) as c:
        time.sleep(1.0)  # qemu connects at power-up; the board's CONNECT comes after its boot
        c.sendall(bytes([0x10, len(body)]) + body)
        try:
            return c.recv(4)
        except OSError:
            return b""


@pytest.mark.parametrize("odd_broker", ["other-ca", "plaintext"], indirect=True)
def test_the_qemu_boards_tls_modem_verifies_the_broker(broker: Broker, odd_broker: Broker):
    """The 32-bit qemu board has no TLS; the rig's modem stand-in does it for the board
    (rig/tcpproxy.py TlsModem): through it the board's plaintext CONNECT reaches the real broker
    over TLS, and a broker it cannot verify never sees it."""
    from hil_tests.rig.tcpproxy import TlsModem

    user = mqttauth.GATEWAY_USER
    good = TlsModem(broker.port, broker.ca)
    try:
        assert _connect_through(good.port, user, broker.auth[user]) == b"\x20\x02\x00\x00"  # type: ignore[index]
    finally:
        good.close()
    bad = TlsModem(odd_broker.port, odd_broker.ca)
    try:
        assert _connect_through(bad.port, user, odd_broker.auth[user]) == b""  # type: ignore[index]
        assert user not in clients_seen(odd_broker)
    finally:
        bad.close()
