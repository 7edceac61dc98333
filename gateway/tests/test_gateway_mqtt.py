"""The whole gateway against a real Mosquitto: MQTT in, the store (SQLite; one test on
PostgreSQL) and HTTP out."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from gw_samples import TS, birth, event, present, raw, state, status
from pg_cluster import Cluster, pg_cluster_fixture  # noqa: F401 - fixture
from web_login import add_user, login

from gateway.service import Gateway
from gateway.store import PgStore
from hil_tests.rig.broker import Broker

pytestmark = pytest.mark.hil

SITE_IDS = {"are-kall", "harjedalen-hede", "krokom-follinge"}
_T0 = time.monotonic()


@pytest.fixture(autouse=True)
def _samples_are_fresh() -> None:
    """Every test starts at the samples' date: in a long run (make test) the module is imported
    minutes before its tests run, and samples dated then would already read as stale."""
    global _T0
    _T0 = time.monotonic()


def clock() -> float:
    """The samples' date, running at real speed from the start of the test."""
    return TS + (time.monotonic() - _T0)


class Peer:
    """A paho client standing in for a controller and for an observer of the gateway."""

    def __init__(self, broker: Broker, client_id: str, subscribe: tuple[str, ...] = ()) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = broker.client(client_id)  # TLS against the rig's CA
        self.c.on_message = self._on_message

        def on_connect(c, u, f, rc, p):
            if subscribe:
                c.subscribe([(t, 1) for t in subscribe])
            self.ready.set()

        self.c.on_connect = on_connect
        self.c.connect("127.0.0.1", broker.port, keepalive=10)
        self.c.loop_start()
        assert self.ready.wait(5), "peer could not connect"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def seen(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def api(gw: Gateway, path: str) -> Any:
    """GET a JSON API path as a logged-in viewer."""
    assert gw.store is not None
    add_user(gw.store)
    base = f"http://127.0.0.1:{gw.http_port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        await login(s, base)
        return await _get_json(s, base + path)


async def _get_json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        assert r.status == 200, url
        return await r.json()


def gateway_config(broker: Broker, db: Path) -> dict[str, Any]:
    return {"mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "sot-gateway-test",
                     "keepalive_s": 10, "ca": str(broker.ca)},
            "http": {"host": "127.0.0.1", "port": 0},
            "store": {"path": str(db)}, "alerts": {"files_dir": str(db.parent)}}


def test_gateway_files_what_controllers_publish(tmp_path: Path):
    with Broker() as broker:
        observer = Peer(broker, "observer", ("sot/v1/+/rebirth", "sot/v1/gateway/status"))
        ctrl = Peer(broker, "ctrl-are-kall")
        # Retained before the gateway exists: it must still be current after its start.
        ctrl.publish("sot/v1/are-kall/birth", raw(birth()), retain=True)
        ctrl.publish("sot/v1/are-kall/state", raw(state(seq=17)), retain=True)

        async def main() -> None:
            gw = Gateway(gateway_config(broker, tmp_path / "sot.sqlite3"), clock)
            await gw.start()
            try:
                assert gw.http_port and gw.http_port > 0
                # rebirth asked of every configured site, gateway online and retained
                await until(lambda: {t.split("/")[2] for t, _, _ in observer.messages
                                     if t.endswith("/rebirth")} == SITE_IDS, what="rebirths")
                online = await until(lambda: observer.seen("sot/v1/gateway/status"))
                assert json.loads(online[-1][0])["state"] == "online"

                row = await until_site(gw, lambda s: s["mode"] == "on_backup", "retained state")
                assert row["fw"] == "0.1.0" and row["stale"] is False

                ctrl.publish("sot/v1/are-kall/status", raw(status(seq=18)), retain=True)
                ctrl.publish("sot/v1/are-kall/state",
                             raw(state(seq=19, mode="normal", grid={"state": "ok", "v": 231.0,
                                                                     "f": 50.0})), retain=True)
                ctrl.publish("sot/v1/are-kall/event", raw(event("grid_restored", seq=20)))
                ctrl.publish("sot/v1/are-kall/event", raw(event("grid_restored", seq=20)))
                ctrl.publish("sot/v1/are-kall/state", b'{"mode": "normal"')
                ctrl.publish("sot/v1/nowhere/state", raw(state()))

                row = await until_site(gw, lambda s: s["mode"] == "normal", "new state")
                assert row["status"] == "online" and row["grid_state"] == "ok"
                evs = await api(gw, "/api/sites/are-kall/events")
                assert [(e["type"], e["seq"]) for e in evs] == [("grid_restored", 20)]
                await until(lambda: gw.ingest and gw.ingest.stats()["rejected"] == 2
                            and gw.ingest.stats()["duplicates"] >= 1, what="stats")
                stats = await api(gw, "/api/stats")
                assert stats["rejected_by_reason"] == {"not_json": 1, "unknown_site": 1}
                detail = await api(gw, "/api/sites/are-kall")
                assert detail["state"]["seq"] == 19 and detail["status"]["seq"] == 18
            finally:
                await gw.stop()

            # While the gateway is away the broker keeps its QoS 1 messages (persistent
            # session); a restarted gateway files them.
            ctrl.publish("sot/v1/are-kall/event", raw(event("gen_stopped", seq=21)))
            gw = Gateway(gateway_config(broker, tmp_path / "sot.sqlite3"), clock)
            await gw.start()
            try:
                await until(lambda: len(present(gw.store).events("are-kall")) == 2,
                            what="queued event")
            finally:
                await gw.stop()

        try:
            asyncio.run(asyncio.wait_for(main(), 60))
            # A clean stop leaves "offline" retained for anyone who looks later.
            late = Peer(broker, "late", ("sot/v1/gateway/status",))
            try:
                deadline = time.monotonic() + 5
                while not late.seen("sot/v1/gateway/status") and time.monotonic() < deadline:
                    time.sleep(0.05)
                payload, retained = late.seen("sot/v1/gateway/status")[-1]
                assert retained and json.loads(payload)["state"] == "offline"
            finally:
                late.close()
        finally:
            ctrl.close()
            observer.close()


