"""Alert lifecycle across sites and restarts: flapping (A2), regional grouping (A3), escalation
and acknowledgement (A4), restart (A5), duplicate deliveries (N6), fuzzed states (A7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alert_rig import ALL_SITES, HEARTBEAT_S, Rig, normal_state, shipped_config
from gw_samples import raw
from pg_cluster import Backend, backend_fixture, pg_cluster_fixture, store_fixture  # noqa: F401

from gateway.store import SiteInfo

CFG = shipped_config()
LOST: dict[str, Any] = {"mode": "on_backup", "grid": {"state": "lost", "v": 0.0, "f": 0.0},
                        "genset": {"state": "running"}, "capability": {"power": "backup"}}
FAILED: dict[str, Any] = {"mode": "backup_failed", "grid": {"state": "lost"},
                          "genset": {"state": "fault"}, "capability": {"power": "none"}}


@pytest.fixture
def rig(backend: Backend):
    r = Rig(backend.open)
    yield r
    r.close()


def test_a_flapping_grid_is_told_at_most_once_per_repeat_window(rig: Rig):
    """A2: the grid drops and returns every 2-10 minutes for 8 hours."""
    key = "grid_lost:krokom-follinge"
    repeat = CFG.rules["grid_lost"].repeat_s
    rig.state("krokom-follinge")
    start = rig.clock.t
    for i in range(60):
        rig.state("krokom-follinge", **LOST)
        rig.advance(120 + 60 * (i % 5))
        rig.state("krokom-follinge")
        rig.advance(120 + 60 * (i % 7))
    hours = (rig.clock.t - start) / 3600
    fired = [m["created"] for m in rig.told(key, "firing")]
    windows = int((rig.clock.t - start) // repeat) + 1
    assert hours > 7 and 1 <= len(fired) <= windows
    assert all(b - a >= repeat for a, b in zip(fired, fired[1:], strict=False))
    # Each recovery notice follows a notified alert: never more recoveries than alerts.
    assert len(rig.told(key, "recovery")) <= len(fired)


def test_a_regional_blackout_is_one_incident_per_municipality(rig: Rig):
    """A3: three sites of Åre lose the grid within a minute; one message lists them. Föllinge
    (Krokom) loses it too and is told on its own."""
    for s in ("are-kall", "are-duved", "are-undersaker", "krokom-follinge"):
        rig.state(s)
    rig.advance(60)
    for s in ("are-kall", "are-duved", "are-undersaker"):
        rig.state(s, **LOST)
        rig.advance(20, step=20)
    rig.state("krokom-follinge", **LOST)
    rig.advance(CFG.rules["grid_lost"].hold_s + CFG.grouping.window_s + 30, step=10)

    incident = "regional_grid_lost:Åre"
    assert incident in rig.firing()
    msgs = rig.messages()
    are = [m for m in msgs if m["key"].startswith(("grid_lost:are", incident))]
    assert [(m["key"], m["kind"], m["contact"]) for m in are] == \
        [(incident, "firing", "Anna (samordnare)")]
    body = json.loads(rig.store._db.execute("SELECT body FROM notifications WHERE id = ?",
                                            (are[0]["id"],)).fetchone()[0])
    assert "3 SOT-punkter: Duved, Kall, Undersåker" in body["sv"]["text"]
    assert body["alert"]["sites"] == ["are-duved", "are-kall", "are-undersaker"]
    assert [(m["key"], m["kind"]) for m in rig.told("grid_lost:krokom-follinge")] == \
        [("grid_lost:krokom-follinge", "firing")]

    # Acknowledging the incident acknowledges its sites.
    rig.store.ack_alert(rig.open_alerts()[incident].id, "anna", "", rig.clock.t)
    assert {a.status for k, a in rig.open_alerts().items() if k.startswith("grid_lost:are")} \
        == {"acknowledged"}

    # All return: one recovery for the incident, none per site.
    for s in ("are-kall", "are-duved", "are-undersaker"):
        rig.state(s)
    rig.advance(CFG.rules["grid_lost"].clear_s + 2 * HEARTBEAT_S)
    assert incident not in rig.open_alerts()
    rec = [m for m in rig.messages() if m["kind"] == "recovery"]
    assert [m["key"] for m in rec if "are" in m["key"] or "Åre" in m["key"]] == [incident]


def test_a_site_joining_an_open_incident_is_announced_once_per_interval(rig: Rig):
    for s in ("are-kall", "are-duved", "are-undersaker"):
        rig.state(s)
    rig.state("are-kall", **LOST)
    rig.state("are-duved", **LOST)
    rig.advance(CFG.rules["grid_lost"].hold_s + CFG.grouping.window_s + 10, step=10)
    incident = "regional_grid_lost:Åre"
    assert [m["kind"] for m in rig.told(incident)] == ["firing"]
    rig.state("are-undersaker", **LOST)
    rig.advance(CFG.grouping.interval_s + 60, step=10)
    kinds = [m["kind"] for m in rig.told(incident)]
    assert kinds == ["firing", "update"]
    assert rig.told("grid_lost:are-undersaker") == []
    rig.advance(3 * CFG.grouping.interval_s)
    assert [m["kind"] for m in rig.told(incident)] == ["firing", "update"]


def test_unacknowledged_critical_alert_escalates_and_an_ack_stops_it_across_restart(
        backend: Backend):
    """A4: backup failed at Kall; nobody acknowledges; Bo is told after escalate_s. Bo
    acknowledges; the gateway restarts; nobody is told anything more until it resolves."""
    db = backend.open
    rig = Rig(db)
    key = "backup_failed:are-kall"
    esc = CFG.rules["backup_failed"].escalate_s
    rig.state(**FAILED)
    rig.advance(esc - 60)
    assert [(m["kind"], m["contact"]) for m in rig.told(key)] == \
        [("firing", "Anna (samordnare)"), ("firing", "Teknikjour")]
    rig.advance(120)
    assert [(m["kind"], m["contact"]) for m in rig.told(key)][2:] == \
        [("escalation", "Bo (beredskapschef)")]
    a = rig.store.ack_alert(key, "Bo", "åker dit", rig.clock.t)
    assert a is not None and a.status == "acknowledged"
    assert rig.store.acks(a.id)[0]["by"] == "Bo"
    old = rig
    rig.close()

    rig = Rig(db, clock=old.clock)  # restart: same database, the controllers carry on
    rig.current, rig.seq = old.current, old.seq
    before = len(rig.told(key))
    rig.advance(6 * 3600)
    assert rig.open_alerts()[key].status == "acknowledged"
    assert len(rig.told(key)) == before
    rig.state()
    rig.advance(CFG.rules["backup_failed"].clear_s + HEARTBEAT_S)
    assert {m["contact"] for m in rig.told(key, "recovery")} == \
        {"Anna (samordnare)", "Teknikjour", "Bo (beredskapschef)"}
    audit = rig.store.audit_log()
    assert any(x["action"] == "ack" and x["actor"] == "Bo" for x in audit)
    rig.close()


def test_a_restart_with_open_alerts_notifies_nothing_again(backend: Backend):
    """A5."""
    db = backend.open
    rig = Rig(db)
    rig.state(**LOST)
    rig.state("krokom-follinge", **FAILED)
    rig.go_silent("harjedalen-hede")  # never heard: site_silent
    rig.advance(600)
    told = rig.messages()
    assert {m["key"] for m in told} == {"grid_lost:are-kall", "backup_failed:krokom-follinge",
                                        "site_silent:harjedalen-hede", "site_silent:are-duved",
                                        "site_silent:are-undersaker"}
    for _ in range(3):
        old = rig
        rig.close()
        rig = Rig(db, clock=old.clock)
        rig.current, rig.seq, rig.silent = old.current, old.seq, old.silent
        rig.advance(10 * HEARTBEAT_S)
        assert rig.messages() == told
    rig.close()


def test_duplicate_deliveries_make_no_duplicate_rows_or_alerts(rig: Rig):
    """N6: the broker delivers each QoS 1 message twice (and replays the retained state)."""
    doc = {**normal_state(**FAILED), "boot": 1, "seq": 5, "ts": int(rig.clock.t)}
    ack = {"id": "storm-1", "by": "panel", "boot": 1, "seq": 6, "ts": int(rig.clock.t)}
    rig.store.record_crisis_sent("are-kall", "storm-1", rig.clock.t)
    outcomes = []
    for _ in range(3):
        outcomes.append(rig.ingest.handle("sot/v1/are-kall/state", raw(doc)).outcome)
        outcomes.append(rig.ingest.handle("sot/v1/are-kall/crisis/storm-1/ack",
                                          raw(ack)).outcome)
        rig.evaluate()
    assert outcomes == ["stored", "stored"] + ["duplicate"] * 4
    assert len(rig.store.crisis_acks("are-kall")) == 1
    assert len(rig.store.state_history("are-kall")) == 1
    keys = [a.key for a in rig.store.alerts(open_only=False)]
    assert len(keys) == len(set(keys)) and "backup_failed:are-kall" in keys
    assert len(rig.told("backup_failed:are-kall", "firing")) == 2  # Anna and the technician


def test_crisis_ack_with_another_id_than_its_topic_is_refused(rig: Rig):
    r = rig.ingest.handle("sot/v1/are-kall/crisis/storm-1/ack",
                          raw({"id": "storm-2", "by": "panel", "boot": 1, "seq": 1,
                               "ts": int(rig.clock.t)}))
    assert r.outcome == "rejected" and r.reason == "schema"
    r = rig.ingest.handle("sot/v1/are-kall/crisis/bad id/ack", b"{}")
    assert r.outcome == "rejected" and r.reason == "bad_topic"
    assert rig.store.crisis_acks("are-kall") == []


def test_fuzzed_states_never_crash_ingest_or_rules_and_bad_ones_are_never_state(rig: Rig):
    """A7: states with random values in every field. Each is refused, or filed and evaluated
    without an exception; a refused one never becomes the site's state."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
    values = st.recursive(leaf, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=8)
    paths = st.sampled_from([
        ("mode",), ("grid", "state"), ("grid", "since"), ("genset", "state"),
        ("genset", "mode"), ("genset", "ready"), ("genset", "run_s"), ("genset", "since"),
        ("genset", "alarms"), ("fuel", "hours_left"), ("fuel", "refuel_by"),
        ("fuel", "confidence"), ("devices",), ("capability", "fuel_for_sale"),
        ("pumps",), ("pumps", "available"), ("capability",), ("grid",), ("fuel",)])
    seq = iter(range(10, 10**9))

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(changes=st.lists(st.tuples(paths, values), min_size=1, max_size=4))
    def check(changes: list) -> None:
        doc = normal_state()
        for path, value in changes:
            target = doc
            for p in path[:-1]:
                if not isinstance(target.get(p), dict):
                    target[p] = {}
                target = target[p]
            target[path[-1]] = value
        doc.update(boot=2, seq=next(seq), ts=int(rig.clock.t))
        before = (rig.store.latest("are-kall") or {}).get("state")
        r = rig.ingest.handle("sot/v1/are-kall/state", json.dumps(doc).encode())
        after = (rig.store.latest("are-kall") or {}).get("state")
        if r.outcome == "rejected":
            assert after == before
        else:
            assert r.outcome == "stored" and after is not None and after["seq"] == doc["seq"]
        rig.clock.t += 1
        rig.evaluate()

    check()


