"""What one site can send: text the store cannot hold, numbers at and past every range, times
and counters it cannot have. Each costs only its own message (refused, counted, filed, logged
once) and never the other messages of its batch, the other sites or the alert engine."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alert_rig import Rig, normal_state
from gw_samples import SITES, TS, Clock, birth, event, present, raw, state, status
from pg_cluster import Backend, backend_fixture, one, pg_cluster_fixture, store_fixture  # noqa: F401

from gateway import ingest as ingest_mod
from gateway.cli import main as cli_main
from gateway.ingest import MAX_FUTURE_S, Ingest
from gateway.store import PgStore, SqliteStore, Store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(store: Store) -> Store:
    """The store tests here run on SQLite and on PostgreSQL (`pg_cluster.py`)."""
    store.upsert_sites(SITES)
    return store


@pytest.fixture
def ing(db: Store, clock: Clock) -> Ingest:
    return Ingest(db, clock)


def T(sub: str, site: str = "are-kall") -> str:
    return f"sot/v1/{site}/{sub}"


def group_commit(ing: Ingest, msgs: list[tuple[str, bytes]],
                 monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    """`msgs` delivered by MQTT (QoS 1, mids from 1) and filed in one group commit, as the MQTT
    side does when they arrive together: (the MqttIngest, the mids it acknowledged)."""
    import asyncio

    from gateway.ingest import MqttIngest

    loop = asyncio.new_event_loop()
    try:
        mq = MqttIngest(ing, loop, host="127.0.0.1", port=1)
        acks: list[int] = []
        monkeypatch.setattr(mq.client, "ack", lambda mid, qos: acks.append(mid))
        for mid, (topic, payload) in enumerate(msgs, 1):
            mq._deliver(topic, payload, mid, 1, mq.connects)
        mq._flush()
    finally:
        loop.close()
    return mq, acks


def escaped(doc: dict[str, Any]) -> bytes:
    """JSON with every non-ASCII character as an escape (the only way to send a surrogate)."""
    return json.dumps(doc, separators=(",", ":")).encode()


# --- text ---------------------------------------------------------------------------------

# One of each class the text policy refuses (docs/mqtt.md, "Text from a site").
UNSAFE = {
    "lone high surrogate": "\ud800",
    "lone low surrogate": "\udfff",
    "NUL": "\x00",
    "ESC (C0)": "\x1b",
    "newline (C0)": "\n",
    "DEL": "\x7f",
    "NEL (C1)": "\x85",
    "C1 CSI": "\x9b",
    "right-to-left override": "\u202e",
    "first strong isolate": "\u2068",
    "right-to-left mark": "\u200f",
    "arabic letter mark": "\u061c",
    "non-character U+FDD0": "\ufdd0",
    "non-character U+FFFF": "\uffff",
    "non-character U+10FFFF": "\U0010ffff",
    "byte order mark": "\ufeff",
}


def _places(bad: str) -> list[tuple[str, str, bytes]]:
    """(where, topic, payload) with `bad` spliced in, on every subtopic a site may use."""
    b = "x" + bad + "y"
    return [
        ("event data value", T("event"), escaped(event("device_offline", seq=0,
                                                   data={"device": b}))),
        ("event data key", T("event"), escaped(event("grid_lost", seq=0, data={b: 1}))),
        ("event type", T("event"), escaped(event(seq=0, type=b))),
        ("state device name", T("state"), escaped(state(devices={b: "online"}))),
        ("state alarm text", T("state"), escaped(state(genset={"alarms": [[b, "warning"]]}))),
        ("state unknown key", T("state"), escaped(state(extra={"note": b}))),
        ("birth device name", T("birth"), escaped(birth(devices=[{"name": b, "profile": "p"}]))),
        ("birth site name", T("birth"), escaped(birth(name=b))),
        ("status unknown key", T("status"), escaped(status(note=b))),
        ("crisis ack by", "sot/v1/are-kall/crisis/m1/ack",
         escaped({"id": "m1", "boot": 4, "seq": 3, "ts": TS, "by": b})),
    ]


CASES = [(f"{name} in {where}", topic, payload)
         for name, ch in UNSAFE.items() for where, topic, payload in _places(ch)]


@pytest.mark.parametrize("what, topic, payload", CASES, ids=[c[0] for c in CASES])
def test_text_outside_the_policy_is_refused_and_costs_only_its_message(
        ing: Ingest, db: Store, what: str, topic: str, payload: bytes):
    assert b"\\" in payload  # written as a JSON escape
    with db.batch():  # as the MQTT ingest files it: inside a group commit with others
        ing.handle(T("event", "krokom-follinge"), raw(event(seq=0)))
        r = ing.handle(topic, payload)
        ing.handle(T("event", "krokom-follinge"), raw(event(seq=1)))
    assert r.outcome == "rejected" and r.reason == "bad_text", (what, r)
    assert ing.stats()["rejected_by_reason"] == {"bad_text": 1}
    assert db.latest("are-kall") is None and db.events("are-kall") == []
    assert db.crisis_acks("are-kall") == []
    assert len(db.events("krokom-follinge")) == 2  # the rest of the batch committed
    row = db.rejected()[0]
    assert row["reason"] == "bad_text" and "U+" in row["detail"]
    # Everything the gateway keeps of it is text any page can show.
    for v in row.values():
        if isinstance(v, str):
            v.encode("utf-8")
            assert ingest_mod.UNSAFE_TEXT.search(v.replace("\n", "")) is None


@pytest.mark.parametrize("name", ["right-to-left override", "NEL (C1)", "non-character U+FFFF",
                                  "byte order mark", "non-character U+10FFFF"])
def test_unsafe_characters_written_as_themselves_are_refused_too(ing: Ingest, name: str):
    """Not only as JSON escapes: the raw UTF-8 of the character (the scan of the whole text)."""
    payload = json.dumps(birth(name="Kall" + UNSAFE[name]), ensure_ascii=False).encode()
    assert b"\\u" not in payload
    assert ing.handle(T("birth"), payload).reason == "bad_text"


def test_a_refused_event_is_acknowledged_to_the_site(ing: Ingest):
    ing.handle(T("event"), raw(event(seq=0)))
    bad = escaped(event("device_offline", seq=1, data={"device": "\ud800"}))
    assert ing.handle(T("event"), bad).reason == "bad_text"
    ing.handle(T("event"), raw(event(seq=2)))
    assert ing.progress() == ([("are-kall", 4, 2)], [])


def test_allowed_text_is_filed_in_nfc(ing: Ingest, db: Store):
    # "Ga" + combining diaeresis, and the same escaped: both filed as the one character ä.
    assert ing.handle(T("birth"), raw(birth(name="Ga\u0308rdsbutiken", seq=1))).outcome \
        == "stored"
    assert present(db.latest("are-kall"))["birth"]["name"] == "Gärdsbutiken"
    assert ing.handle(T("state"), raw(state(devices={"ta\u0308nk": "offline"}))).outcome \
        == "stored"
    assert "tänk" in present(db.latest("are-kall"))["state"]["devices"]
    ev = json.dumps(event("device_offline", seq=0, data={"device": "a\u030a"}),
                    ensure_ascii=False).encode()
    assert ing.handle(T("event"), ev).outcome == "stored"
    assert db.events("are-kall")[0]["data"]["device"] == "å"
    # Letters of any script, and symbols, are text like any other.
    name = "Кал ☃ 𝄞 Åre"
    assert ing.handle(T("birth"), raw(birth(name=name, seq=2))).outcome == "stored"
    assert present(db.latest("are-kall"))["birth"]["name"] == name


def test_keys_that_collide_once_normalised_are_refused(ing: Ingest):
    payload = json.dumps(state(devices={"ä": "online", "a\u0308": "offline"}),
                         ensure_ascii=False).encode()
    assert ing.handle(T("state"), payload).reason == "bad_text"


def test_the_store_refuses_unstorable_text_itself(db: Store):
    """The store's own guard, below the ingest: a ValueError for that write, never a failed
    batch; its records of hostile input never fail."""
    with db.batch():
        with pytest.raises(ValueError, match="U\\+D800"):
            db.add_event("are-kall", event(seq=0, data={"x": "\ud800"}), "{}", TS)
        with pytest.raises(ValueError, match="U\\+DC00"):
            db.add_crisis_ack("are-kall", {"id": "m1", "boot": 1, "seq": 1, "ts": TS,
                                           "by": "\udc00"}, TS)
        with pytest.raises(ValueError, match="out of range"):
            db.add_event("are-kall", event(seq=2**70), "{}", TS)
        db.add_event("are-kall", event(seq=1), "{}", TS)
        db.add_rejected(TS, "sot/v1/\ud800/state", "bad_text", "\x00\ud800\x1b[31m",
                        b'{"a":"\xed\xa0\x80"}')
        db.add_audit(TS, "\ud800", "x", "\x00", "\udfff")
    assert [e["seq"] for e in db.events("are-kall")] == [1]
    row = db.rejected()[0]
    assert "\\ud800" in row["topic"] and "\\x00" in row["detail"]
    assert "\x1b" not in row["detail"]


# --- one store failure costs one message ----------------------------------------------------

def test_a_store_failure_refuses_that_message_and_the_batch_commits(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture):
    """Not a text problem: the database refuses one row (a constraint). Only that message is
    refused, with reason `store`; the others of the batch, both sites, are filed."""
    real = db.add_event

    def add_event(site: str, msg: dict[str, Any], raw_: str, received: float) -> bool | None:
        if site == "are-kall" and msg["seq"] == 1:
            real(site, msg, raw_, received)  # a real row first, then a real constraint error
            one(db, "INSERT INTO events (id, site, boot, seq, ts, type, data, hist, "
                    "received) SELECT id, site, boot, seq, ts, type, data, hist, "
                    "received FROM events LIMIT 1 RETURNING id")
        return real(site, msg, raw_, received)

    monkeypatch.setattr(db, "add_event", add_event)
    with caplog.at_level(logging.WARNING, logger="gateway.ingest"), db.batch():
        results = [ing.handle(T("event", site), raw(event(seq=seq)))
                   for seq in range(3) for site in ("are-kall", "krokom-follinge")]
        ing.handle(T("state"), raw(state(seq=30)))
    assert [r.outcome for r in results] == ["stored"] * 2 + ["rejected", "stored"] + \
        ["stored"] * 2
    # the driver's name for a constraint error: sqlite3's, or psycopg's for PostgreSQL's
    error = "IntegrityError" if isinstance(db, SqliteStore) else "UniqueViolation"
    assert results[2].reason == "store" and error in results[2].detail
    assert [e["seq"] for e in db.events("are-kall")] == [2, 0]
    assert len(db.events("krokom-follinge")) == 3
    assert present(db.latest("are-kall"))["state"]["seq"] == 30
    assert ing.stats()["rejected_by_reason"] == {"store": 1}
    assert [r.message for r in caplog.records].count(
        "rejected sot/v1/are-kall/event: store: " + results[2].detail) == 1
    # The refused event does not block the site's acknowledged run.
    assert ("are-kall", 4, 2) in ing.progress()[0]


def test_a_failure_of_the_database_itself_is_not_blamed_on_a_message(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch):
    def add_event(*a: Any) -> bool:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(db, "add_event", add_event)
    with pytest.raises(sqlite3.OperationalError):
        ing.handle(T("event"), raw(event(seq=0)))
    assert ing.stats()["rejected"] == 0


# --- numbers --------------------------------------------------------------------------------

def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = doc
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value
    return doc


# (topic, a valid message, dotted path, the largest value a site may send, one past it)
NUMBERS: list[tuple[str, Any, str, float, float]] = [
    ("state", state, "boot", 2**32 - 1, 2**32),
    ("state", state, "seq", 2**32 - 1, 2**32),
    ("state", state, "grid.v", 1000, 1000.1),
    ("state", state, "grid.f", 100, 1e6),
    ("state", state, "grid.since", TS, 4102444801),
    ("state", state, "genset.battery_v", 100, 1e9),
    ("state", state, "genset.run_hours", 1e6, 1e12),
    ("state", state, "genset.run_s", 315360000, 10**15),
    ("state", state, "genset.alarms_more", 2**32 - 1, 2**40),
    ("state", state, "fuel.pct", 150, 1e10),
    ("state", state, "fuel.litres", 1e6, 1e300),
    ("state", state, "fuel.burn_lph", 1e4, 1e20),
    ("state", state, "fuel.hours_left", 1e6, 10**20),
    ("state", state, "fuel.refuel_by", 8589934592, 10**13),
    ("state", state, "tanks.diesel", 1e6, 1e18),
    ("state", state, "capability.hours_left", 1e6, 1e100),
    ("state", state, "capability.fuel_for_sale.diesel", 1e6, 2**53),
    ("state", state, "pumps.available", 255, 2**31),
    ("birth", birth, "heartbeat_s", 86400, 86401),
    ("birth", birth, "dropped", 2**32 - 1, 2**50),
    ("birth", birth, "resets", 2**32 - 1, 2**50),
    ("birth", lambda: birth(journal={"bytes": 1, "pending": 1, "oldest": None}),
     "journal.bytes", 2**32 - 1, 2**50),
    ("event", lambda: event("grid_restored", seq=0), "data.outage_s", 315360000, 1e13),
    ("event", lambda: event("grid_restored", seq=0), "data.v", 1000, 1e13),
    ("event", lambda: event("gen_running", seq=0), "data.after_s", 315360000, 1e13),
    ("event", lambda: event("gen_stopped", seq=0), "data.run_s", 315360000, -1),
    ("event", lambda: event("gen_max_runtime", seq=0), "data.max_h", 10000, 1e7),
    ("event", lambda: event("refuelled", seq=0), "data.litres", 1e6, 1e9),
    ("event", lambda: event("refuelled", seq=0), "data.to", 150, 1e9),
    ("event", lambda: event("safe_mode", seq=0), "data.resets", 2**32 - 1, 2**33),
    ("status", status, "bdseq", 2**32 - 1, 2**32),
    ("crisis/m1/ack", lambda: {"id": "m1", "boot": 4, "seq": 3, "ts": TS, "by": "panel"},
     "seq", 2**32 - 1, 2**32),
    ("crisis/m1/ack", lambda: {"id": "m1", "boot": 4, "seq": 3, "ts": TS, "by": "panel"},
     "ts", TS, 2**63),
]


@pytest.mark.parametrize("sub, make, path, top, past", NUMBERS,
                         ids=[f"{n[0]}.{n[2]}" for n in NUMBERS])
def test_every_number_has_a_range(tmp_path: Path, sub: str, make: Any, path: str, top: float,
                                  past: float):
    """At the top of its range a value is filed and every reader copes (the overview, the
    alert rules); one past it is refused, and the site's next message is filed as usual."""
    rig = Rig(tmp_path / "sot.sqlite3")
    try:
        r = rig.ingest.handle(T(sub), raw(_set(make(), path, past)))
        assert r.outcome == "rejected" and r.reason in ("schema", "not_json"), r
        ok = _set(make(), path, top)
        if sub == "state":
            ok["seq"] = ok["seq"] if path == "seq" else 18
        assert rig.ingest.handle(T(sub), raw(ok)).outcome == "stored"
        rig.evaluate()
        assert rig.engine.stats()["site_failures"] == {}
        rig.store.sites_overview(rig.clock.t)
        rig.store.state_history("are-kall")
        rig.store.events("are-kall")
    finally:
        rig.close()


