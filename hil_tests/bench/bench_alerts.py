"""Gateway under load: 2 000 simulated sites at one state a second each, through Mosquitto.

    python -m hil_tests.bench.bench_alerts [--sites 2000] [--rate 1.0] [--duration 30]
                                           [--burst 20000] [--postgres] [--no-write]

Three measurements, each through a private Mosquitto on 127.0.0.1:

1. Sustained load. A load generator (its own process, paho) publishes a QoS 1 state for every
   site once a second. Each second `--trigger-rate` sites switch to `backup_failed` (a rule with
   hold 0), so alerts open while the load runs. Reported: messages offered and filed per second,
   the backlog when the generator stops and how long it takes to drain, and the
   ingest-to-alert latency: from the generator's publish call to the alert's `fired` time in
   the store (same machine, same clock), median/p99/max.
2. Maximum ingest rate. `--burst` states are queued at the broker for an offline persistent
   session, then the consumer connects and drains them as fast as it can: once a bare paho
   subscriber that only counts (acknowledging each message on receipt), once the gateway
   (validate, file durably, acknowledge after the commit, evaluate the rules). The ratio
   gateway/bare is the figure of merit (goal >= 0.5).

The gateway here is the production code path assembled as `gateway.service.Gateway` does it
(SqliteStore, Ingest, AlertEngine, MqttIngest) without the web site, and with the sites
registered directly instead of 2 000 site files. Writes the section "Gateway ingest and alerts"
of docs/benchmarks.md (other sections are kept) unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway import config as config_mod
from gateway.alerts.config import AlertConfig, Contact, load_rules
from gateway.alerts.engine import MIN_ROUND_S, AlertEngine
from gateway.ingest import Ingest, MqttIngest
from gateway.store import PgStore, SiteInfo, SqliteStore
from hil_tests.rig.broker import Broker, client_tls, rig_pki

DOC = config_mod.REPO_ROOT / "docs" / "benchmarks.md"
SECTION = "Gateway ingest and alerts"
SECTION_PG = "Gateway ingest and alerts on PostgreSQL"
TS0 = int(time.time())


def tls_client(client_id: str, **kw: Any) -> mqtt.Client:
    """A paho client with TLS against the rig broker's CA (its path in SOT_BENCH_CA, which
    main() sets and the load generator's process inherits)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, **kw)
    client_tls(c, os.environ["SOT_BENCH_CA"])
    return c


