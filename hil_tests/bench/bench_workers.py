"""Gateway workers, one and two: how fast they drain a queued burst together (issue 16).

    python -m hil_tests.bench.bench_workers [--sites 2000] [--events 10] [--no-write]

Real worker processes (`sot gateway --config FILE`, `hil_tests/rig/workers.py`) over one
PostgreSQL (Debian's server, a throw-away cluster on 127.0.0.1 with fsync on, as in production)
and one private Mosquitto. For one worker and then for two, on a fresh database each time:

1. the workers start, subscribe (the shared subscription of docs/mqtt.md) and stop cleanly, so
   the broker keeps their sessions and queues their share of what comes next;
2. `--sites` x `--events` events (`shop_opened`, each its own (site, boot, seq), so each is one
   row in the store) are published QoS 1 and acknowledged by the broker;
3. the workers start again; the rate is the events stored per second, counted in the database
   from the first one stored to the last.

A bare paho subscriber that only counts (acknowledging on receipt) drains the same burst from
the same broker for the floor. Writes the section "Gateway workers" of docs/benchmarks.md unless
--no-write.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hil_tests.bench import report
from hil_tests.bench.bench_alerts import cluster_version, drain_rate
from hil_tests.rig.broker import Broker
from hil_tests.rig.fleet import site_id
from hil_tests.rig.workers import WorkerProcess, fleet_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "gateway" / "tests"))
from pg_cluster import Cluster  # noqa: E402

SECTION = "Gateway workers"
BROKER_CONF = "max_queued_messages 0\nmax_inflight_messages 100\n"


def burst(broker: Broker, n_sites: int, per_site: int) -> int:
    """Publish every site's events (QoS 1) as fast as the broker takes them; wait for every
    PUBACK. Returns how many."""
    c = broker.client("bench-burst")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    ts = int(time.time())
    infos = []
    for seq in range(per_site):
        for i in range(n_sites):
            doc = {"boot": 1, "seq": seq, "ts": ts, "type": "shop_opened", "data": {},
                   "hist": False}
            infos.append(c.publish(f"sot/v1/{site_id(i)}/event",
                                   json.dumps(doc, separators=(",", ":")), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()
    return len(infos)


def bare_rate(broker: Broker, n_sites: int, per_site: int) -> float:
    """The floor: a subscriber that only counts, draining the same burst queued for it."""
    return drain_rate(lambda: broker.client("bench-bare", clean_session=False), broker.port,
                      "sot/v1/+/event", n_sites * per_site,
                      lambda: burst(broker, n_sites, per_site))


def count_events(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(row[0]) if row else 0


def wait_for(what: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.1)


def workers_rate(tmp: Path, broker: Broker, cluster: Cluster, config_dir: Path, n: int,
                 n_sites: int, per_site: int) -> dict[str, Any]:
    """`n` workers drain the burst: events stored per second, and each worker's share."""
    url = cluster.new_database()
    files = tmp / f"files-{n}"
    files.mkdir()
    workers = [WorkerProcess(tmp / f"run{n}-w{k}", f"w{k}",
                             mqtt={"host": broker.host, "port": broker.port,
                                   "ca": str(broker.ca), "client_id": "sot-gateway",
                                   "session_expiry_s": 3600},
                             store_url=url, config_dir=config_dir, files_dir=files)
               for k in range(1, n + 1)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            wait_for(lambda w=w: "MQTT connected" in w.log(), 120, f"{w.name}: {w.log()}")
        time.sleep(2)  # subscriptions in place
        for w in workers:
            w.stop()  # SIGTERM and wait: a clean DISCONNECT, the session and its share stay
        count = burst(broker, n_sites, per_site)
        for w in workers:
            w.start()
        deadline = time.monotonic() + 600
        first: tuple[float, int] | None = None
        stored = 0
        while stored < count and time.monotonic() < deadline:
            stored = count_events(url)
            if first is None and stored:
                first = (time.monotonic(), stored)
            time.sleep(0.05)
        end = time.monotonic()
        if first is None or stored < count:
            raise RuntimeError(f"{n} worker(s) stored {stored} of {count} events")
        rate = (stored - first[1]) / (end - first[0])
        return {"workers": n, "events": count, "seconds": end - first[0], "rate": rate}
    finally:
        for w in workers:
            w.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--events", type=int, default=10, help="events per site")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sot-bench-workers-") as name:
        tmp = Path(name)
        cluster = Cluster(fsync=True)
        broker = Broker(workdir=tmp / "broker", extra_conf=BROKER_CONF)
        try:
            cluster.start()
            broker.start()
            config_dir = fleet_config(tmp / "cfg", args.sites)
            bare = bare_rate(broker, args.sites, args.events)
            print(f"bare paho subscriber: {bare:.0f} msg/s", flush=True)
            runs = []
            for n in (1, 2):
                r = workers_rate(tmp, broker, cluster, config_dir, n, args.sites, args.events)
                print(f"{n} worker(s): {r['rate']:.0f} events/s", flush=True)
                runs.append(r)
            pg = cluster_version()
        finally:
            broker.cleanup()
            cluster.stop()
    m = report.machine()
    one, two = runs
    rows = "\n".join(
        f"| {r['workers']} | {r['events']} | {r['seconds']:.2f} | {r['rate']:.0f} "
        f"| {r['rate'] / r['workers']:.0f} | {r['rate'] / r['workers'] / bare:.2f} |"
        for r in runs)
    text = f"""## {SECTION}

Measured {m['date']} on {m['cpu']} ({m['cores']} cores; 1-minute load average {m['load']} when
the run ended), Python {m['python']}, {pg}, code at
`{m['git']}`. `python -m hil_tests.bench.bench_workers` (`make bench-workers`) rewrites this
section.

**Method.** Real worker processes (`sot gateway`, each with its `[worker] name`) on one
PostgreSQL database and one Mosquitto, all on 127.0.0.1 and on the same cores. The workers
subscribe through the shared subscription and stop cleanly; {args.sites} sites x {args.events}
events (each its own row) are then queued at the broker, and the workers start again. Rate:
events stored a second, counted in the database from the first stored to the last. Floor: a
bare paho subscriber that only counts, draining the same burst: {bare:.0f} msg/s.

| workers | events | seconds | events/s | per worker | per worker / bare |
|---|---|---|---|---|---|
{rows}

Two workers drain the burst {two['rate'] / one['rate']:.2f} times as fast as one. Every
process here (broker, database server, workers, the counting) shares the machine's
{m['cores']} cores, so a second worker gains only what the first leaves of them. A group
commit's events go to the server together, in one pipeline whose answer says which were new;
when each event was an INSERT whose answer the worker waited for, one worker spent most of
its time waiting, two did 2.5 times as much as one, and one drained about 2 100 events a
second.
"""
    print(text)
    if not args.no_write:
        report.write_section(SECTION, text)
        print(f"wrote section '{SECTION}' of {report.DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
