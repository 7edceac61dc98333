"""Many sites' uplink from one process, keeping the controllers' session rules (docs/mqtt.md,
"Session rules"), for the gateway workers' fault tests (hil_tests/test_worker_faults.py).

    python -m hil_tests.rig.fleet PORT CA OUT --sites N --events K [--rate R] [--fail M]
                                  [--settle S] [--start-file F]

One MQTT connection (an open test broker) speaks for N sites `f-00000`... Each site journals K
events (`shop_opened`, boot 1, seq 0..K-1) and publishes them QoS 1 at R messages a second in
all, round the sites; the first M sites also publish a `backup_failed` state once, halfway (a
rule with hold 0: one alert each). Like the firmware, a site keeps every event until the
gateway's `ack` covers it, holds its events while `sot/v1/gateway/status` says `offline`, and
sends its unacknowledged journal again (`hist: true`, with its state) when the status turns
`online` again and on `rebirth`. After the last event it waits up to S seconds for every
event to be acknowledged, then writes OUT (JSON): published, replayed, unacknowledged (site ->
seqs), the failing sites and when their state went out.

With --start-file it waits for that file to exist before the first event (the test starts it
early, so its connection and subscriptions are in place).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from hil_tests.bench.bench_alerts import state_doc
from hil_tests.rig.broker import client_tls

BOOT = 1


def site_id(i: int) -> str:
    return f"f-{i:05d}"


class Fleet:
    def __init__(self, port: int, ca: str, n_sites: int) -> None:
        self.sites = [site_id(i) for i in range(n_sites)]
        self.lock = threading.Lock()
        self.journal: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in self.sites}
        self.states: dict[str, dict[str, Any]] = {}
        self.online = True  # no retained status counts as online
        self.published = 0
        self.replayed = 0
        self.rebirths = 0
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet",
                             clean_session=True)
        client_tls(self.c, ca)
        self.c.max_inflight_messages_set(200)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        c.subscribe([("sot/v1/+/ack", 1), ("sot/v1/+/rebirth", 1),
                     ("sot/v1/gateway/status", 1)])

    def _on_message(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        parts = m.topic.split("/")
        try:
            doc = json.loads(m.payload)
        except ValueError:
            return
        if m.topic == "sot/v1/gateway/status":
            was, self.online = self.online, doc.get("state") != "offline"
            if self.online and not was:
                for site in self.sites:
                    self._replay(site)
            return
        site, what = parts[2], parts[3]
        if what == "ack" and doc.get("boot") == BOOT:
            with self.lock:
                j = self.journal.get(site)
                if j is not None:
                    for seq in [s for s in j if s <= doc["seq"]]:
                        del j[seq]
        elif what == "rebirth" and site in self.journal:
            self.rebirths += 1
            self._replay(site)

    def _replay(self, site: str) -> None:
        if not self.online:
            return
        with self.lock:
            events = [dict(e, hist=True) for _seq, e in sorted(self.journal[site].items())]
            st = self.states.get(site)
        if st is not None:
            self._pub(site, "state", st)
        for e in events:
            self.replayed += 1
            self._pub(site, "event", e)

    def _pub(self, site: str, what: str, doc: dict[str, Any]) -> None:
        self.c.publish(f"sot/v1/{site}/{what}", json.dumps(doc, separators=(",", ":")), qos=1)

    def event(self, site: str, seq: int) -> None:
        doc = {"boot": BOOT, "seq": seq, "ts": int(time.time()), "type": "shop_opened",
               "data": {}, "hist": False}
        with self.lock:
            self.journal[site][seq] = doc
        if self.online:
            self.published += 1
            self._pub(site, "event", doc)

    def state(self, site: str, failed: bool, seq: int) -> None:
        doc = state_doc(seq, failed)
        self.states[site] = doc
        self._pub(site, "state", doc)

    def pending(self) -> dict[str, list[int]]:
        with self.lock:
            return {s: sorted(j) for s, j in self.journal.items() if j}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("ca")
    p.add_argument("out")
    p.add_argument("--sites", type=int, default=2000)
    p.add_argument("--events", type=int, default=3)
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--fail", type=int, default=20)
    p.add_argument("--settle", type=float, default=40.0)
    p.add_argument("--start-file")
    a = p.parse_args(argv)
    f = Fleet(a.port, a.ca, a.sites)
    if not f.subscribed.wait(15):
        raise SystemExit("fleet: no SUBACK")
    if a.start_file:
        while not Path(a.start_file).exists():
            time.sleep(0.05)
    total = a.sites * a.events
    failing = f.sites[:a.fail]
    fail_ts: dict[str, float] = {}
    t0 = time.monotonic()
    n = 0
    for seq in range(a.events):
        for site in f.sites:
            f.event(site, seq)
            n += 1
            if n == total // 2:
                for s in failing:
                    fail_ts[s] = time.time()
                    f.state(s, True, 10)
            time.sleep(max(0.0, t0 + n / a.rate - time.monotonic()))
    sent_s = time.monotonic() - t0
    deadline = time.monotonic() + a.settle
    while f.pending() and time.monotonic() < deadline:
        time.sleep(0.2)
    Path(a.out).write_text(json.dumps({
        "published": f.published, "replayed": f.replayed, "rebirths": f.rebirths,
        "sent_s": sent_s, "unacknowledged": f.pending(), "failing": failing,
        "fail_ts": fail_ts, "acked_after_s": time.monotonic() - t0}))
    f.c.disconnect()
    f.c.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
