"""The store on SQLite and on PostgreSQL (every test runs against both, `pg_cluster.py`):
migrations, durability settings, duplicates, staleness with a moved clock."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gw_samples import SITES, TS, birth, event, present, state, status
from pg_cluster import (  # noqa: F401 - fixtures
    Backend,
    Cluster,
    backend_fixture,
    one,
    pg_cluster_fixture,
    store_fixture,
)

from gateway import store as store_mod
from gateway.store import (
    MIGRATIONS,
    PgStore,
    SiteInfo,
    SqliteStore,
    Store,
    StoreFailed,
    StoreUnavailable,
    open_store,
)
from gateway.store import telemetry as telemetry_mod


@pytest.fixture
def db(store: Store) -> Iterator[Store]:
    store.upsert_sites(SITES)
    yield store


def put(s: Store, kind: str, doc: dict, received: float) -> None:
    getattr(s, f"put_{kind}")("are-kall", doc, json.dumps(doc), received)


def test_fresh_database_is_migrated_durable_and_intact(db: Store, backend: Backend):
    assert db.schema_version == len(MIGRATIONS)
    if backend.name == "sqlite":
        assert one(db, "PRAGMA journal_mode") == "wal"
        assert one(db, "PRAGMA synchronous") == 2  # FULL
    else:
        # a COMMIT returns once the WAL is flushed (the session turns it on if the server
        # has it off)
        assert one(db, "SHOW synchronous_commit") == "on"
    assert db.integrity_check() == "ok"


def test_reopen_keeps_data_and_runs_no_migration_twice(backend: Backend):
    s = backend.open()
    s.upsert_sites(SITES)
    assert s.add_event("are-kall", event(), "{}", TS)
    s.close()
    for _ in range(2):
        s = backend.open()
        assert s.schema_version == len(MIGRATIONS)
        assert s.integrity_check() == "ok"
        assert s.site_ids() == {x.id for x in SITES}
        assert len(s.events("are-kall")) == 1
        s.close()


def test_database_from_a_newer_gateway_is_refused(backend: Backend):
    backend.open().close()
    backend.set_schema_version(len(MIGRATIONS) + 1)
    with pytest.raises(RuntimeError, match="newer"):
        backend.open()


def test_event_duplicate_is_ignored_and_reported(db: Store):
    assert db.add_event("are-kall", event(seq=20), "{}", TS) is True
    assert db.add_event("are-kall", event(seq=20, type="gen_running",
                                          data={"after_s": 1}), "{}", TS + 5) is False
    assert db.add_event("are-kall", event(seq=20, boot=5), "{}", TS) is True  # new boot
    assert db.add_event("harjedalen-hede", event(seq=20), "{}", TS) is True  # other site
    evs = db.events("are-kall")
    assert len(evs) == 2
    assert all(e["type"] == "grid_lost" for e in evs)  # the first one filed stays


def test_filed_seqs_of_many_sites_in_one_read_match_one_site_at_a_time(db: Store):
    """What the ingest reads after a group commit to acknowledge each site's journal: the same
    seqs as asking site by site, each (site, boot) from its own `after`, at most `limit` each."""
    for seq in (0, 1, 2, 4, 5, 9):
        db.add_event("are-kall", event(seq=seq), "{}", TS)
    for seq in (3, 4):
        db.add_event("are-kall", event(seq=seq, boot=5), "{}", TS)
    for seq in range(7):
        db.add_event("harjedalen-hede", event(seq=seq), "{}", TS)
    boot = event()["boot"]
    keys = [("are-kall", boot, 1), ("are-kall", 5, -1), ("harjedalen-hede", boot, -1),
            ("krokom-follinge", boot, -1)]
    many = db.event_seqs_many(keys, limit=4)
    assert many == {(site, b): db.event_seqs(site, b, after, limit=4)
                    for site, b, after in keys if db.event_seqs(site, b, after)}
    assert many == {("are-kall", boot): [2, 4, 5, 9], ("are-kall", 5): [3, 4],
                    ("harjedalen-hede", boot): [0, 1, 2, 3]}
    assert db.event_seqs_many([]) == {}


def test_events_newest_first_with_limit(db: Store):
    for i, t in enumerate(["grid_lost", "mode_changed", "gen_running"]):
        db.add_event("are-kall", event(t, seq=20 + i, ts=TS + i), "{}", TS + i)
    db.add_event("are-kall", event("device_offline", seq=30, ts=TS - 100, hist=True), "{}", TS + 9)
    evs = db.events("are-kall")
    assert [e["type"] for e in evs] == ["gen_running", "mode_changed", "grid_lost",
                                        "device_offline"]
    assert evs[-1]["hist"] is True and evs[0]["hist"] is False
    assert evs[0]["data"] == {"after_s": 9.5}
    assert [e["seq"] for e in db.events("are-kall", limit=2)] == [22, 21]
    assert [(e["type"], e["seq"]) for e in db.events_of_type("are-kall", "grid_lost")] == \
        [("grid_lost", 20)]


def test_latest_status_birth_state_with_received_time(db: Store):
    assert db.latest("are-kall") is None
    put(db, "status", status(), TS + 1)
    put(db, "birth", birth(), TS + 2)
    latest = present(db.latest("are-kall"))
    assert latest["status"]["state"] == "online" and latest["status"]["received"] == TS + 1
    assert latest["birth"]["fw"] == "0.1.0"
    assert latest["state"] is None
    put(db, "state", state(), TS + 3)
    put(db, "state", state(seq=18, mode="normal"), TS + 4)
    assert present(db.latest("are-kall"))["state"]["mode"] == "normal"


def overview(db: Store, now: float, site: str = "are-kall") -> dict:
    """The site's row as `GET /api/sites` gives it."""
    return next(r.as_json() for r in db.sites_overview(now) if r.id == site)