def test_a_takeover_sends_each_notification_once(rig: Rig):
    """Two workers' engines on one store: the old leader, paused past its lease, wakes up
    after another worker took over. It claims and sends nothing; the new leader sends every
    queued notification once (gateway/store/lease.py `claim_notification`)."""
    import asyncio

    from gateway.alerts.engine import AlertEngine
    from gateway.model import Notification
    from gateway.store import LEADER

    rig.state("krokom-follinge", **FAILED)
    rig.evaluate()
    queued = {m["idem"] for m in rig.messages()}
    assert queued
    store, clock = rig.store, rig.clock
    sent: list[tuple[str, str]] = []

    class Recorder:
        def __init__(self, who: str) -> None:
            self.who = who

        async def send(self, n: Notification) -> None:
            sent.append((self.who, n.idem))

    def engine(who: str, epoch: int) -> AlertEngine:
        e = AlertEngine(store, CFG, clock, senders=dict.fromkeys(("file", "email", "webhook"),
                                                                 Recorder(who)))
        e.claim = lambda nid, now: store.claim_notification(nid, LEADER, who, epoch, now, 90)
        return e

    old_epoch = store.acquire_lease(LEADER, "gw1", clock.t, 6)
    assert old_epoch is not None
    clock.t += 7  # gw1 paused: its lease ran out, gw2 takes it
    new_epoch = store.acquire_lease(LEADER, "gw2", clock.t, 6)
    assert new_epoch == old_epoch + 1

    async def rounds() -> None:
        old, new = engine("gw1", old_epoch), engine("gw2", new_epoch)
        for e in (old, new, old, new):
            e.dispatch_due()
            await e.drain()

    asyncio.run(rounds())
    assert sorted(sent) == sorted(("gw2", idem) for idem in queued)