def site_ids(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


def state_doc(seq: int, failed: bool) -> dict[str, Any]:
    return {
        "boot": 1, "seq": seq, "ts": int(time.time()),
        "mode": "backup_failed" if failed else "normal",
        "grid": {"state": "lost" if failed else "ok", "v": 0.0 if failed else 231.0,
                 "f": 0.0 if failed else 50.0, "src": "grid", "since": None},
        "genset": {"state": "fault" if failed else "stopped", "mode": "auto",
                   "battery_v": 27.1, "run_hours": 412.6, "since": None},
        "fuel": {"pct": 80.0, "litres": 320.0, "burn_lph": 3.4, "hours_left": 94.1,
                 "refuel_by": None},
        "tanks": {"diesel": 14500, "petrol": 9200},
        "pumps": {"available": 2, "total": 2},
        "devices": {"grid": "online", "genset": "online", "tank": "online", "pumps": "online"},
        "capability": {"power": "none" if failed else "grid", "hours_left": 94.1,
                       "fuel_for_sale": {"diesel": 0, "petrol": 0} if failed
                       else {"diesel": 14300, "petrol": 9000},
                       "shop_open": True, "info_point": not failed},
    }


# --- load generator (child process) -----------------------------------------------------------


def loadgen(port: int, n_sites: int, rate: float, duration: float, triggers: float,
            out: str) -> None:
    """Publish every site's state `rate` times a second for `duration` s; each second switch
    `triggers` sites to backup_failed. Writes {"published", "elapsed", "triggers": {site:
    publish_time}} to `out`."""
    ids = site_ids(n_sites)
    c = tls_client("bench-loadgen")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    seq = dict.fromkeys(ids, 1)
    failed: dict[str, float] = {}
    per_tick = n_sites * rate / 100  # 10 ms ticks
    t0 = time.monotonic()
    sent = 0
    owed = 0.0
    next_trigger = 0
    trigger_every = 1.0 / triggers if triggers else float("inf")
    next_trigger_t = t0 + 1.0
    i = 0
    while (now := time.monotonic()) - t0 < duration:
        while triggers and now >= next_trigger_t and next_trigger < n_sites:
            failed[ids[next_trigger]] = 0.0  # takes effect at the site's next publish
            next_trigger += 1
            next_trigger_t += trigger_every
        owed += per_tick
        while owed >= 1:
            site = ids[i % n_sites]
            i += 1
            owed -= 1
            seq[site] += 1
            is_failed = site in failed
            payload = json.dumps(state_doc(seq[site], is_failed), separators=(",", ":"))
            if is_failed and failed[site] == 0.0:
                failed[site] = time.time()
            c.publish(f"sot/v1/{site}/state", payload, qos=1)
            sent += 1
        time.sleep(max(0.0, t0 + (sent / (n_sites * rate)) - time.monotonic()))
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 30
    while c.want_write() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    Path(out).write_text(json.dumps({"published": sent, "elapsed": elapsed,
                                     "triggers": {k: v for k, v in failed.items() if v}}))


def queue_burst(port: int, n_sites: int, count: int) -> None:
    """Publish `count` states as fast as possible (QoS 1) and wait until all are PUBACKed."""
    ids = site_ids(n_sites)
    c = tls_client("bench-burst")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = []
    for k in range(count):
        site = ids[k % n_sites]
        doc = state_doc(1000 + k // n_sites, False)
        infos.append(c.publish(f"sot/v1/{site}/state", json.dumps(doc), qos=1))
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


# --- consumers --------------------------------------------------------------------------------


def bare_rate(port: int, n_sites: int, count: int) -> float:
    """A paho subscriber that only counts: messages per second draining a queued burst."""
    return drain_rate(lambda: tls_client("bench-bare", clean_session=False), port,
                      "sot/v1/+/state", count, lambda: queue_burst(port, n_sites, count))


def drain_rate(client: Callable[[], mqtt.Client], port: int, topic: str, count: int,
               queue: Callable[[], Any]) -> float:
    """The floor of the ingest benches: a persistent session (`client()`, the same client id
    each time) subscribes to `topic` and goes away, `queue()` publishes `count` messages for it,
    and the session comes back and only counts them (acknowledging each on receipt). Messages a
    second from its return to the last one."""
    got = 0
    done = threading.Event()

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got >= count:
            done.set()

    def session() -> mqtt.Client:
        c = client()
        c.on_message = on_message
        c.connect("127.0.0.1", port)
        return c

    c = session()
    c.subscribe(topic, 1)
    c.loop_start()
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    queue()
    t0 = time.monotonic()
    c = session()
    c.loop_start()
    done.wait(300)
    t1 = time.monotonic()
    c.disconnect()
    c.loop_stop()
    return got / (t1 - t0)


class GatewayUnderTest:
    def __init__(self, port: int, workdir: Path, n_sites: int,
                 store_url: str | None = None, *, leads: bool = True) -> None:
        """`leads` False: a worker that does not lead (PostgreSQL), as gateway/service.py
        wires one: no alert engine, the sites it files told to the leader by NOTIFY."""
        self.leads = leads
        self.relay: Any = None
        self.port = port
        self.store_url = store_url
        self.workdir = workdir
        self.n_sites = n_sites
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store: SqliteStore | PgStore | None = None
        self.ingest: Ingest | None = None
        self.engine: AlertEngine | None = None
        self.mqtt: MqttIngest | None = None

    def call(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            r = fn(*args)
            return await r if asyncio.iscoroutine(r) else r
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def start(self) -> None:
        def build() -> None:
            store: SqliteStore | PgStore = (
                PgStore(self.store_url) if self.store_url
                else SqliteStore(self.workdir / "sot.sqlite3"))
            store.upsert_sites(SiteInfo(s, s, f"Kommun {i // 20:03d}", 63.0, 14.0, 30)
                               for i, s in enumerate(site_ids(self.n_sites)))
            rules, grouping = load_rules(config_mod.CONFIG_DIR / "alerts.toml")
            cfg = AlertConfig(rules=rules, grouping=grouping, contacts={"*": (
                Contact("bench", ("coordinator", "technician"), file="notes.jsonl"),)})
            from gateway.alerts.notify import FileSender
            ingest = Ingest(store, time.time)
            m = MqttIngest(ingest, self.loop, host="127.0.0.1", port=self.port,
                           client_id="bench-gateway", ca=os.environ["SOT_BENCH_CA"],
                           leading=self.leads)
            engine: AlertEngine | None = None
            if self.leads:
                engine = AlertEngine(store, cfg, time.time,
                                     senders={"file": FileSender(self.workdir)}, tick_s=5.0)
                ingest.on_stored = lambda site, sub: engine.mark(site)
                m.on_listening = engine.listening
                engine.start()
            else:
                from gateway.lease import MarkRelay
                assert isinstance(store, PgStore) and self.store_url
                self.relay = MarkRelay(self.store_url, self.loop, store)
                ingest.on_stored = lambda site, sub: self.relay.add(site)
            m.start()
            self.store, self.ingest, self.engine, self.mqtt = store, ingest, engine, m
        self.call(build)

    def accepted(self) -> int:
        assert self.ingest is not None
        return int(self.call(lambda: self.ingest.stats()["accepted"] +
                             self.ingest.stats()["duplicates"] +
                             self.ingest.stats()["outdated"]))

    def stop(self) -> None:
        async def down() -> None:
            assert self.mqtt and self.store
            await asyncio.to_thread(self.mqtt.stop)
            if self.engine is not None:
                await self.engine.stop()
            self.store.close()
        self.call(down)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def gateway_rate(port: int, workdir: Path, n_sites: int, count: int,
                 store_url: str | None = None, *, leads: bool = True) -> float:
    gw = GatewayUnderTest(port, workdir, n_sites, store_url, leads=leads)
    gw.start()
    assert gw.mqtt is not None
    gw.mqtt.connected.wait(10)
    time.sleep(1)
    gw.stop()
    queue_burst(port, n_sites, count)
    gw.start()
    t0 = time.monotonic()
    while gw.accepted() < count and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    t1 = time.monotonic()
    got = gw.accepted()
    gw.stop()
    gw.close()
    return got / (t1 - t0)


def sustained(port: int, workdir: Path, n_sites: int, rate: float, duration: float,
              triggers: float, store_url: str | None = None) -> dict[str, Any]:
    gw = GatewayUnderTest(port, workdir, n_sites, store_url)
    gw.start()
    assert gw.mqtt is not None
    gw.mqtt.connected.wait(10)
    out = workdir / "loadgen.json"
    proc = subprocess.Popen([sys.executable, "-m", "hil_tests.bench.bench_alerts", "--loadgen",
                             str(port), str(n_sites), str(rate), str(duration), str(triggers),
                             str(out)], cwd=config_mod.REPO_ROOT)
    samples = []
    t0 = time.monotonic()
    while proc.poll() is None:
        time.sleep(1)
        samples.append((time.monotonic() - t0, gw.accepted()))
    proc.wait()
    gen = json.loads(out.read_text())
    at_end = gw.accepted()
    backlog = gen["published"] - at_end
    t_end = time.monotonic()
    while gw.accepted() < gen["published"] and time.monotonic() - t_end < 120:
        time.sleep(0.05)
    drain = time.monotonic() - t_end
    time.sleep(1.5)  # the engine's last round
    assert gw.store is not None
    fired = {a.site: a.fired for a in gw.call(lambda: gw.store.alerts(open_only=False))
             if a.rule == "backup_failed" and a.fired is not None}
    lat = sorted(fired[s] - t for s, t in gen["triggers"].items() if s in fired)
    missing = [s for s in gen["triggers"] if s not in fired]
    gw.stop()
    gw.close()
    # steady state: per-second filing rate from the 5th second to the end of the load
    # (the generator's clock starts after its own start-up, so a window ending before
    # `elapsed` lies inside the load; the window around its end would count its last
    # fraction of a second as a second)
    steady = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:], strict=False)
              if a[0] >= 5 and b[0] <= gen["elapsed"]]
    return {"published": gen["published"], "elapsed": gen["elapsed"],
            "offered_rate": gen["published"] / gen["elapsed"], "backlog_at_end": backlog,
            "drain_s": drain, "steady_min": min(steady) if steady else 0.0,
            "steady_median": statistics.median(steady) if steady else 0.0,
            "alerts": len(lat), "missing": len(missing),
            "lat_median_ms": 1000 * statistics.median(lat) if lat else None,
            "lat_p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None,
            "lat_max_ms": 1000 * lat[-1] if lat else None}