def test_staleness_follows_the_clock_passed_in(db: Store):
    row = overview(db, TS)
    assert row["stale"] is True and row["age_s"] is None and row["mode"] is None
    put(db, "state", state(), TS)
    # no birth: the site's configured heartbeat (30 s) -> stale after 90 s
    assert overview(db, TS + 89)["stale"] is False
    assert overview(db, TS + 89)["age_s"] == 89
    assert overview(db, TS + 91)["stale"] is True
    # a birth that carries heartbeat_s wins
    put(db, "birth", birth(heartbeat_s=10), TS)
    assert overview(db, TS + 29)["stale"] is False
    assert overview(db, TS + 31)["stale"] is True
    put(db, "state", state(seq=18, ts=TS + 31), TS + 31)
    assert overview(db, TS + 31)["stale"] is False


def test_heartbeat_default_when_neither_birth_nor_config_has_one(store: Store):
    s = store
    s.upsert_sites([SiteInfo("are-kall", "Kall", "Åre", 63.0, 13.0)])
    put(s, "state", state(), TS)
    assert overview(s, TS + 3 * store_mod.DEFAULT_HEARTBEAT_S - 1)["stale"] is False
    assert overview(s, TS + 3 * store_mod.DEFAULT_HEARTBEAT_S + 1)["stale"] is True


def test_age_uses_the_older_of_controller_ts_and_receive_time(db: Store):
    # Retained state replayed long after it was made: its ts says how old it is.
    put(db, "state", state(ts=TS - 1000), TS)
    assert overview(db, TS)["stale"] is True
    # Controller clock 10 min ahead: the receive time keeps a silent site from looking fresh.
    put(db, "state", state(seq=18, ts=TS + 600), TS)
    assert overview(db, TS + 100)["stale"] is True