def test_a_notification_waiting_for_a_free_sender_is_not_held_from_the_next_leader(rig: Rig):
    """The leader sends PARALLEL_SENDS notifications at a time and the rest wait for a free
    sender. Only those being sent are claimed: when the leader stops leading with all its
    senders stuck, the next leader can send the waiting ones at once, not after the claim's
    hold (90 s in gateway/service.py)."""
    import asyncio

    from gateway.alerts.engine import PARALLEL_SENDS, AlertEngine
    from gateway.model import Notification
    from gateway.store import LEADER

    rig.state("krokom-follinge", **FAILED)
    rig.evaluate()
    store, clock = rig.store, rig.clock
    alert_id = next(a.id for a in store.alerts())
    store.add_notifications([Notification(0, alert_id, "firing", "bench", "file", "x", "s",
                                          "{}", f"wait-{i}", next_at=clock.t)
                             for i in range(PARALLEL_SENDS + 3)], clock.t)
    queued = len(store.due_notifications(clock.t, limit=1000))
    assert queued > PARALLEL_SENDS
    epoch = store.acquire_lease(LEADER, "gw1", clock.t, 6)
    assert epoch is not None
    started: list[str] = []

    class Stuck:
        async def send(self, n: Notification) -> None:
            started.append(n.idem)
            await asyncio.Event().wait()  # a receiver that never answers

    old = AlertEngine(store, CFG, clock, senders=dict.fromkeys(("file", "email", "webhook"),
                                                               Stuck()))
    old.claim = lambda nid, now: store.claim_notification(nid, LEADER, "gw1", epoch, now, 90)

    async def main() -> int:
        old.dispatch_due()
        async with asyncio.timeout(10):
            while len(started) < PARALLEL_SENDS:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # (no further send starts: every sender is stuck)
        clock.t += 7  # gw1 stops leading; gw2 takes over
        assert store.acquire_lease(LEADER, "gw2", clock.t, 6) == epoch + 1
        due = len(store.due_notifications(clock.t, limit=1000))
        await old.stop()
        return due

    due_for_the_next = asyncio.run(main())
    assert len(set(started)) == PARALLEL_SENDS
    assert due_for_the_next == queued - PARALLEL_SENDS


