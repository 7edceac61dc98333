"""Each alert rule with the shipped config/alerts.toml and a hand-moved clock: it waits out its
hold time, fires once, tells the first contact of its audience once, resolves after its clear
time and sends one recovery notice."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alert_rig import HEARTBEAT_S, Rig, normal_state, shipped_config
from gw_samples import TS, present
from pg_cluster import Backend, backend_fixture, pg_cluster_fixture, store_fixture  # noqa: F401

from gateway.alerts.config import AlertConfig
from gateway.alerts.rules import Obs, SiteView, evaluate, fuel_for_sale, site_view
from gateway.store import SiteInfo, SiteSnapshot

CFG = shipped_config()

# rule, state that triggers it, key, contacts that get the first message
CASES: list[tuple[str, dict[str, Any], str, set[str]]] = [
    ("grid_lost", {"mode": "on_backup", "grid": {"state": "lost", "v": 0.0, "f": 0.0},
                   "genset": {"state": "running"}, "capability": {"power": "backup"}},
     "grid_lost:are-kall", {"Anna (samordnare)"}),
    ("backup_failed", {"mode": "backup_failed", "grid": {"state": "lost"},
                       "genset": {"state": "fault", "alarms": [["fail_to_start", "shutdown"]]},
                       "capability": {"power": "none"}},
     "backup_failed:are-kall", {"Anna (samordnare)", "Teknikjour"}),
    ("gen_failed_to_start", {"genset": {"state": "fault"}},
     "gen_failed_to_start:are-kall", {"Anna (samordnare)", "Teknikjour"}),
    ("remote_start_not_ready", {"genset": {"mode": "manual", "ready": False}},
     "remote_start_not_ready:are-kall", {"Anna (samordnare)", "Teknikjour"}),
    ("gen_max_runtime", {"genset": {"state": "running", "run_s": 25 * 3600}},
     "gen_max_runtime:are-kall", {"Anna (samordnare)", "Teknikjour"}),
    ("fuel_low", {"fuel": {"hours_left": 20.0, "refuel_by": TS + 20 * 3600}},
     "fuel_low:are-kall", {"Anna (samordnare)"}),
    ("fuel_for_sale", {"capability": {"fuel_for_sale": {"diesel": 0, "petrol": 9000}}},
     "fuel_for_sale:are-kall:product:diesel", {"Anna (samordnare)"}),
    ("device_offline", {"devices": {"tank": "offline"}},
     "device_offline:are-kall:tank", {"Teknikjour"}),
]


@pytest.fixture
def rig(backend: Backend):
    r = Rig(backend.open)
    yield r
    r.close()


def first_notice_after(rule: str) -> float:
    hold = CFG.rules[rule].hold_s
    return hold + (CFG.grouping.window_s if rule in CFG.grouping.rules else 0)


@pytest.mark.parametrize("rule, trigger, key, first", CASES, ids=[c[0] for c in CASES])
def test_rule_holds_fires_once_and_recovers(rig: Rig, rule: str, trigger: dict, key: str,
                                            first: set[str]):
    r = CFG.rules[rule]
    rig.state()
    rig.advance(HEARTBEAT_S)
    assert rig.open_alerts() == {}

    rig.state(**trigger)
    rig.evaluate()
    wait, waited = first_notice_after(rule), 0.0
    if r.hold_s > 1:
        rig.advance(r.hold_s - 1)
        waited = r.hold_s - 1
        assert rig.open_alerts()[key].status == "pending"
    if wait - waited > 1:
        rig.advance(wait - waited - 1)
    if wait > 0:
        assert rig.told(key) == [], "told before the hold time (and group window) passed"
    rig.advance(1 + 1e-6, step=1)
    rig.advance(HEARTBEAT_S)  # one more heartbeat changes nothing
    assert rig.open_alerts()[key].status == "firing"
    firing = rig.told(key, "firing")
    assert {m["contact"] for m in firing} == first
    assert len(firing) == len(first)
    text = firing[0]["subject"]
    assert text.startswith("[SOT] LARM:") and "Kall" in text and "ALERT" in text

    rig.state()  # all clear
    if r.clear_s > 0:
        rig.advance(r.clear_s - HEARTBEAT_S)
        assert key in rig.open_alerts(), "resolved before its clear time"
    rig.advance(2 * HEARTBEAT_S)
    assert key not in rig.open_alerts()
    recovery = rig.told(key, "recovery")
    assert {m["contact"] for m in recovery} == (first if r.recovery else set())
    assert len(rig.told(key, "firing")) == len(first), "told twice"


def test_device_with_the_wrong_identity_raises_device_offline_saying_so(rig: Rig):
    """`mismatch`: the device answers but is not the configured one (a swapped controller, a
    wrong unit id). Its values are not used, so it is as good as offline, and the technician is
    told which it is."""
    key = "device_offline:are-kall:genset"
    rig.state(devices={"genset": "mismatch"})
    rig.advance(first_notice_after("device_offline") + HEARTBEAT_S)
    a = rig.open_alerts()[key]
    assert a.status == "firing" and a.data["state"] == "mismatch"
    firing = rig.told(key, "firing")
    assert {m["contact"] for m in firing} == {"Teknikjour"}
    doc = rig.store._db.execute("SELECT body FROM notifications WHERE id = ?",
                                (firing[0]["id"],)).fetchone()[0]
    body = json.loads(doc)
    assert "'genset' är inte den som konfigurerats" in body["sv"]["text"]
    assert "wrong device at its address" in body["en"]["text"]
    rig.state(devices={"genset": "online"})
    rig.advance(CFG.rules["device_offline"].clear_s + 2 * HEARTBEAT_S)
    assert key not in rig.open_alerts()


def test_fuel_message_gives_the_refuel_by_time(rig: Rig):
    rig.state(fuel={"hours_left": 20.0, "refuel_by": TS + 20 * 3600})
    rig.advance(first_notice_after("fuel_low") + HEARTBEAT_S)
    body = rig.told("fuel_low:are-kall", "firing")[0]
    doc = rig.store._db.execute("SELECT body FROM notifications WHERE id = ?",
                                (body["id"],)).fetchone()[0]
    # TS + 20 h = Tue 24 Nov 2026 10:27 UTC = 11:27 in Sweden
    assert "Tanka senast tis 24/11 11:27" in doc and "Refuel by Tue 24 Nov 11:27" in doc
    assert "20 timmar" in doc and "under 24 h" in doc


def test_fuel_thresholds_raise_the_alert_and_only_new_steps_notify(rig: Rig):
    key = "fuel_low:are-kall"
    rig.state(fuel={"hours_left": 30.0})
    rig.advance(600)
    assert key not in rig.open_alerts()
    rig.state(fuel={"hours_left": 20.0})
    rig.advance(600)
    a = rig.open_alerts()[key]
    assert a.severity == "warning" and a.data["step"] == 1
    rig.store.ack_alert(a.id, "anna", "tankbil beställd", rig.clock.t)
    rig.state(fuel={"hours_left": 11.0})
    rig.advance(60)
    a = rig.open_alerts()[key]
    # a worse step un-acknowledges it and says so
    assert a.status == "firing" and a.severity == "critical" and a.data["step"] == 2
    assert [m["kind"] for m in rig.told(key)] == ["firing", "worse"]
    rig.state(fuel={"hours_left": 13.0})  # back above 12 h, but within the 2 h margin
    rig.advance(600)
    assert rig.open_alerts()[key].data["step"] == 2
    rig.state(fuel={"hours_left": 11.5})  # dipping below 12 h again is not news
    rig.advance(600)
    assert [m["kind"] for m in rig.told(key)] == ["firing", "worse"]
    rig.store.ack_alert(a.id, "anna", "", rig.clock.t)  # acknowledged: no escalation to Bo
    rig.state(fuel={"hours_left": 5.0})
    rig.advance(60)
    assert rig.open_alerts()[key].data["step"] == 3
    rig.state(fuel={"hours_left": 200.0})  # refuelled
    rig.advance(600)
    assert key not in rig.open_alerts()
    assert [m["kind"] for m in rig.told(key)] == ["firing", "worse", "worse", "recovery"]


def test_site_silent_fires_after_three_missed_heartbeats_plus_hold_and_resolves(rig: Rig):
    """Fault scenario A1."""
    key = "site_silent:are-kall"
    rig.state()
    rig.advance(60)
    rig.go_silent("are-kall")
    last = rig.clock.t
    hold = CFG.rules["site_silent"].hold_s
    rig.advance(3 * HEARTBEAT_S + hold - 5, step=5)
    assert key not in rig.firing()
    rig.advance(10, step=5)
    assert key in rig.firing()
    assert present(rig.open_alerts()[key].fired) <= last + 3 * HEARTBEAT_S + hold + 5
    assert len(rig.told(key, "firing")) == 1
    rig.advance(600)
    assert len(rig.told(key, "firing")) == 1
    rig.state()  # data returns
    rig.evaluate()
    assert key not in rig.open_alerts()
    assert len(rig.told(key, "recovery")) == 1


def test_the_will_makes_a_site_silent_without_waiting_for_heartbeats(rig: Rig):
    rig.state()
    rig.advance(30)
    rig.go_silent("are-kall")
    assert rig.ingest.handle("sot/v1/are-kall/status",
                             b'{"state":"lost","boot":1,"bdseq":1}').outcome == "stored"
    rig.advance(CFG.rules["site_silent"].hold_s + 1, step=1)
    a = rig.open_alerts()["site_silent:are-kall"]
    assert a.status == "firing" and "kontakten" in a.sv


def test_silence_while_the_gateway_is_not_connected_is_not_the_sites_fault(rig: Rig):
    rig.state()
    rig.go_silent("are-kall")
    rig.engine.listening_since = None  # broker link down
    rig.advance(3600)
    assert "site_silent:are-kall" not in rig.open_alerts()
    rig.engine.listening_since = rig.clock.t  # back: the site gets 3 heartbeats from now
    rig.advance(3 * HEARTBEAT_S)
    assert "site_silent:are-kall" not in rig.firing()


def test_crisis_message_without_acknowledgement_alerts_and_the_ack_resolves_it(rig: Rig):
    key = "crisis_ack_missing:are-kall:crisis:storm-1"
    hold = CFG.rules["crisis_ack_missing"].hold_s
    rig.state()
    rig.store.record_crisis_sent("are-kall", "storm-1", rig.clock.t)
    rig.store.record_crisis_sent("are-kall", "storm-2", rig.clock.t)
    rig.advance(hold - 60)
    assert key not in rig.firing()
    # staff acknowledge storm-2 on the panel in time
    assert rig.publish("are-kall", "crisis/storm-2/ack", {"id": "storm-2", "by": "panel"}) \
        == "stored"
    rig.advance(120)
    assert key in rig.firing()
    assert "crisis_ack_missing:are-kall:crisis:storm-2" not in rig.open_alerts()
    assert len(rig.told(key, "firing")) == 1
    assert rig.publish("are-kall", "crisis/storm-1/ack", {"id": "storm-1", "by": "panel"}) \
        == "stored"
    rig.evaluate()
    assert key not in rig.open_alerts()
    assert rig.told(key, "recovery") == []  # recovery = false for this rule


# --- unknown is never all clear (fault scenario A6) ----------------------------------------------


def test_a_stale_state_neither_fires_nor_clears(rig: Rig):
    rig.state(mode="on_backup", grid={"state": "lost"}, genset={"state": "running"})
    rig.advance(300)
    assert "grid_lost:are-kall" in rig.firing()
    # The site goes quiet; its last (retained) state says "grid lost" but is stale. Even a stale
    # "normal" delivered late (old ts) must not resolve anything.
    rig.go_silent("are-kall")
    rig.advance(3600)
    assert "grid_lost:are-kall" in rig.open_alerts()
    assert "site_silent:are-kall" in rig.firing()


def test_missing_fields_mean_unknown(rig: Rig):
    """genset.ready and mode absent (an older controller): remote-start readiness is unknown,
    fuel_for_sale absent: nothing about sales; neither fires nor resolves."""
    doc = normal_state()
    del doc["genset"]["mode"], doc["genset"]["ready"], doc["capability"]["fuel_for_sale"]
    del doc["pumps"]
    rig.current["are-kall"] = doc
    rig.publish("are-kall", "state", doc)
    rig.advance(3600)
    assert [k for k in rig.open_alerts() if ":are-kall" in k] == []


def test_fuel_for_sale_per_product_when_the_controller_sends_litres():
    view = SiteView("are-kall", "Kall", "Åre", 63.4, 13.2, 30, "online", TS,
                    normal_state(capability={"fuel_for_sale": {"diesel": 0, "petrol": 950,
                                                               "hvo": None}}), 1.0, TS)
    got = present(fuel_for_sale(CFG.rules["fuel_for_sale"], view, TS, {}))
    assert set(got) == {"product:diesel"}
    assert isinstance(got["product:diesel"], Obs) and "diesel slut" in got["product:diesel"].sv


def test_evaluate_is_pure_and_repeatable():
    snap = SiteSnapshot(SiteInfo("are-kall", "Kall", "Åre", 63.4, 13.2, 30), {"state": "online"},
                        TS, None, {**normal_state(mode="backup_failed", grid={"state": "lost"},
                                                  genset={"state": "fault"}),
                                   "ts": TS}, TS, TS)
    views = {"are-kall": site_view(snap, TS + 1, TS - 100)}
    cfg = AlertConfig(rules=CFG.rules, grouping=CFG.grouping, contacts={})
    a1 = evaluate(cfg, views, [], TS + 1)
    a2 = evaluate(cfg, views, [], TS + 1)
    assert a1 == a2
    assert {getattr(a, "key", None) for a in a1} >= {"backup_failed:are-kall"}