def test_overview_shape(db: Store):
    put(db, "status", status(), TS)
    put(db, "state", state(), TS)
    row = overview(db, TS + 5)
    assert row == {
        "id": "are-kall", "name": "Kall", "municipality": "Åre", "lat": 63.4667, "lon": 13.25,
        "status": "online", "fw": None, "heartbeat_s": 30, "mode": "on_backup",
        "grid_state": "lost", "genset_state": "running", "fuel_pct": 62.0, "hours_left": 72.9,
        "devices": {"grid": "online", "genset": "online", "tank": "offline"},
        "updated_ts": TS, "age_s": 5.0, "stale": False,
    }
    assert [r.id for r in db.sites_overview(TS)] == ["harjedalen-hede", "krokom-follinge",
                                                         "are-kall"]  # by municipality


def test_sites_leaving_the_config_are_kept_but_inactive(db: Store):
    db.add_event("krokom-follinge", event(), "{}", TS)
    db.upsert_sites(SITES[:2])
    assert db.site_ids() == {"are-kall", "harjedalen-hede"}
    assert [r.id for r in db.sites_overview(TS)] == ["harjedalen-hede", "are-kall"]
    assert len(db.events("krokom-follinge")) == 1
    db.upsert_sites([SiteInfo("are-kall", "Kall by", "Åre", 63.0, 13.0)])
    assert overview(db, TS)["name"] == "Kall by"


def test_rejected_rows_keep_an_excerpt_and_are_capped(db: Store, monkeypatch):
    monkeypatch.setattr(telemetry_mod, "REJECTED_KEEP", 50)
    db.add_rejected(TS, "sot/v1/x/state", "unknown_site", "x", b"\xff" + b"a" * 500)
    row = db.rejected(1)[0]
    assert row["reason"] == "unknown_site" and row["payload"].startswith("\\xffaaa")
    assert row["payload"].endswith("(501 bytes)")
    for i in range(250):
        db.add_rejected(TS + i, "t", "not_json", "", b"{")
    kept = one(db, "SELECT COUNT(*) FROM rejected")
    assert 50 <= kept <= 150
    assert db.stats()["rejected_kept"]["not_json"] == kept
    assert db.integrity_check() == "ok"


def test_stats(db: Store):
    db.add_event("are-kall", event(), "{}", TS)
    st = db.stats()
    assert st["sites"] == 3 and st["events"] == 1 and st["schema_version"] == len(MIGRATIONS)


def test_a_failed_write_in_a_savepoint_leaves_the_batch_whole(db: Store):
    """What the ingest's group commit relies on: a statement the database refuses (here a CHECK
    constraint) costs its savepoint, and the rest of the transaction still commits (PostgreSQL
    would otherwise refuse every later statement of the transaction)."""
    rec = store_mod.AlertRecord(id=0, key="k", rule="grid_lost", site="are-kall",
                                municipality="Åre", detail="",
                                severity="warning", status="firing", started=TS)
    aid = db.open_alert(rec)
    assert aid is not None
    with db.batch():
        with pytest.raises(Exception, match="(?i)check"):
            with db.savepoint():
                db.add_event("are-kall", event(seq=1), "{}", TS)
                db.update_alert(aid, ("firing",), status="bogus")
        assert db.add_event("are-kall", event(seq=2), "{}", TS)
    assert [e["seq"] for e in db.events("are-kall")] == [2]
    assert db.alert(aid).status == "firing"  # type: ignore[union-attr]
    assert db.open_alert(rec) is None  # one open alert per key
    with pytest.raises(ValueError, match="U\\+0000"):  # text neither database may refuse later
        db.add_event("are-kall", event(seq=3, type="grid\x00lost"), "{}", TS)


