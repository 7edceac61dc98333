"""/metrics, /healthz and /readyz of a running gateway: what a municipality's Prometheus and its
service manager see. The broker is a real Mosquitto (stopped and started again mid-test); the
store is SQLite (the collector's queries are the store's own, tested on both databases)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gw_samples import TS, event, present, raw, state, status
from pg_cluster import Cluster
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_mqtt import Peer, clock, gateway_config, until

from gateway.config import REPO_ROOT
from gateway.metrics import GatewayOps
from gateway.model import AlertRecord
from gateway.service import Gateway
from hil_tests.rig.broker import Broker

pytestmark = pytest.mark.hil


async def get(gw: Gateway, path: str, headers: dict[str, str] | None = None
              ) -> tuple[int, str, str]:
    """(status, content type, body) of a GET without a login."""
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{gw.http_port}{path}", headers=headers or {}) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def scrape(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, ctype, body = await get(gw, "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, body)
    return samples(body)


async def exported_names(gw: Gateway) -> set[str]:
    """Every metric family and sample name of a scrape."""
    _, _, body = await get(gw, "/metrics")
    fams = list(text_string_to_metric_families(body))
    return {f.name for f in fams} | {s.name for f in fams for s in f.samples}


def monitoring_section() -> str:
    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    return doc.split("## Monitoring", 1)[1].split("\n## ", 1)[0]


async def ready(gw: Gateway) -> tuple[int, Any]:
    status, _, body = await get(gw, "/readyz")
    return status, json.loads(body)


async def wait_ready(gw: Gateway, want: int, what: str,
                     check: Callable[[Any], bool] = lambda b: True) -> Any:
    deadline = time.monotonic() + 20
    while True:
        status, body = await ready(gw)
        if status == want and check(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {status} {body}"
        await asyncio.sleep(0.1)


def test_metrics_follow_the_traffic_and_readyz_the_broker_and_the_store(tmp_path: Path):
    with Broker() as broker:
        ctrl = Peer(broker, "ctrl-are-kall")

        async def main() -> None:
            gw = Gateway(gateway_config(broker, tmp_path / "sot.sqlite3"), clock)
            await gw.start()
            try:
                await wait_ready(gw, 200, "ready with the broker up")
                ctrl.publish("sot/v1/are-kall/state", raw(state(seq=17)), retain=True)
                ctrl.publish("sot/v1/are-kall/status", raw(status(seq=18)), retain=True)
                ctrl.publish("sot/v1/are-kall/state", b'{"mode": "normal"')
                ctrl.publish("sot/v1/nowhere/state", raw(state()))
                await until(lambda: gw.ingest and gw.ingest.stats()["rejected"] == 2
                            and gw.ingest.stats()["accepted"] >= 2, what="filed")

                m = await scrape(gw)
                assert m[("sot_ingest_filed_messages_total", (("topic", "state"),))] == 1
                assert m[("sot_ingest_rejected_messages_total", (("reason", "not_json"),))] == 1
                assert m[("sot_ingest_rejected_messages_total",
                          (("reason", "unknown_site"),))] == 1
                assert m[("sot_mqtt_connected", ())] == 1
                assert m[("sot_ingest_backlog_messages", ())] == 0
                assert m[("sot_store_commit_seconds_count", ())] >= 1
                assert m[("sot_store_up", ())] == 1
                # three configured sites, are-kall on backup power and online
                assert m[("sot_sites", (("mode", "on_backup"),))] == 1
                assert m[("sot_sites", (("mode", "unknown"),))] == 2
                assert m[("sot_sites_link", (("link", "online"),))] == 1
                assert m[("sot_sites_link", (("link", "unknown"),))] == 2
                assert m[("sot_alert_engine_active", ())] == 1
                assert m[("sot_notifications_failed_total", ())] == 0
                # Every metric docs/deploy.md names (its table and its Prometheus alerts) is one
                # the gateway exports.
                exported = await exported_names(gw)
                documented = set(re.findall(r"\bsot_[a-z_]+", monitoring_section()))
                assert documented and documented <= exported, documented - exported

                # The backlog: messages the broker delivered that wait for the (here blocked)
                # event loop are counted until they are filed.
                ops = GatewayOps(gw)
                for seq in (30, 31, 32, 33, 34):
                    ctrl.publish("sot/v1/are-kall/event", raw(event(seq=seq)))
                assert gw.mqtt is not None
                deadline = time.monotonic() + 10
                # Sleeping blocks the loop on purpose while paho's thread hands them over.
                while gw.mqtt.received - gw.mqtt.processed < 5 and time.monotonic() < deadline:
                    time.sleep(0.05)
                blocked = samples(ops.metrics(None)[0].decode())
                assert blocked[("sot_ingest_backlog_messages", ())] == 5
                await until(lambda: len(present(gw.store).events("are-kall")) == 5,
                            what="the five events filed")
                assert (await scrape(gw))[("sot_ingest_backlog_messages", ())] == 0

                # The broker goes away: not ready, naming MQTT; alive all the same.
                broker.stop()
                body = await wait_ready(gw, 503, "not ready without the broker")
                assert [p for p in body["problems"] if p.startswith("mqtt")], body
                assert not [p for p in body["problems"] if p.startswith("store")], body
                assert (await get(gw, "/healthz"))[0] == 200
                assert (await scrape(gw))[("sot_mqtt_connected", ())] == 0

                # Back: ready again once the session is up (paho retries within seconds).
                broker.start()
                await wait_ready(gw, 200, "ready once the broker is back")
                assert (await scrape(gw))[("sot_mqtt_connects_total", ())] == 2

                # The store stops answering: not ready, naming the store; /metrics says so
                # too, and still answers.
                assert gw.store is not None
                gw.store.close()
                body = await wait_ready(gw, 503, "not ready without the store")
                assert [p for p in body["problems"] if p.startswith("store")], body
                assert (await get(gw, "/healthz"))[0] == 200
                assert (await scrape(gw))[("sot_store_up", ())] == 0
            finally:
                await gw.stop()

        try:
            asyncio.run(asyncio.wait_for(main(), 90))
        finally:
            ctrl.close()


def test_metrics_need_the_token_or_this_machine(tmp_path: Path):
    """No broker here: the gateway runs (and is not ready) while paho retries."""
    token = tmp_path / "metrics-token"
    token.write_text("s3cret-token-for-prometheus\n")
    config = {"mqtt": {"host": "127.0.0.1", "port": 1, "keepalive_s": 10},
              "http": {"host": "127.0.0.1", "port": 0},
              "store": {"path": str(tmp_path / "sot.sqlite3")},
              "alerts": {"enabled": False}}

    async def main() -> None:
        gw = Gateway(config, clock)
        await gw.start()
        try:
            # Without a token file: this machine only, and not through a proxy.
            assert (await get(gw, "/metrics"))[0] == 200
            assert (await get(gw, "/metrics", {"X-Forwarded-For": "198.51.100.7"}))[0] == 403
            status, body = await ready(gw)
            assert status == 503 and body["problems"] == ["mqtt: not connected to the broker"]
            assert (await get(gw, "/healthz"))[0] == 200

            # Open alerts by severity and status, as the store holds them.
            assert gw.store is not None
            for key, sev in (("a", "critical"), ("b", "critical"), ("c", "warning")):
                gw.store.open_alert(AlertRecord(
                    id=0, key=key, rule="grid_lost", site="are-kall", municipality="Åre",
                    detail="", severity=sev, status="firing", started=TS, fired=TS))
            m = await scrape(gw)
            assert m[("sot_alerts_open", (("severity", "critical"), ("status", "firing")))] == 2
            assert m[("sot_alerts_open", (("severity", "warning"), ("status", "firing")))] == 1
            assert m[("sot_alert_engine_active", ())] == 0
            text = (await get(gw, "/metrics"))[2]
            assert "Åre" not in text and "are-kall" not in text  # counts, never sites or names
        finally:
            await gw.stop()

        gw = Gateway({**config, "metrics": {"token_file": str(token)}}, clock)
        await gw.start()
        try:
            assert (await get(gw, "/metrics"))[0] == 401
            assert (await get(gw, "/metrics", {"Authorization": "Bearer wrong-token-0123456"})
                    )[0] == 401
            status, _, body = await get(gw, "/metrics",
                                        {"Authorization": "Bearer s3cret-token-for-prometheus",
                                         "X-Forwarded-For": "198.51.100.7"})
            assert status == 200 and "sot_mqtt_connected 0.0" in body
        finally:
            await gw.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_short_metrics_token_stops_the_start(tmp_path: Path):
    token = tmp_path / "metrics-token"
    token.write_text("short\n")
    config = {"mqtt": {"host": "127.0.0.1", "port": 1},
              "http": {"host": "127.0.0.1", "port": 0},
              "store": {"path": str(tmp_path / "sot.sqlite3")},
              "alerts": {"enabled": False}, "metrics": {"token_file": str(token)}}

    async def main() -> None:
        with pytest.raises(ValueError, match=r"\[metrics\].*token_file.*16 characters"):
            await Gateway(config, clock).start()

    asyncio.run(main())


def _restart_postgres(c: Cluster) -> None:
    """Start the cluster's server again on its data and port (as a restart of the service)."""
    with open(c.log, "ab") as log:
        c.proc = subprocess.Popen(
            [*c._as, str(c.bindir / "postgres"), "-D", str(c.data), "-p", str(c.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert c._ready(30), c.log.read_text(errors="replace")[-2000:]


def test_readyz_names_postgresql_while_it_is_down(tmp_path: Path):
    """A PostgreSQL of its own (this test stops it): down, /readyz is 503 naming the store and
    /healthz stays 200; back, the next query reconnects and /readyz is 200 again."""
    cluster = Cluster()
    try:
        cluster.start()
        with Broker() as broker:
            config = gateway_config(broker, tmp_path / "unused.sqlite3")
            config["store"] = {"url": cluster.new_database()}

            async def main() -> None:
                gw = Gateway(config, clock)
                await gw.start()
                try:
                    await wait_ready(gw, 200, "ready on PostgreSQL")
                    cluster.stop_server()
                    body = await wait_ready(gw, 503, "not ready without PostgreSQL")
                    assert [p for p in body["problems"] if p.startswith("store")], body
                    assert not [p for p in body["problems"] if p.startswith("mqtt")], body
                    assert "127.0.0.1" not in json.dumps(body)  # no address in a public answer
                    assert (await get(gw, "/healthz"))[0] == 200
                    assert (await scrape(gw))[("sot_store_up", ())] == 0
                    _restart_postgres(cluster)
                    await wait_ready(gw, 200, "ready once PostgreSQL is back")
                    assert (await scrape(gw))[("sot_store_up", ())] == 1
                finally:
                    await gw.stop()

            asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        cluster.stop()