# --- report -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    m = re.search(r"mosquitto version (\S+)", mosq)
    return (f"{cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, Mosquitto "
            f"{m.group(1) if m else '?'}")


def write_doc(text: str, section: str = SECTION) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"\n## {re.escape(section)}\n.*?(?=\n## |\Z)", re.S)
    block = f"\n## {section}\n\n{text.strip()}\n"
    doc = pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n" + block
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loadgen", nargs=6, help=argparse.SUPPRESS)
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=1.0, help="states per site per second")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--trigger-rate", type=float, default=10.0,
                    help="sites switched to backup_failed per second during the load")
    ap.add_argument("--burst", type=int, default=20000)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--store-url", default=None,
                    help="the gateway's store on this PostgreSQL (postgresql://...; an empty "
                         "database or schema) instead of SQLite; implies --no-write")
    ap.add_argument("--postgres", action="store_true",
                    help="the gateway's store on PostgreSQL: a throw-away server of Debian's "
                         "postgresql with fsync on; writes the section "
                         f"'{SECTION_PG}'")
    args = ap.parse_args(argv)
    if args.loadgen:
        p, n, r, d, t, out = args.loadgen
        loadgen(int(p), int(n), float(r), float(d), float(t), out)
        return 0
    if args.store_url:
        args.no_write = True
    if args.postgres:
        sys.path.insert(0, str(config_mod.REPO_ROOT / "gateway" / "tests"))
        from pg_cluster import Cluster

        cluster = Cluster(fsync=True)
        cluster.start()
        try:
            return run(args, cluster.new_database, store_name=cluster_version())
        finally:
            cluster.stop()
    return run(args, (lambda: args.store_url) if args.store_url else None)