def test_alerts_by_municipality_in_and_out(db: Store):
    """The alert engine reads a part's alerts by its municipalities, and its timed round the
    rest: the alerts outside the municipalities it has just evaluated (open ones, and those
    resolved within the window asked for)."""
    def alert(key: str, muni: str) -> int:
        rec = store_mod.AlertRecord(id=0, key=key, rule="grid_lost", site=None,
                                    municipality=muni, detail="", severity="warning",
                                    status="firing", started=TS)
        aid = db.open_alert(rec)
        assert aid is not None
        return aid

    alert("a", "Åre")
    alert("k", "Krokom")
    alert("g", "*")  # the gateway's own
    gone = alert("h", "Härjedalen")
    db.update_alert(gone, ("firing",), status="resolved", resolved=TS + 5)

    def keys(**kw: Any) -> list[str]:
        return sorted(a.key for a in db.alerts(**kw))

    assert keys(municipalities=["Åre", "Härjedalen"]) == ["a"]
    assert keys(municipalities=["Åre", "Härjedalen"], resolved_since=TS) == ["a", "h"]
    assert keys(not_municipalities=["Åre"]) == ["g", "k"]
    assert keys(not_municipalities=["Åre", "Krokom"], resolved_since=TS) == ["g", "h"]
    assert keys(not_municipalities=[]) == ["a", "g", "k"]


def test_latest_states_gives_every_site_with_a_state_in_one_call(db: Store):
    """The overview's batch read: each site's latest state with its receive time; a site
    without a state is left out; the last one put is the one given (the ingest decides what is
    newer before it puts)."""
    assert db.latest_states() == {}
    put(db, "state", state(seq=16, ts=TS - 30, fuel={"pct": 70.0}), TS)
    put(db, "state", state(seq=17, ts=TS, fuel={"pct": 62.0}), TS + 1)
    doc = state(seq=5, ts=TS, mode="normal")
    db.put_state("krokom-follinge", doc, json.dumps(doc), TS + 3)
    got = db.latest_states()
    assert set(got) == {"are-kall", "krokom-follinge"}  # Hede has none
    assert got["are-kall"]["fuel"]["pct"] == 62.0 and got["are-kall"]["received"] == TS + 1
    assert got["krokom-follinge"]["mode"] == "normal"
    assert got["are-kall"] == db.latest("are-kall")["state"]  # type: ignore[index]


def test_crisis_batch_reads_match_the_one_at_a_time_reads(db: Store):
    """`crisis_messages_by_id` and `crisis_deliveries` (one query each, for the pages) give what
    `crisis_message` and `crisis_delivery` give one message at a time."""
    assert db.crisis_messages_by_id([]) == {} and db.crisis_deliveries() == {}
    for n, sites in ((1, ["are-kall", "harjedalen-hede"]), (2, ["are-kall"])):
        mid = f"m{n}"
        db.save_crisis({"id": mid, "ts": TS + n, "severity": "info", "sv": f"Text {n} å",
                        "en": f"Text {n}", "from": "Åre kommun", "expires": TS + 3600},
                       "kim", TS + n)
        for site in sites:
            db.record_crisis_sent(site, mid, TS + n, actor="kim")
    db.add_crisis_ack("are-kall", {"id": "m1", "boot": 4, "seq": 3, "ts": TS + 5, "by": "shop"},
                      TS + 5)
    got = db.crisis_messages_by_id(["m2", "m1", "m1", "nope"])
    assert set(got) == {"m1", "m2"}
    assert got["m1"] == db.crisis_message("m1") and got["m1"]["sv"] == "Text 1 å"
    deliveries = db.crisis_deliveries()
    assert set(deliveries) == {"m1", "m2"}
    for mid in ("m1", "m2"):
        assert sorted(deliveries[mid], key=lambda d: d["site"]) == \
            sorted(db.crisis_delivery(crisis_id=mid), key=lambda d: d["site"])
    assert sorted(d["site"] for d in deliveries["m1"]) == ["are-kall", "harjedalen-hede"]


