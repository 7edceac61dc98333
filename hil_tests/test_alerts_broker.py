"""The alert engine inside the running gateway, fed through a real Mosquitto: a site's state
says its backup failed; the alert appears in the API and the CAP feed, the contact's log gets
one message, and a duplicate delivery of the same state changes nothing (N6)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from hil_tests.conftest import wait_for
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread

pytestmark = [pytest.mark.hil, pytest.mark.needs()]


def state(seq: int) -> bytes:
    return json.dumps({
        "boot": 1, "seq": seq, "ts": int(time.time()), "mode": "backup_failed",
        "grid": {"state": "lost", "v": 0.0, "f": 0.0},
        "genset": {"state": "fault", "mode": "auto"},
        "fuel": {"pct": 50.0, "hours_left": 60.0},
        "devices": {"grid": "online", "genset": "online"},
    }).encode()


def test_backup_failed_through_the_broker_alerts_once(broker: Broker, gateway: GatewayThread,
                                                      tmp_path):
    c = broker.client("ctrl-hede", user="harjedalen-hede")
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        for _ in range(3):  # the same message three times, as a QoS 1 redelivery would
            c.publish("sot/v1/harjedalen-hede/state", state(7), qos=1).wait_for_publish(5)
        alerts = wait_for(lambda: [a for a in gateway.get("/api/alerts")
                                   if a["key"] == "backup_failed:harjedalen-hede"
                                   and a["status"] == "firing"], 15, "the alert")
        assert len(alerts) == 1 and "Hede (Härjedalen): ingen ström" in alerts[0]["sv"]
        log = tmp_path / "notifications.jsonl"
        lines = wait_for(lambda: log.exists() and log.read_text().splitlines(), 15,
                         "the notification")
        sent = [json.loads(x) for x in lines]
        assert [d["alert"]["key"] for d in sent] == ["backup_failed:harjedalen-hede"]
        with urllib.request.urlopen(gateway.url + "/cap.atom", timeout=5) as r:
            feed = r.read().decode()
        assert "backup_failed" in feed and "Hede, Härjedalen kommun" in feed
        # the broker acknowledged all three; the gateway may still be filing the last
        stats = wait_for(lambda: (s := gateway.get("/api/stats"))["duplicates"] == 2 and s, 10,
                         "both repeats counted as duplicates")
        assert stats["accepted_by_topic"] == {"state": 1}
    finally:
        c.disconnect()
        c.loop_stop()