def test_a_claim_that_fails_is_logged_and_leaves_the_notification_queued(
        rig: Rig, caplog: pytest.LogCaptureFixture):
    """A fault in claiming (not the store as a whole) sends nothing and loses nothing: the
    notification stays queued for the next try, and the log says which one."""
    import asyncio

    from gateway.alerts.engine import AlertEngine
    from gateway.model import Notification

    rig.state("krokom-follinge", **FAILED)
    rig.evaluate()
    store, clock = rig.store, rig.clock
    due = {n.id for n in store.due_notifications(clock.t, limit=1000)}
    assert due
    sent: list[str] = []

    class Recorder:
        async def send(self, n: Notification) -> None:
            sent.append(n.idem)

    def broken_claim(nid: int, now: float) -> bool:
        raise ValueError("claim bug")

    e = AlertEngine(store, CFG, clock, senders=dict.fromkeys(("file", "email", "webhook"),
                                                             Recorder()))
    e.claim = broken_claim

    async def main() -> None:
        e.dispatch_due()
        await e.drain()

    asyncio.run(main())
    assert sent == []
    assert {n.id for n in store.due_notifications(clock.t, limit=1000)} == due
    said = [r.getMessage() for r in caplog.records if "could not claim" in r.getMessage()]
    assert len(said) == len(due)


