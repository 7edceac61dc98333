"""Fault scenario A8 (docs/fault-scenarios.md): the gateway killed (SIGKILL) in the middle of
writing. The database opens, passes PRAGMA integrity_check, and every message the gateway had
acknowledged is in it.

The child is the gateway's own write path without the network: `Ingest.handle` (what MQTT
delivery calls before it sends the PUBACK) plus the alert engine evaluating after every
message, so alerts, notifications and history are written between the messages. After each
`handle` returns it prints the message's (boot, seq): that is the moment the real gateway
acknowledges it to the broker, after which the broker forgets it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from gw_samples import present

from gateway.store import SqliteStore

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from alert_rig import ALL_SITES, normal_state, shipped_config
from gateway.alerts.engine import AlertEngine
from gateway.ingest import Ingest
from gateway.store import SqliteStore

boot = int(sys.argv[2])
store = SqliteStore(sys.argv[1])
store.upsert_sites(ALL_SITES)
ingest = Ingest(store, time.time)
engine = AlertEngine(store, shipped_config(), time.time)
engine.listening_since = time.time() - 3600
lost = {"mode": "backup_failed", "grid": {"state": "lost"}, "genset": {"state": "fault"}}
seq = 0
while True:
    for site in ("are-kall", "krokom-follinge"):
        seq += 1
        doc = normal_state(**(lost if seq % 20 < 10 else {}))
        doc.update(boot=boot, seq=seq, ts=int(time.time()))
        assert ingest.handle(f"sot/v1/{site}/state", json.dumps(doc).encode()).outcome \
            in ("stored", "outdated")
        print("acked", site, boot, seq, flush=True)
        seq += 1
        ev = {"boot": boot, "seq": seq, "ts": int(time.time()), "type": "mode_changed",
              "data": {"from": "normal", "to": "backup_failed"}, "hist": False}
        assert ingest.handle(f"sot/v1/{site}/event", json.dumps(ev).encode()).outcome == "stored"
        print("acked", site, boot, seq, flush=True)
        engine.evaluate_sites([site])
"""


def test_sigkill_during_writes_loses_nothing_acknowledged(tmp_path: Path):
    db = tmp_path / "sot.sqlite3"
    tests = Path(__file__).parent
    rnd = random.Random(8)
    acked: set[tuple[str, int, int]] = set()
    for boot in range(1, 6):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(boot), str(tests)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=tests.parent.parent, start_new_session=True)
        assert proc.stdout is not None
        lines = 0
        deadline = time.monotonic() + 30
        target = rnd.randint(40, 400)
        while lines < target and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, site, b, seq = line.split()
            acked.add((site, int(b), int(seq)))
            lines += 1
        os.kill(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=10)
        for line in rest.splitlines():  # printed before the kill landed: acknowledged too
            _, site, b, seq = line.split()
            acked.add((site, int(b), int(seq)))
        assert lines >= target, f"child stopped early: {err[-2000:]}"

        store = SqliteStore(db)
        try:
            assert store.integrity_check() == "ok"
            rows = store._db.execute("SELECT site, boot, seq FROM events").fetchall()
            have = {(r[0], r[1], r[2]) for r in rows}
            states = {site: present(store.latest(site))["state"] for site in ("are-kall",
                                                                      "krokom-follinge")}
            keys = [r[0] for r in store._db.execute(
                "SELECT key FROM alerts WHERE status != 'resolved'")]
        finally:
            store.close()
        acked_events = {x for x in acked if x[2] % 2 == 0}
        assert acked_events <= have, f"lost: {sorted(acked_events - have)[:5]}"
        last = {site: max((b, s) for (st, b, s) in acked if st == site and s % 2 == 1)
                for site in states}
        for site, doc in states.items():
            assert (doc["boot"], doc["seq"]) >= last[site]
        assert len(keys) == len(set(keys))
