"""Several gateway workers under faults: real Mosquitto, a real PostgreSQL server of the test's
own, each worker a `sot gateway` process of its own (so kill -9 is real), and many sites' uplink
from one load process that keeps the controllers' session rules (hil_tests/rig/fleet.py: every
event journalled until the gateway's `ack`, sent again on `rebirth` and when the gateway status
turns `online` again).

What an operator would notice, asserted after each fault:
- every (site, boot, seq) event is in the store exactly once, and every site had all of its
  events acknowledged (so dropped from its journal only once stored);
- every alert fired once (one `backup_failed` alert per failing site, no more);
- no notification was sent twice (the `file` contact's lines: one per idempotency key, as many
  as the store says were sent);
- after the leader is killed, another worker leads within 10 s (docs/deploy.md, "Several
  workers": the lease's 6 s plus one renewal period), and its engine fires new alerts.

Numbers (events, replays, takeover time) are printed for docs/deploy.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil_tests.bench.bench_alerts import state_doc
from hil_tests.conftest import wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.fleet import site_id
from hil_tests.rig.proc import stop_process
from hil_tests.rig.workers import WorkerProcess, fleet_config

# The store tests' throw-away PostgreSQL (gateway/tests is on sys.path when pytest collects it;
# here it may not have been).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway" / "tests"))
from pg_cluster import Cluster  # noqa: E402

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "network")]

SITES = int(os.environ.get("SOT_FLEET_SITES", "2000"))
EVENTS = 3  # per site: 6 000 events with 2 000 sites
RATE = 1500.0  # messages a second from the fleet: the burst lasts about 4 s
FAILING = 20  # sites whose state turns backup_failed halfway: one alert each


def _sql(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        return list(c.execute(query, args).fetchall())


@dataclass
class Rig:
    tmp: Path
    broker: Broker
    cluster: Cluster
    url: str
    config_dir: Path
    files: Path

    def worker(self, name: str) -> WorkerProcess:
        return WorkerProcess(self.tmp / name, name,
                             mqtt={"host": self.broker.host, "port": self.broker.port,
                                   "ca": str(self.broker.ca), "client_id": "sot-gateway"},
                             store_url=self.url, config_dir=self.config_dir, files_dir=self.files)

    def leader(self) -> str | None:
        rows = _sql(self.url, "SELECT holder, expires FROM leases WHERE name = 'leader'")
        return rows[0][0] if rows and rows[0][1] > time.time() else None

    def connected(self, w: WorkerProcess) -> bool:
        return "MQTT connected" in w.log()

    def gateway_status(self) -> str | None:
        """The retained `sot/v1/gateway/status` a panel connecting now would see."""
        got: list[str] = []
        c = self.broker.client("panel-probe")
        c.on_message = lambda cl, u, m: got.append(json.loads(m.payload)["state"])
        c.connect(self.broker.host, self.broker.port)
        c.subscribe("sot/v1/gateway/status", 1)
        c.loop_start()
        try:
            deadline = time.monotonic() + 2
            while not got and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            c.disconnect()
            c.loop_stop()
        return got[0] if got else None


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    cluster = Cluster()
    # One connection speaks for every site here: without a queue limit, so that the broker does
    # not drop the acks and rebirths of 2 000 sites that real controllers would each receive
    # on a connection of their own.
    broker = Broker(workdir=tmp_path / "broker", extra_conf="max_queued_messages 0")
    try:
        cluster.start()
        broker.start()
        url = cluster.new_database()
        files = tmp_path / "files"
        files.mkdir()
        yield Rig(tmp_path, broker, cluster, url, fleet_config(tmp_path / "cfg", SITES), files)
    finally:
        broker.cleanup()
        cluster.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


def two_workers(rig: Rig, workers: list[WorkerProcess]) -> tuple[WorkerProcess, WorkerProcess]:
    """w1 started first and leading, then w2; both connected to the broker."""
    w1 = rig.worker("w1").start()
    workers.append(w1)
    wait_for(lambda: rig.leader() == "w1" and rig.connected(w1), 60, f"w1 leading: {w1.log()}")
    w2 = rig.worker("w2").start()
    workers.append(w2)
    wait_for(lambda: rig.connected(w2), 60, f"w2 connected: {w2.log()}")
    assert rig.leader() == "w1"
    return w1, w2


class FleetProcess:
    def __init__(self, rig: Rig, *, sites: int = SITES, events: int = EVENTS,
                 rate: float = RATE, fail: int = FAILING) -> None:
        self.out = rig.tmp / "fleet.json"
        self.go = rig.tmp / "fleet.go"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil_tests.rig.fleet", str(rig.broker.port),
             str(rig.broker.ca), str(self.out), "--sites", str(sites), "--events", str(events),
             "--rate", str(rate), "--fail", str(fail), "--settle", "60",
             "--start-file", str(self.go)])
        time.sleep(1.0)  # connected and subscribed (it waits for the SUBACK itself)

    def start(self) -> float:
        self.go.touch()
        return time.monotonic()

    def result(self, timeout: float = 120) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        finally:
            stop_process(self.proc)
        return dict(json.loads(self.out.read_text()))


def check_stored_once(rig: Rig, fleet: dict[str, Any], sites: int = SITES,
                      events: int = EVENTS) -> None:
    assert fleet["unacknowledged"] == {}, \
        f"{len(fleet['unacknowledged'])} sites still hold unacknowledged events"
    ((total, distinct),) = _sql(rig.url, "SELECT COUNT(*), COUNT(DISTINCT (site, boot, seq)) "
                                         "FROM events")
    assert total == distinct == sites * events
    per_site = _sql(rig.url, "SELECT site, COUNT(*) FROM events GROUP BY site HAVING "
                             "COUNT(*) != %s", events)
    assert per_site == []


def check_alerts_once(rig: Rig, failing: list[str]) -> None:
    def fired() -> list[tuple[Any, ...]]:
        return _sql(rig.url, "SELECT site, COUNT(*) FROM alerts WHERE rule = 'backup_failed' "
                             "AND fired IS NOT NULL GROUP BY site ORDER BY site")
    wait_for(lambda: len(fired()) == len(failing), 30, "an alert for every failing site")
    assert fired() == [(s, 1) for s in sorted(failing)]
    assert _sql(rig.url, "SELECT COUNT(*) FROM alerts WHERE rule = 'backup_failed'") == \
        [(len(failing),)]


def check_notifications_once(rig: Rig, at_least: int) -> None:
    path = rig.files / "notifications.jsonl"

    def sent() -> int:
        return int(_sql(rig.url, "SELECT COUNT(*) FROM notifications WHERE status = 'sent'")
                   [0][0])
    wait_for(lambda: sent() >= at_least and not _sql(
        rig.url, "SELECT id FROM notifications WHERE status = 'queued'"), 60,
        "the notifications sent")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    idems = [d["idem"] for d in lines]
    repeated = {i for i in idems if idems.count(i) > 1}
    assert not repeated, f"notifications sent twice: {sorted(repeated)[:5]}"
    assert len(lines) == sent()


def test_a_worker_killed_mid_burst_loses_nothing_and_repeats_nothing(rig: Rig,
                                                                     workers: list[WorkerProcess]):
    w1, w2 = two_workers(rig, workers)
    fleet = FleetProcess(rig)
    t0 = fleet.start()
    time.sleep(2.0)  # mid-burst
    w2.kill()
    killed_at = time.monotonic() - t0
    time.sleep(1.0)
    # the living worker answered the dead one's Will: the panels still see the gateway online
    assert rig.gateway_status() == "online"
    time.sleep(1.0)  # systemd's Restart= brings it back
    w2.start()
    out = fleet.result()
    print(f"\n{SITES} sites, {out['published']} events published in {out['sent_s']:.1f} s, "
          f"w2 killed at {killed_at:.1f} s and restarted 2 s later; {out['replayed']} events "
          f"sent again from the sites' journals; all acknowledged after "
          f"{out['acked_after_s']:.1f} s")
    check_stored_once(rig, out)
    check_alerts_once(rig, out["failing"])
    check_notifications_once(rig, len(out["failing"]))
    assert rig.leader() == "w1"  # the leader was never in question
    assert "took over" not in w2.log()


def test_killed_leader_is_replaced_within_10_s(rig: Rig, workers: list[WorkerProcess]):
    w1, w2 = two_workers(rig, workers)
    fleet = FleetProcess(rig, fail=FAILING)
    fleet.start()
    time.sleep(1.0)
    w1.kill()
    killed = time.monotonic()
    wait_for(lambda: rig.leader() == "w2", 20, "w2 to take the lead")
    took = time.monotonic() - killed
    assert rig.gateway_status() == "online"
    print(f"\nleader killed (kill -9); w2 led {took:.1f} s later")
    assert took < 10.0, f"takeover took {took:.1f} s"
    assert "took over the lead from w1" in w2.log()
    out = fleet.result()
    check_stored_once(rig, out)
    check_alerts_once(rig, out["failing"])
    # The new leader's engine works: a site failing now gets its alert and one notification.
    late = site_id(SITES - 1)
    c = rig.broker.client("late-site")
    c.connect(rig.broker.host, rig.broker.port)
    c.loop_start()
    c.publish(f"sot/v1/{late}/state", json.dumps(state_doc(20, True)), qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    check_alerts_once(rig, [*out["failing"], late])
    check_notifications_once(rig, len(out["failing"]) + 1)


def test_postgresql_restarted_under_load_loses_nothing(rig: Rig, workers: list[WorkerProcess]):
    w1, w2 = two_workers(rig, workers)
    fleet = FleetProcess(rig)
    t0 = fleet.start()
    time.sleep(1.5)
    rig.cluster.restart_server(down_s=2.0)
    back = time.monotonic() - t0
    out = fleet.result()
    print(f"\nPostgreSQL down from 1.5 s to {back:.1f} s of a {out['sent_s']:.1f} s burst; "
          f"{out['replayed']} events sent again from the journals; all acknowledged after "
          f"{out['acked_after_s']:.1f} s")
    check_stored_once(rig, out)
    check_alerts_once(rig, out["failing"])
    check_notifications_once(rig, len(out["failing"]))
    assert w1.running and w2.running