async def until_site(gw: Gateway, check: Callable[[dict[str, Any]], bool],
                     what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        sites = await api(gw, "/api/sites")
        row = next(s for s in sites if s["id"] == "are-kall")
        if check(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {row}")
        await asyncio.sleep(0.05)


def test_gateway_will_marks_it_offline_when_its_connection_dies(tmp_path: Path):
    with Broker() as broker:
        observer = Peer(broker, "observer", ("sot/v1/gateway/status",))

        async def main() -> None:
            gw = Gateway(gateway_config(broker, tmp_path / "sot.sqlite3"), clock)
            await gw.start()
            try:
                await until(lambda: any(json.loads(p)["state"] == "online"
                                        for p, _ in observer.seen("sot/v1/gateway/status")),
                            what="online")
                # Cut the TCP connection without DISCONNECT, as a crash or cable fault would.
                sock = present(gw.mqtt).client.socket()
                assert isinstance(sock, socket.socket)  # plain TCP to the test broker
                sock.shutdown(2)
                await until(lambda: any(p == b'{"state": "offline"}'
                                        for p, _ in observer.seen("sot/v1/gateway/status")),
                            what="the Will")
                # paho reconnects by itself and announces itself again
                n = len(observer.seen("sot/v1/gateway/status"))
                await until(lambda: any(json.loads(p)["state"] == "online"
                                        for p, _ in observer.seen("sot/v1/gateway/status")[n:]),
                            timeout=15, what="online again")
            finally:
                await gw.stop()

        try:
            asyncio.run(asyncio.wait_for(main(), 60))
        finally:
            observer.close()


def _escaped(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()  # how a lone surrogate gets sent


def test_one_bad_message_costs_only_itself_and_intake_goes_on(tmp_path: Path):
    """A site sends an event the database cannot store (a lone surrogate), and one the database
    refuses for another reason (a constraint), among good messages of two sites. The good ones
    are filed and acknowledged, the bad ones refused, counted and acknowledged too: the broker
    never delivers them again and every later message arrives."""
    import sqlite3

    a, b = "are-kall", "krokom-follinge"
    with Broker() as broker:
        observer = Peer(broker, "observer", (f"sot/v1/{a}/ack", f"sot/v1/{b}/ack"))
        ctrl_a = Peer(broker, "ctrl-a")
        ctrl_b = Peer(broker, "ctrl-b")

        def acked(site: str) -> int:
            seen = observer.seen(f"sot/v1/{site}/ack")
            return max((json.loads(p)["seq"] for p, _ in seen), default=-1)

        def seqs(gw: Gateway, site: str) -> list[int]:
            assert gw.store is not None
            return sorted(e["seq"] for e in gw.store.events(site, limit=500))

        async def main() -> None:
            db = tmp_path / "sot.sqlite3"
            gw = Gateway(gateway_config(broker, db), clock)
            await gw.start()
            try:
                assert gw.ingest is not None and gw.store is not None
                await until(gw.mqtt.is_connected if gw.mqtt else lambda: False, what="up")
                bad = _escaped(event("device_offline", seq=1, data={"device": "tank\ud800"}))
                ctrl_a.publish(f"sot/v1/{a}/event", raw(event(seq=0)))
                ctrl_a.publish(f"sot/v1/{a}/event", bad)
                ctrl_b.publish(f"sot/v1/{b}/event", raw(event(seq=0)))
                ctrl_a.publish(f"sot/v1/{a}/event", raw(event(seq=2)))
                ctrl_b.publish(f"sot/v1/{b}/event", raw(event(seq=1)))
                await until(lambda: seqs(gw, a) == [0, 2] and seqs(gw, b) == [0, 1],
                            what="the good events")
                await until(lambda: acked(a) == 2 and acked(b) == 1, what="site acks")
                assert gw.ingest.stats()["rejected_by_reason"] == {"bad_text": 1}

                # A store failure that is not about text: B's seq 2 breaks a constraint.
                real = gw.store.add_event

                def add_event(site: str, msg: dict[str, Any], raw: str,
                              received: float) -> bool | None:
                    if site == b and msg["seq"] == 2:
                        raise sqlite3.IntegrityError("CHECK constraint failed (test)")
                    return real(site, msg, raw, received)

                gw.store.add_event = add_event  # type: ignore[method-assign]
                for seq in (2, 3):
                    ctrl_b.publish(f"sot/v1/{b}/event", raw(event(seq=seq)))
                    ctrl_a.publish(f"sot/v1/{a}/event", raw(event(seq=seq + 1)))
                await until(lambda: seqs(gw, b) == [0, 1, 3] and seqs(gw, a) == [0, 2, 3, 4],
                            what="events after the store failure")
                await until(lambda: acked(b) == 3, what="B acked past the refused one")
                assert gw.ingest.stats()["rejected_by_reason"] == {"bad_text": 1, "store": 1}
                # Intake goes on, for every site, well past the broker's in-flight window.
                for seq in range(5, 130):
                    ctrl_a.publish(f"sot/v1/{a}/event", raw(event(seq=seq)))
                    ctrl_b.publish(f"sot/v1/{b}/event", raw(event(seq=seq - 1)))
                await until(lambda: len(seqs(gw, a)) == 129 and len(seqs(gw, b)) == 128,
                            what="later events of both sites")
            finally:
                await gw.stop()

            # Every message was acknowledged to the broker: a new gateway on the same session
            # gets nothing again, only what is new.
            gw = Gateway(gateway_config(broker, db), clock)
            await gw.start()
            try:
                assert gw.ingest is not None
                await until(gw.mqtt.is_connected if gw.mqtt else lambda: False, what="up")
                ctrl_a.publish(f"sot/v1/{a}/event", raw(event(seq=130)))
                await until(lambda: 130 in seqs(gw, a), what="the new event")
                await asyncio.sleep(0.5)
                stats = gw.ingest.stats()
                assert stats["rejected"] == 0 and stats["duplicates"] == 0, stats
            finally:
                await gw.stop()

        try:
            asyncio.run(asyncio.wait_for(main(), 90))
        finally:
            ctrl_a.close()
            ctrl_b.close()
            observer.close()


def test_gateway_on_postgresql_files_a_state_and_raises_an_alert(tmp_path: Path,
                                                                  pg_cluster: Cluster):
    """`[store] url = "postgresql://..."`: the same gateway on PostgreSQL, end to end (MQTT in,
    the alert engine, HTTP out)."""
    url = pg_cluster.new_database()
    with Broker() as broker:
        ctrl = Peer(broker, "ctrl-are-kall")

        async def main() -> None:
            cfg = gateway_config(broker, tmp_path / "unused.sqlite3")
            cfg["store"] = {"url": url}
            gw = Gateway(cfg, clock)
            await gw.start()
            try:
                assert isinstance(gw.store, PgStore)
                ctrl.publish("sot/v1/are-kall/birth", raw(birth()), retain=True)
                ctrl.publish("sot/v1/are-kall/state", raw(state(
                    seq=17, mode="backup_failed", genset={"state": "fault"},
                    capability={"power": "none"})), retain=True)
                row = await until_site(gw, lambda s: s["mode"] == "backup_failed", "state")
                assert row["fw"] == "0.1.0" and row["stale"] is False
                alerts = await until(lambda: [a for a in present(gw.store).alerts()
                                              if a.key == "backup_failed:are-kall"],
                                     what="the backup_failed alert")
                assert alerts[0].status == "firing"
                shown = await api(gw, "/api/alerts")
                assert "backup_failed:are-kall" in json.dumps(shown)
            finally:
                await gw.stop()

        try:
            asyncio.run(asyncio.wait_for(main(), 60))
        finally:
            ctrl.close()
    assert not (tmp_path / "unused.sqlite3").exists()