# A county of 23 municipalities of 20 sites: more than one part of a round (ROUND_SITES).
COUNTY = [SiteInfo(f"county-{m:02d}-{i:02d}", f"Plats {m}/{i:02d}", f"Kommun {m:02d}",
                   63.0 + m / 100, 14.0 + i / 100, HEARTBEAT_S)
          for m in range(23) for i in range(20)]


def test_a_county_blackout_is_evaluated_in_parts_and_still_one_incident_per_municipality(
        rig: Rig):
    """A round over hundreds of sites runs in parts (so ingest and the web get the event loop
    between them). A part never splits a municipality: every municipality of a county-wide
    blackout is one incident listing all its 20 sites, told once."""
    from gateway.alerts.engine import ROUND_SITES

    rig.store.upsert_sites(ALL_SITES + COUNTY)
    rig.ingest.reload_sites()
    groups = [p.args[0] for p in rig.engine.parts(None)]
    assert groups[-1] is None  # the gateway's rules and alerts outside every part come last
    site_groups = groups[:-1]
    assert len(site_groups) >= 3 and all(len(g) <= ROUND_SITES for g in site_groups)
    muni = {s.id: s.municipality for s in ALL_SITES + COUNTY}
    part_of: dict[str, int] = {}
    for n, g in enumerate(site_groups):
        for site in g:
            assert part_of.setdefault(muni[site], n) == n, f"{muni[site]} split across parts"

    for s in COUNTY:
        rig.state(s.id)
    rig.advance(60)
    for s in COUNTY:
        rig.state(s.id, **LOST)
    rig.advance(CFG.rules["grid_lost"].hold_s + CFG.grouping.window_s + HEARTBEAT_S)

    firing = rig.firing()
    told = rig.told(kind="firing")
    for m in range(23):
        incident = f"regional_grid_lost:Kommun {m:02d}"
        assert incident in firing
        members = rig.open_alerts()[incident].data["sites"]
        assert members == [f"county-{m:02d}-{i:02d}" for i in range(20)]
        assert [t["key"] for t in told if t["key"] == incident] == [incident]
    # The sites are told through their incident, not one by one.
    assert not [t for t in told if t["key"].startswith("grid_lost:county-")]


def test_a_round_in_parts_gives_the_event_loop_back_between_them(rig: Rig):
    """The engine's task yields between the parts of a round: other work on the loop (ingest,
    the web) runs while 460 sites are evaluated."""
    import asyncio

    rig.store.upsert_sites(ALL_SITES + COUNTY)
    order: list[str] = []
    evaluate_part = rig.engine._evaluate

    def spy(wanted: Any, covered: Any) -> Any:
        order.append("part")
        return evaluate_part(wanted, covered)

    rig.engine._evaluate = spy  # type: ignore[method-assign]

    async def main() -> None:
        stop = False

        async def other_work() -> None:
            while not stop:
                order.append("loop")
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        rig.engine.start()
        rig.engine.mark_all()
        async with asyncio.timeout(30):
            while order.count("part") < 4:
                await asyncio.sleep(0.01)
        await rig.engine.stop()
        stop = True
        await other

    asyncio.run(main())
    parts = [i for i, what in enumerate(order) if what == "part"][:4]
    assert all("loop" in order[a:b] for a, b in zip(parts, parts[1:], strict=False))