def cluster_version() -> str:
    sys.path.insert(0, str(config_mod.REPO_ROOT / "gateway" / "tests"))
    from pg_cluster import _bindir

    out = subprocess.run([str(_bindir() / "postgres"), "--version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"\(PostgreSQL\) (\S+)", out)
    return f"PostgreSQL {m.group(1) if m else '?'} (fsync on, synchronous_commit on)"


def run(args: argparse.Namespace, new_url: Any, store_name: str | None = None) -> int:
    """The three measurements; `new_url()` gives an empty PostgreSQL database for each gateway
    (None: SQLite). Writes the store's section unless --no-write."""
    with tempfile.TemporaryDirectory(prefix="sot-bench-") as tmp:
        work = Path(tmp)
        conf = "max_queued_messages 0\nmax_inflight_messages 100\n"
        os.environ["SOT_BENCH_CA"] = str(rig_pki()["ca"])
        with Broker(workdir=work / "b1", extra_conf=conf) as b:
            print(f"sustained: {args.sites} sites x {args.rate:g}/s for {args.duration:g} s",
                  flush=True)
            s = sustained(b.port, work / "g1", args.sites, args.rate, args.duration,
                          args.trigger_rate, new_url() if new_url else None)
            print(json.dumps(s, indent=1), flush=True)
        with Broker(workdir=work / "b2", extra_conf=conf) as b:
            bare = bare_rate(b.port, args.sites, args.burst)
            print(f"bare paho subscriber: {bare:.0f} msg/s", flush=True)
        with Broker(workdir=work / "b3", extra_conf=conf) as b:
            gw = gateway_rate(b.port, work / "g2", args.sites, args.burst,
                              new_url() if new_url else None)
            print(f"gateway: {gw:.0f} msg/s, ratio {gw / bare:.2f}", flush=True)
        follower = None
        if new_url:
            with Broker(workdir=work / "b4", extra_conf=conf) as b:
                follower = gateway_rate(b.port, work / "g3", args.sites, args.burst, new_url(),
                                        leads=False)
                print(f"worker that does not lead: {follower:.0f} msg/s, ratio "
                      f"{follower / bare:.2f}", flush=True)
    load = os.getloadavg()[0]
    offered = args.sites * args.rate
    ok = s["backlog_at_end"] < offered and s["drain_s"] < 2.0 and s["missing"] == 0
    table = "\n".join([
        "| offered msg/s | filed msg/s (median, min over 1 s, after 5 s) "
        "| backlog when load stopped | drained in | alerts "
        "| ingest-to-alert median / p99 / max |",
        "|---|---|---|---|---|---|",
        f"| {s['offered_rate']:.0f} | {s['steady_median']:.0f} / {s['steady_min']:.0f} "
        f"| {s['backlog_at_end']} | {s['drain_s']:.2f} s "
        f"| {s['alerts']} of {s['alerts'] + s['missing']} "
        f"| {_ms(s['lat_median_ms'])} / {_ms(s['lat_p99_ms'])} / {_ms(s['lat_max_ms'])} |"])
    store = "PostgreSQL" if new_url else "SQLite"
    store_line = (store_name or f"SQLite {__import__('sqlite3').sqlite_version} "
                          "(WAL, synchronous=FULL)")
    command = "python -m hil_tests.bench.bench_alerts" + (" --postgres" if new_url else "")
    p99 = s["lat_p99_ms"]
    p99_goal = "met" if p99 is not None and p99 < 200 else "not met"
    follower_rows = "" if follower is None else (
        "| a worker that does not lead (validate, commit, ack after commit; no rules: it tells "
        f"the leader's engine the sites by NOTIFY) | {follower:.0f} |\n"
        f"| its ratio | **{follower / bare:.2f}** |\n")
    text = f"""
Measured {datetime.date.today().isoformat()} on {machine()},
{store_line}; 1-minute load average {load:.2f} when the run ended (other work on the
2 cores shows in the numbers). Run with `{command}`; it rewrites this section.

**Method.** Private Mosquitto on 127.0.0.1 (`max_queued_messages 0`, `max_inflight_messages
100`). The gateway is the production path (schema validation, one {store} commit per batch of
the messages waiting on the loop, PUBACK after the commit, state history, the alert engine
evaluating each site that sent a message at most every {MIN_ROUND_S * 1000:.0f} ms and every
site at least every 5 s, in parts of about 200 sites) in one process; the load generator is
another process. Sites: {args.sites}, in municipalities of 20; the shipped
`config/alerts.toml`; one `file` contact.

**Sustained load** ({args.sites} sites × {args.rate:g} state/s for {args.duration:g} s,
{args.trigger_rate:g} sites a second switching to `backup_failed`):

{table}

{"Sustained without backlog." if ok else "NOT sustained: a backlog built up (see drain time)."}
Latency is from the generator's publish call to the alert's `fired` time in the store
(p99 goal < 200 ms: {p99_goal}).

**Maximum ingest rate** ({args.burst} states queued at the broker for an offline persistent
session, then drained by the consumer):

| consumer | msg/s |
|---|---|
| bare paho subscriber (counts, auto-ack) | {bare:.0f} |
| gateway (validate, commit, ack after commit, rules) | {gw:.0f} |
| ratio | **{gw / bare:.2f}** (goal ≥ 0.5: {"met" if gw / bare >= 0.5 else "not met"}) |
{follower_rows}"""
    print(text)
    if not args.no_write:
        section = SECTION_PG if new_url else SECTION
        write_doc(text, section)
        print(f"wrote section '{section}' of {DOC}")
    return 0


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f} ms"


if __name__ == "__main__":
    sys.exit(main())