def test_hypothesis_numbers_anywhere_never_break_store_or_rules(tmp_path: Path):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    rig = Rig(tmp_path / "sot.sqlite3")
    paths = [n[2] for n in NUMBERS if n[0] == "state" and n[2] not in ("boot", "seq")]
    numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    seq = iter(range(100, 10**6))

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(values=st.dictionaries(st.sampled_from(paths), numbers, min_size=1))
    def check(values: dict[str, float]) -> None:
        doc = state(seq=next(seq))
        for p, v in values.items():
            _set(doc, p, v)
        r = rig.ingest.handle(T("state"), json.dumps(doc).encode())
        assert r.outcome in ("stored", "rejected"), r
        rig.evaluate()
        assert rig.engine.stats()["site_failures"] == {}
        rig.store.sites_overview(rig.clock.t)

    try:
        check()
    finally:
        rig.close()


# --- the alert engine: one site's data cannot stop the others -----------------------------

def test_one_sites_poisoned_data_does_not_stop_site_silent_elsewhere(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    rig = Rig(tmp_path / "sot.sqlite3")
    try:
        rig.state("are-kall")
        rig.state("krokom-follinge")
        rig.advance(60)
        # A state as an older gateway filed it (no ranges then): a number no float holds. Put
        # in the store directly: the ingest refuses it today.
        poison = {**normal_state(fuel={"hours_left": 10**400}), "boot": 1, "seq": 999,
                  "ts": int(rig.clock.t)}
        text = json.dumps(poison)
        rig.store.put_state("are-kall", json.loads(text), text, rig.clock.t)
        del rig.current["are-kall"]  # are-kall says no more; its poisoned state stays latest
        rig.go_silent("krokom-follinge")
        with caplog.at_level(logging.ERROR, logger="gateway.alerts.engine"):
            rig.advance(30 * 60)
        assert "site_silent:krokom-follinge" in rig.firing()
        failures = rig.engine.stats()["site_failures"]
        assert set(failures) == {"are-kall"} and failures["are-kall"] >= 2
        logged = [r for r in caplog.records if "are-kall" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
    finally:
        rig.close()


def test_text_filed_before_the_policy_costs_only_the_alerts_it_is_in(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """A state an older gateway filed with a lone surrogate in a device name: the alert that
    would carry the name cannot be written. That action is dropped and counted; the round's
    other actions, and other sites' alerts, are written."""
    rig = Rig(tmp_path / "sot.sqlite3")
    try:
        rig.state("are-kall")
        rig.state("krokom-follinge")
        rig.advance(60)
        doc = {**normal_state(devices={"tank\ud800": "offline"}), "boot": 1, "seq": 999,
               "ts": int(rig.clock.t)}
        text = escaped(doc)
        rig.store.put_state("are-kall", json.loads(text), text.decode(), rig.clock.t)
        del rig.current["are-kall"]
        rig.go_silent("krokom-follinge")
        with caplog.at_level(logging.ERROR, logger="gateway.alerts.engine"):
            rig.advance(30 * 60)
        assert "site_silent:krokom-follinge" in rig.firing()
        assert "site_silent:are-kall" in rig.firing()
        assert rig.engine.stats()["failed_actions"] >= 2
        assert not any(k.startswith("device_offline:are-kall") for k in rig.open_alerts())
        assert len([r for r in caplog.records if "device_offline:are-kall" in
                    r.getMessage()]) == 1  # logged once, however often it is tried
    finally:
        rig.close()


def test_a_refuel_time_past_any_calendar_does_not_break_the_fuel_rule(tmp_path: Path):
    rig = Rig(tmp_path / "sot.sqlite3")
    try:
        low = {"hours_left": 3.0, "refuel_by": 10**13}
        doc = {**normal_state(fuel=low), "boot": 1, "seq": 5, "ts": int(rig.clock.t)}
        text = json.dumps(doc)
        rig.store.put_state("are-kall", doc, text, rig.clock.t)
        rig.advance(600)
        fuel = rig.open_alerts()["fuel_low:are-kall"]
        assert "okänd tid" in fuel.sv and "unknown time" in fuel.en
        assert rig.engine.stats()["site_failures"] == {}
    finally:
        rig.close()


# --- time and order a site claims -----------------------------------------------------------

def test_a_time_ahead_of_the_gateways_clock_is_refused(ing: Ingest, db: Store,
                                                        clock: Clock):
    for sub, make in (("state", state), ("birth", birth), ("status", status),
                      ("event", lambda **k: event(seq=0, **k))):
        r = ing.handle(T(sub), raw(make(ts=TS + MAX_FUTURE_S + 1)))
        assert r.reason == "clock_ahead", (sub, r)
    assert db.latest("are-kall") is None and db.events("are-kall") == []
    assert ing.handle(T("state"), raw(state(ts=TS + MAX_FUTURE_S))).outcome == "stored"


def test_a_site_cannot_pin_its_latest_state(ing: Ingest, db: Store, clock: Clock):
    """Boot 2^32-1 and seq 2^32-1 with the latest time the gateway takes: the real messages
    after it are taken as soon as their time is later; a 2100 date never gets in."""
    assert ing.handle(T("state"), raw(state(boot=2**32 - 1, seq=2**32 - 1,
                                            ts=4102444800))).reason == "clock_ahead"
    fake = state(boot=2**32 - 1, seq=2**32 - 1, ts=TS + MAX_FUTURE_S, mode="backup_failed")
    assert ing.handle(T("state"), raw(fake)).outcome == "stored"
    assert ing.handle(T("state"), raw(state(seq=18, ts=TS + 60))).outcome == "outdated"
    clock.t = TS + MAX_FUTURE_S + 1
    assert ing.handle(T("state"), raw(state(seq=19, ts=int(clock.t)))).outcome == "stored"
    assert present(db.latest("are-kall"))["state"]["mode"] == "on_backup"
    # Same boot, a seq claimed too high: the same rule.
    ing.handle(T("birth"), raw(birth(seq=2**32 - 1, ts=int(clock.t), name="Fake")))
    assert ing.handle(T("birth"), raw(birth(seq=20, ts=int(clock.t) + 1))).outcome == "stored"
    assert present(db.latest("are-kall"))["birth"]["name"] == "Kall"


def test_a_controller_whose_boot_counter_restarted_is_heard(ing: Ingest, db: Store):
    ing.handle(T("state"), raw(state(boot=812, seq=40)))
    # flash wiped or controller replaced: boot 0, seq 0, a later time
    assert ing.handle(T("state"), raw(state(boot=0, seq=0, ts=TS + 5))).outcome == "stored"
    # the broker's retained copy of the old one, replayed: older, not taken
    assert ing.handle(T("state"), raw(state(boot=812, seq=40))).outcome == "outdated"


def test_a_birth_cannot_postpone_stale_or_silent(ing: Ingest, db: Store, clock: Clock):
    ing.handle(T("birth"), raw(birth(heartbeat_s=86400)))
    ing.handle(T("state"), raw(state()))
    row = next(r for r in db.sites_overview(TS + 91) if r.id == "are-kall")
    assert row.heartbeat_s == 30 and row.stale is True
    assert db.snapshots("are-kall")[0].heartbeat_s == 30
    # A shorter heartbeat than configured is believed: stale sooner is on the safe side.
    ing.handle(T("birth"), raw(birth(seq=2, heartbeat_s=10)))
    assert db.snapshots("are-kall")[0].heartbeat_s == 10


def test_sot_site_reset_forgets_the_order_and_is_audited(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "sot.sqlite3"
    clock = Clock()
    store = SqliteStore(path)
    store.upsert_sites(SITES)
    ing = Ingest(store, clock)
    fake = state(boot=2**32 - 1, seq=2**32 - 1, ts=TS + MAX_FUTURE_S, mode="backup_failed")
    ing.handle(T("state"), raw(fake))
    ing.handle(T("birth"), raw(birth(boot=2**32 - 1, ts=TS + MAX_FUTURE_S)))
    assert ing.handle(T("state"), raw(state(seq=18, ts=TS + 1))).outcome == "outdated"
    store.close()

    assert cli_main(["site", "reset", "are-kall", "--by", "samordnare", "--db", str(path)]) == 0
    assert "are-kall" in capsys.readouterr().out
    assert cli_main(["site", "reset", "nowhere", "--db", str(path)]) == 1

    store = SqliteStore(path)
    try:
        assert present(store.latest("are-kall"))["state"] is None
        assert present(store.site_overview("are-kall", TS)).mode is None
        ing = Ingest(store, clock)
        assert ing.handle(T("state"), raw(state(seq=19, ts=TS + 2))).outcome == "stored"
        assert ing.handle(T("birth"), raw(birth(ts=TS + 2))).outcome == "stored"
        assert present(store.latest("are-kall"))["state"]["mode"] == "on_backup"
        audit = store.audit_log()[0]
        assert (audit["actor"], audit["action"], audit["target"]) == \
            ("samordnare", "site_reset", "are-kall")
    finally:
        store.close()


def test_silence_after_a_reset_counts_from_the_reset(tmp_path: Path):
    rig = Rig(tmp_path / "sot.sqlite3")
    try:
        rig.advance(3600)  # listening for an hour, are-kall never spoke... then it did
        rig.state("are-kall")
        rig.advance(60)
        rig.store.reset_site("are-kall", "samordnare", rig.clock.t)
        del rig.current["are-kall"]
        rig.evaluate()
        assert "site_silent:are-kall" not in rig.open_alerts()
        rig.advance(5 * 60)
        assert "site_silent:are-kall" in rig.firing()
    finally:
        rig.close()


# --- the group commit: a failed COMMIT files its messages one by one ------------------------

def test_a_message_the_store_refuses_in_a_group_commit_costs_only_itself(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch):
    """Through the MQTT side's group commit (first tried without a savepoint per message): the
    database refuses one event (a real constraint error). The try is rolled back and the batch
    filed again with savepoints: that event is refused and acknowledged, every other message of
    both sites is filed and acknowledged, each counted once."""


    real = db.add_event

    def add_event(site: str, msg: dict[str, Any], raw_: str, received: float) -> bool | None:
        if site == "krokom-follinge" and msg["seq"] == 1:
            one(db, "INSERT INTO events (id, site, boot, seq, ts, type, data, hist, "
                    "received) SELECT id, site, boot, seq, ts, type, data, hist, "
                    "received FROM events LIMIT 1 RETURNING id")
        return real(site, msg, raw_, received)

    monkeypatch.setattr(db, "add_event", add_event)
    msgs = [(T("event", site), raw(event(seq=seq))) for seq in range(3)
            for site in ("are-kall", "krokom-follinge")]
    msgs += [(T("state"), raw(state(seq=30))), (T("state"), raw(state(seq=29)))]
    mq, acks = group_commit(ing, msgs, monkeypatch)
    assert mq.redone == 1
    assert acks == list(range(1, len(msgs) + 1))
    assert sorted(e["seq"] for e in db.events("are-kall")) == [0, 1, 2]
    assert sorted(e["seq"] for e in db.events("krokom-follinge")) == [0, 2]
    assert present(db.latest("are-kall"))["state"]["seq"] == 30  # 29 came later but is older
    stats = ing.stats()
    assert stats["accepted"] == 6 and stats["rejected_by_reason"] == {"store": 1}


def test_a_store_failure_after_the_commit_delays_the_sites_ack_only(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch):
    """The group commit is done and its messages acknowledged to the broker, then the store
    fails while the gateway reads what to acknowledge to the sites. Nothing escapes the
    callback; the site's acknowledgement comes after the next commit, covering both."""
    from gateway.store import StoreUnavailable

    published: list[tuple[str, Any]] = []
    real = db.event_seqs_many
    calls = {"n": 0}

    def failing_once(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreUnavailable("the database went away")
        return real(*a, **kw)

    monkeypatch.setattr(db, "event_seqs_many", failing_once)
    import paho.mqtt.client as paho_client
    monkeypatch.setattr(paho_client.Client, "publish",
                        lambda self, topic, payload=None, qos=0, retain=False:
                        published.append((topic, json.loads(payload))))
    _mq, acks = group_commit(ing, [(T("event"), raw(event(seq=0)))], monkeypatch)
    assert acks == [1] and [e["seq"] for e in db.events("are-kall")] == [0]
    assert not [t for t, _ in published if t.endswith("/ack")]
    _mq, acks = group_commit(ing, [(T("event"), raw(event(seq=1)))], monkeypatch)
    assert acks == [1]
    told = [p for t, p in published if t == "sot/v1/are-kall/ack"]
    assert [(p["boot"], p["seq"]) for p in told] == [(4, 1)], told


def test_a_group_commits_events_are_each_filed_and_counted_once(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch):
    """The events of a group commit are inserted together at its end (on PostgreSQL in one
    pipeline, whose answer says which were new). A copy of an event filed before, two copies
    of one in the same batch, and a command result: each event is one row, counted once as
    filed or as a duplicate, and the command result is in the audit log once. Until then
    `handle` says "pending" of each, not "stored"."""
    assert ing.handle(T("event"), raw(event(seq=1))).outcome == "stored"
    outcomes: list[str] = []
    handle = ing.handle

    def spy(topic: str, payload: bytes) -> Any:
        r = handle(topic, payload)
        outcomes.append(r.outcome)
        return r

    monkeypatch.setattr(ing, "handle", spy)
    result = event("cmd_result", seq=3, data={"id": "c7", "name": "gen_start", "result": "done"})
    msgs = [(T("event"), raw(event(seq=1, hist=True))),  # filed before: a duplicate
            (T("event"), raw(event(seq=2))), (T("event"), raw(event(seq=2))),  # one new
            (T("event"), raw(result)),
            (T("event", "krokom-follinge"), raw(event(seq=1)))]  # another site, same seq
    mq, acks = group_commit(ing, msgs, monkeypatch)
    assert acks == [1, 2, 3, 4, 5] and mq.redone == 0
    if isinstance(db, PgStore):  # the events wait for the pipeline at the end
        assert outcomes == ["pending", "pending", "duplicate", "pending", "pending"]
    else:
        assert outcomes == ["duplicate", "stored", "duplicate", "stored", "stored"]
    assert sorted(e["seq"] for e in db.events("are-kall")) == [1, 2, 3]
    assert [e["seq"] for e in db.events("krokom-follinge")] == [1]
    stats = ing.stats()
    assert stats["accepted"] == 1 + 3 and stats["duplicates"] == 2
    audit = [a["target"] for a in db.audit_log() if a["action"] == "cmd_result"]
    assert audit == ["are-kall/gen_start/c7"]


def test_a_group_commit_whose_deferred_writes_fail_is_filed_again_with_savepoints(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch):
    """The latest messages of a group commit are written together at its end. When that write
    fails (here once, as a constraint would), no message is lost or refused for it: the batch
    is filed again, message by message in savepoints, and every message acknowledged."""


    real = db.flush_writes
    failed: list[bool] = []

    def flush_writes() -> None:
        if not failed:
            failed.append(True)
            raise ValueError("forced (test)")
        real()

    monkeypatch.setattr(db, "flush_writes", flush_writes)
    msgs = [(T("state"), raw(state(seq=30))), (T("birth"), raw(birth(seq=31))),
            (T("state", "krokom-follinge"), raw(state(seq=5)))]
    mq, acks = group_commit(ing, msgs, monkeypatch)
    assert failed and mq.redone == 1 and acks == [1, 2, 3]
    assert present(db.latest("are-kall"))["state"]["seq"] == 30
    assert present(db.latest("are-kall"))["birth"]["seq"] == 31
    assert present(db.latest("krokom-follinge"))["state"]["seq"] == 5
    assert ing.stats()["accepted"] == 3 and ing.stats()["rejected"] == 0


def test_two_workers_filing_one_site_never_put_its_latest_state_back(
        backend: Backend, clock: Clock):
    """Two gateway workers share a site's messages (a shared subscription hands them out in
    turn). Worker A files state 10 and has not committed yet; worker B then files the older
    state 9 of the same site. B waits for A's commit and files 9 as outdated: the latest stays
    10 (without the lock taken at the start of a group commit, B's write landed after A's)."""
    import threading

    a_store = backend.open()
    try:
        a_store.upsert_sites(SITES)
        a = Ingest(a_store, clock)
        assert a.handle(T("state"), raw(state(seq=5))).outcome == "stored"
        results: list[str] = []

        def worker_b() -> None:
            b_store = backend.open()  # its own connection, in its own thread
            try:
                b = Ingest(b_store, clock)
                with b_store.batch():
                    b.begin_batch([T("state")])
                    results.append(b.handle(T("state"), raw(state(seq=9))).outcome)
                b.end_batch()
            finally:
                b_store.close()

        with a_store.batch():
            a.begin_batch([T("state")])
            assert a.handle(T("state"), raw(state(seq=10))).outcome == "stored"
            other = threading.Thread(target=worker_b)
            other.start()
            other.join(1.0)
            assert other.is_alive(), "B must wait for A's transaction"
        a.end_batch()
        other.join(10)
        assert results == ["outdated"]
        assert present(a_store.latest("are-kall"))["state"]["seq"] == 10
    finally:
        a_store.close()

@pytest.mark.parametrize("error, acked_bad", [(sqlite3.IntegrityError, True),
                                              (sqlite3.OperationalError, False)])
def test_a_failed_group_commit_files_its_messages_one_by_one(
        ing: Ingest, db: Store, monkeypatch: pytest.MonkeyPatch, error: type,
        acked_bad: bool):
    """The batch's COMMIT fails (forced by a stand-in for `Store.batch`): every message is
    filed again on its own. The one whose own commit fails too is refused and acknowledged,
    unless the failure is the database's (OperationalError): that one stays unacknowledged,
    for the broker to deliver again. Everything else is filed and acknowledged."""
    import contextlib


    real_batch = db.batch
    commits = {"n": 0}

    @contextlib.contextmanager
    def batch():
        commits["n"] += 1
        with real_batch():
            yield
            if commits["n"] in (1, 3):  # the group's commit, then message 2's own (Föllinge)
                raise error("forced at COMMIT (test)")

    monkeypatch.setattr(db, "batch", batch)
    msgs = [(T("event"), raw(event(seq=0))), (T("event", "krokom-follinge"),
                                              raw(event(seq=0))),
            (T("event"), raw(event(seq=1))), (T("state"), raw(state()))]
    mq, acks = group_commit(ing, msgs, monkeypatch)
    assert db.events("krokom-follinge") == []  # message 2, refused alone
    assert sorted(e["seq"] for e in db.events("are-kall")) == [0, 1]
    assert present(db.latest("are-kall"))["state"]["seq"] == 17
    assert acks == ([1, 2, 3, 4] if acked_bad else [1, 3, 4])
    stats = ing.stats()
    assert stats["accepted"] == 3  # counted once, not once per try
    assert stats["rejected_by_reason"] == ({"store": 1} if acked_bad else {})