def test_the_timed_round_leaves_out_a_site_that_was_just_evaluated_for_what_it_sent(rig: Rig):
    """Every site is evaluated at least every tick_s. A site that sends every 50 ms (alone in
    its municipality) is evaluated for that; the timed rounds evaluate only the quiet sites,
    each about every tick_s, and read the alerts of the municipalities not evaluated
    meanwhile. (Re-evaluating every site and alert at every tick, at 2 000 sites sending once
    a second, held the event loop for some 300 ms at a time: docs/benchmarks.md.)"""
    import asyncio
    import time

    chatty = SiteInfo("pratsam", "Pratsam", "Pratkommun", 63.0, 14.0, HEARTBEAT_S)
    rig.store.upsert_sites(ALL_SITES + [chatty])
    quiet = sorted(s.id for s in ALL_SITES)
    calls: list[tuple[float, list[str] | None]] = []
    evaluate_part = rig.engine._evaluate
    read_alerts = rig.store.alerts
    skipped: list[set[str]] = []  # the municipalities each read of "the other alerts" left out

    def spy(wanted: Any, covered: Any) -> Any:
        calls.append((time.monotonic(), wanted))
        return evaluate_part(wanted, covered)

    def spy_alerts(**kw: Any) -> Any:
        if kw.get("municipalities") is None:
            skipped.append(set(kw.get("not_municipalities", ())))
        return read_alerts(**kw)

    rig.engine._evaluate = spy  # type: ignore[method-assign]
    rig.store.alerts = spy_alerts  # type: ignore[method-assign]
    rig.engine.tick_s = 1.0

    async def main() -> None:
        rig.engine.start()
        end = time.monotonic() + 3.6
        while time.monotonic() < end:
            rig.engine.mark(chatty.id)
            await asyncio.sleep(0.05)
        await rig.engine.stop()

    asyncio.run(main())
    parts = [(t, w) for t, w in calls if w is not None]
    assert chatty.id in parts[0][1] and quiet[0] in parts[0][1]  # the first round: every site
    later = parts[1:]
    assert not [w for _t, w in later if chatty.id in w and set(w) - {chatty.id}], (
        "a timed round evaluated the site that sends again")
    assert len([w for _t, w in later if w == [chatty.id]]) >= 20
    for site in quiet:
        seen = [parts[0][0]] + [t for t, w in later if site in w]
        gaps = [round(b - a, 2) for a, b in zip(seen, seen[1:], strict=False)]
        assert len(gaps) >= 2 and max(gaps) <= 1.0 + 0.3, (site, gaps)
    # Each timed round ends with the gateway's rules and the other alerts, twice a tick.
    assert len(skipped) >= 5 and all("Pratkommun" in s for s in skipped[1:]), skipped


def test_a_site_that_sends_during_a_long_round_is_evaluated_before_the_rest_of_it(rig: Rig):
    """Kall's news arrives while a round over 460 sites is under way: it is evaluated right
    after the part in progress, not once the whole round is done."""
    import asyncio

    rig.store.upsert_sites(ALL_SITES + COUNTY)
    calls: list[list[str] | None] = []
    evaluate_part = rig.engine._evaluate

    def spy(wanted: Any, covered: Any) -> Any:
        calls.append(wanted)
        if len(calls) == 1:
            rig.engine.mark("are-kall")  # a message filed while the first part runs
        return evaluate_part(wanted, covered)

    rig.engine._evaluate = spy  # type: ignore[method-assign]

    async def main() -> None:
        rig.engine.start()
        rig.engine.mark_all()
        async with asyncio.timeout(30):
            while len(calls) < 3:
                await asyncio.sleep(0.01)
        await rig.engine.stop()

    asyncio.run(main())
    assert calls[0] is not None and "are-kall" not in calls[0]
    assert calls[1] == ["are-kall"]