def test_commands_come_with_their_own_results_oldest_first(db: Store):
    """`commands(site)` (the site page's list) attaches each command's `cmd_result` events, read
    in one query, to the right command only."""
    from gateway import commands

    key = "5e" * 32
    a = commands.sign("are-kall", "gen_test", key, 1, {"minutes": 5, "load": False}, now=TS)
    b = commands.sign("are-kall", "rebirth", key, 2, now=TS + 1)
    db.add_command("are-kall", "gen_test", a, "kim")
    db.add_command("are-kall", "rebirth", b, "kim")
    for seq, cid, name, result in ((30, a["id"], "gen_test", "accepted"),
                                   (31, b["id"], "rebirth", "done"),
                                   (32, a["id"], "gen_test", "done")):
        db.add_event("are-kall", event("cmd_result", seq=seq, data={
            "id": cid, "name": name, "result": result}), "{}", TS + seq)
    db.add_event("harjedalen-hede", event("cmd_result", seq=33, data={
        "id": a["id"], "name": "gen_test", "result": "failed"}), "{}", TS + 33)  # another site
    got = {r["id"]: r for r in db.commands("are-kall")}
    assert [r["id"] for r in db.commands("are-kall")] == [b["id"], a["id"]]  # newest first
    assert [x["result"] for x in got[a["id"]]["results"]] == ["accepted", "done"]
    assert [x["result"] for x in got[b["id"]]["results"]] == ["done"]
    assert got[a["id"]]["args"] == {"load": False, "minutes": 5}
    assert db.commands("krokom-follinge") == []


def test_open_store_follows_the_store_settings(tmp_path: Path, pg_cluster: Cluster):
    s = open_store({"path": "var/x.sqlite3", "url": ""}, tmp_path)
    assert isinstance(s, SqliteStore) and (tmp_path / "var" / "x.sqlite3").exists()
    s.close()
    url = pg_cluster.new_database()
    p = open_store({"path": "var/x.sqlite3", "url": url}, tmp_path)
    assert isinstance(p, PgStore) and p.schema_version == len(MIGRATIONS)
    p.close()
    with pytest.raises(ValueError, match="postgresql://"):
        open_store({"path": "x", "url": "mysql://localhost/sot"}, tmp_path)


def test_an_unreachable_postgres_is_a_clear_error_without_the_password(pg_cluster: Cluster):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(StoreUnavailable, match=f"cannot connect to PostgreSQL at "
                           f"sot@127.0.0.1:{port}/sot") as e:
            PgStore(f"postgresql://sot:hemligt@127.0.0.1:{port}/sot")
    assert "hemligt" not in str(e.value)


def _drop_connection(cluster: Cluster, s: Store) -> None:
    """What a PostgreSQL restart does to the store's connection."""
    import psycopg

    with psycopg.connect(cluster.url("sot"), autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (one(s, "SELECT pg_backend_pid()"),))


def test_a_connection_the_server_dropped_is_opened_again(pg_cluster: Cluster):
    """Between transactions (a PostgreSQL restart, an idle timeout): the next call reconnects."""
    s = PgStore(pg_cluster.new_database())
    s.upsert_sites(SITES)
    pid = one(s, "SELECT pg_backend_pid()")
    _drop_connection(pg_cluster, s)
    assert s.site_ids() == {x.id for x in SITES}
    assert one(s, "SELECT pg_backend_pid()") != pid
    assert s.add_event("are-kall", event(), "{}", TS)
    s.close()


def test_a_connection_lost_inside_a_transaction_fails_it_as_the_database(pg_cluster: Cluster):
    """Not the message's fault: the error is one the ingest counts as the database failing
    (`SYSTEMIC`: the messages stay unacknowledged and come again), nothing of the transaction
    is kept, and the store works again at the next call."""
    s = PgStore(pg_cluster.new_database())
    s.upsert_sites(SITES)
    with pytest.raises(StoreFailed) as e:
        with s.batch():
            assert s.add_event("are-kall", event(seq=1), "{}", TS)
            _drop_connection(pg_cluster, s)
            with s.savepoint():
                s.add_event("are-kall", event(seq=2), "{}", TS)
    assert isinstance(e.value, store_mod.SYSTEMIC)
    assert "127.0.0.1" in str(e.value)
    assert s.events("are-kall") == []
    assert s.add_event("are-kall", event(seq=1), "{}", TS)
    s.close()
