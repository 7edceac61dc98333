"""SqliteStore: migrations, durability settings, duplicates, staleness with a moved clock."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from gw_samples import SITES, TS, birth, event, present, state, status

from gateway import store as store_mod
from gateway.store import MIGRATIONS, SiteInfo, SqliteStore
from gateway.store import telemetry as telemetry_mod


@pytest.fixture
def db(tmp_path: Path):
    s = SqliteStore(tmp_path / "var" / "sot.sqlite3")
    s.upsert_sites(SITES)
    yield s
    s.close()


def put(s: SqliteStore, kind: str, doc: dict, received: float) -> None:
    getattr(s, f"put_{kind}")("are-kall", doc, json.dumps(doc), received)


def test_fresh_database_is_migrated_wal_full_and_intact(db: SqliteStore):
    assert db.schema_version == len(MIGRATIONS)
    assert db._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.integrity_check() == "ok"


def test_reopen_keeps_data_and_runs_no_migration_twice(tmp_path: Path):
    path = tmp_path / "sot.sqlite3"
    s = SqliteStore(path)
    s.upsert_sites(SITES)
    assert s.add_event("are-kall", event(), "{}", TS)
    s.close()
    for _ in range(2):
        s = SqliteStore(path)
        assert s.schema_version == len(MIGRATIONS)
        assert s.integrity_check() == "ok"
        assert s.site_ids() == {x.id for x in SITES}
        assert len(s.events("are-kall")) == 1
        s.close()


def test_database_from_a_newer_gateway_is_refused(tmp_path: Path):
    path = tmp_path / "sot.sqlite3"
    SqliteStore(path).close()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SqliteStore(path)


def test_event_duplicate_is_ignored_and_reported(db: SqliteStore):
    assert db.add_event("are-kall", event(seq=20), "{}", TS) is True
    assert db.add_event("are-kall", event(seq=20, type="gen_running",
                                          data={"after_s": 1}), "{}", TS + 5) is False
    assert db.add_event("are-kall", event(seq=20, boot=5), "{}", TS) is True  # new boot
    assert db.add_event("harjedalen-hede", event(seq=20), "{}", TS) is True  # other site
    evs = db.events("are-kall")
    assert len(evs) == 2
    assert all(e["type"] == "grid_lost" for e in evs)  # the first one filed stays


def test_events_newest_first_with_limit(db: SqliteStore):
    for i, t in enumerate(["grid_lost", "mode_changed", "gen_running"]):
        db.add_event("are-kall", event(t, seq=20 + i, ts=TS + i), "{}", TS + i)
    db.add_event("are-kall", event("device_offline", seq=30, ts=TS - 100, hist=True), "{}", TS + 9)
    evs = db.events("are-kall")
    assert [e["type"] for e in evs] == ["gen_running", "mode_changed", "grid_lost",
                                        "device_offline"]
    assert evs[-1]["hist"] is True and evs[0]["hist"] is False
    assert evs[0]["data"] == {"after_s": 9.5}
    assert [e["seq"] for e in db.events("are-kall", limit=2)] == [22, 21]


def test_latest_status_birth_state_with_received_time(db: SqliteStore):
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


def overview(db: SqliteStore, now: float, site: str = "are-kall") -> dict:
    """The site's row as `GET /api/sites` gives it."""
    return next(r.as_json() for r in db.sites_overview(now) if r.id == site)


def test_staleness_follows_the_clock_passed_in(db: SqliteStore):
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


def test_heartbeat_default_when_neither_birth_nor_config_has_one(tmp_path: Path):
    s = SqliteStore(tmp_path / "x.sqlite3")
    s.upsert_sites([SiteInfo("are-kall", "Kall", "Åre", 63.0, 13.0)])
    put(s, "state", state(), TS)
    assert overview(s, TS + 3 * store_mod.DEFAULT_HEARTBEAT_S - 1)["stale"] is False
    assert overview(s, TS + 3 * store_mod.DEFAULT_HEARTBEAT_S + 1)["stale"] is True
    s.close()


def test_age_uses_the_older_of_controller_ts_and_receive_time(db: SqliteStore):
    # Retained state replayed long after it was made: its ts says how old it is.
    put(db, "state", state(ts=TS - 1000), TS)
    assert overview(db, TS)["stale"] is True
    # Controller clock 10 min ahead: the receive time keeps a silent site from looking fresh.
    put(db, "state", state(seq=18, ts=TS + 600), TS)
    assert overview(db, TS + 100)["stale"] is True


def test_overview_shape(db: SqliteStore):
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


def test_sites_leaving_the_config_are_kept_but_inactive(db: SqliteStore):
    db.add_event("krokom-follinge", event(), "{}", TS)
    db.upsert_sites(SITES[:2])
    assert db.site_ids() == {"are-kall", "harjedalen-hede"}
    assert [r.id for r in db.sites_overview(TS)] == ["harjedalen-hede", "are-kall"]
    assert len(db.events("krokom-follinge")) == 1
    db.upsert_sites([SiteInfo("are-kall", "Kall by", "Åre", 63.0, 13.0)])
    assert overview(db, TS)["name"] == "Kall by"


def test_rejected_rows_keep_an_excerpt_and_are_capped(db: SqliteStore, monkeypatch):
    monkeypatch.setattr(telemetry_mod, "REJECTED_KEEP", 50)
    db.add_rejected(TS, "sot/v1/x/state", "unknown_site", "x", b"\xff" + b"a" * 500)
    row = db.rejected(1)[0]
    assert row["reason"] == "unknown_site" and row["payload"].startswith("\\xffaaa")
    assert row["payload"].endswith("(501 bytes)")
    for i in range(250):
        db.add_rejected(TS + i, "t", "not_json", "", b"{")
    kept = db._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
    assert 50 <= kept <= 150
    assert db.stats()["rejected_kept"]["not_json"] == kept
    assert db.integrity_check() == "ok"


def test_stats(db: SqliteStore):
    db.add_event("are-kall", event(), "{}", TS)
    st = db.stats()
    assert st["sites"] == 3 and st["events"] == 1 and st["schema_version"] == len(MIGRATIONS)
