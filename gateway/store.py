"""Where the gateway keeps what the controllers told it.

`Store` is the interface the ingest and the web layer use; `SqliteStore` implements it on one
SQLite file, so a PostgreSQL store can follow without touching the layers above.

What is kept:
- `sites`: the configured sites (id, name, municipality, position, heartbeat), loaded from
  `config/sites/` at start. A site that leaves the configuration stays, marked inactive, so its
  history keeps its name.
- `site_status`: per site the latest `status`, `birth` and `state` payload as received (JSON
  text), each with the controller's `ts` and the gateway's receive time. The ingest decides which
  message is the latest (`gateway.ingest.is_newer`); the store only files it.
- `events`: every event once per (site, boot, seq) - the identity the contract gives a message.
  A repeat is ignored and reported as such (`add_event` returns False).
- `rejected`: payloads the ingest refused, with the reason and a short excerpt, capped to the
  newest `REJECTED_KEEP` rows so a misbehaving client cannot fill the disk.

Durability: WAL journal with `synchronous=FULL`, so a message is on disk when its call returns
(the MQTT ingest acknowledges a message to the broker only after that). One connection, used
from one thread: sqlite3's same-thread check is left on to catch mistakes.

Staleness (docs/mqtt.md: "readers treat a retained state as stale after 3 heartbeats"): a site
is stale when its last state is older than `STALE_HEARTBEATS` x heartbeat_s, heartbeat_s from
the birth if it carries one, else from the site's configuration, else `DEFAULT_HEARTBEAT_S`.
The age is taken from the older of the controller's `ts` and the receive time: a retained state
replayed by the broker keeps its old `ts`, and a controller clock running ahead cannot keep a
silent site looking fresh.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_HEARTBEAT_S = 30
STALE_HEARTBEATS = 3
REJECTED_KEEP = 10_000
EXCERPT_BYTES = 200
MAX_EVENTS_LIMIT = 500


@dataclass(frozen=True)
class SiteInfo:
    """What the gateway knows about a site from configuration, before any message."""

    id: str
    name: str
    municipality: str
    lat: float
    lon: float
    heartbeat_s: int | None = None


class Store(Protocol):
    def upsert_sites(self, sites: Iterable[SiteInfo]) -> None: ...
    def site_ids(self) -> frozenset[str]: ...
    def latest(self, site: str) -> dict[str, Any] | None: ...
    def put_status(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def put_birth(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def put_state(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def add_event(self, site: str, msg: dict[str, Any], raw: str, received: float) -> bool: ...
    def add_rejected(self, received: float, topic: str, reason: str, detail: str,
                     payload: bytes) -> None: ...
    def sites_overview(self, now: float) -> list[dict[str, Any]]: ...
    def site_overview(self, site: str, now: float) -> dict[str, Any] | None: ...
    def events(self, site: str, limit: int = 50) -> list[dict[str, Any]]: ...
    def rejected(self, limit: int = 50) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


# Each entry moves the schema one version up; `PRAGMA user_version` records how many ran.
# Never edit an entry that has shipped: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sites (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        municipality TEXT NOT NULL,
        lat          REAL NOT NULL,
        lon          REAL NOT NULL,
        heartbeat_s  INTEGER,
        active       INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE site_status (
        site            TEXT PRIMARY KEY REFERENCES sites(id),
        status          TEXT,
        status_ts       INTEGER,
        status_received REAL,
        birth           TEXT,
        birth_ts        INTEGER,
        birth_received  REAL,
        state           TEXT,
        state_ts        INTEGER,
        state_received  REAL
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        site     TEXT NOT NULL REFERENCES sites(id),
        boot     INTEGER NOT NULL,
        seq      INTEGER NOT NULL,
        ts       INTEGER NOT NULL,
        type     TEXT NOT NULL,
        data     TEXT NOT NULL,
        hist     INTEGER NOT NULL,
        received REAL NOT NULL,
        UNIQUE (site, boot, seq)
    );
    CREATE INDEX events_site_ts ON events (site, ts);
    CREATE TABLE rejected (
        id       INTEGER PRIMARY KEY,
        received REAL NOT NULL,
        topic    TEXT NOT NULL,
        reason   TEXT NOT NULL,
        detail   TEXT NOT NULL,
        payload  TEXT NOT NULL
    );
    """,
)


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write below states its own transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._rejected_since_prune = 0
        self.migrate()

    # --- schema ------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this gateway "
                               f"knows ({len(MIGRATIONS)}); upgrade the gateway")
        for n in range(version, len(MIGRATIONS)):
            # user_version lives in the database header and commits with the migration.
            self._db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[n]}\n"
                                   f"PRAGMA user_version = {n + 1};\nCOMMIT;")

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # --- sites -------------------------------------------------------------------------------

    def upsert_sites(self, sites: Iterable[SiteInfo]) -> None:
        rows = [(s.id, s.name, s.municipality, s.lat, s.lon, s.heartbeat_s) for s in sites]
        with self._tx():
            self._db.execute("UPDATE sites SET active = 0")
            self._db.executemany(
                "INSERT INTO sites (id, name, municipality, lat, lon, heartbeat_s, active) "
                "VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (id) DO UPDATE SET "
                "name = excluded.name, municipality = excluded.municipality, lat = excluded.lat, "
                "lon = excluded.lon, heartbeat_s = excluded.heartbeat_s, active = 1", rows)

    def site_ids(self) -> frozenset[str]:
        return frozenset(r[0] for r in self._db.execute("SELECT id FROM sites WHERE active = 1"))

    # --- latest status / birth / state -------------------------------------------------------

    def put_status(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None:
        self._put("status", site, msg.get("ts"), raw, received)

    def put_birth(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None:
        self._put("birth", site, msg.get("ts"), raw, received)

    def put_state(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None:
        self._put("state", site, msg.get("ts"), raw, received)

    def _put(self, kind: str, site: str, ts: Any, raw: str, received: float) -> None:
        # `kind` is one of three literals above, never input: safe to place in the statement.
        with self._tx():
            self._db.execute(
                f"INSERT INTO site_status (site, {kind}, {kind}_ts, {kind}_received) "
                f"VALUES (?, ?, ?, ?) ON CONFLICT (site) DO UPDATE SET {kind} = excluded.{kind}, "
                f"{kind}_ts = excluded.{kind}_ts, {kind}_received = excluded.{kind}_received",
                (site, raw, ts, received))

    def latest(self, site: str) -> dict[str, Any] | None:
        """{"status", "birth", "state"}: each the payload plus `received`, or None."""
        row = self._db.execute("SELECT * FROM site_status WHERE site = ?", (site,)).fetchone()
        if row is None:
            return None
        return {kind: _payload(row[kind], row[f"{kind}_received"])
                for kind in ("status", "birth", "state")}

    # --- events ------------------------------------------------------------------------------

    def add_event(self, site: str, msg: dict[str, Any], raw: str, received: float) -> bool:
        """File one event; False when (site, boot, seq) is already filed."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO events (site, boot, seq, ts, type, data, hist, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, boot, seq) DO NOTHING",
                (site, int(msg["boot"]), int(msg["seq"]), int(msg["ts"]), msg["type"],
                 json.dumps(msg["data"], separators=(",", ":"), ensure_ascii=False),
                 1 if msg["hist"] else 0, received))
        return cur.rowcount == 1

    def events(self, site: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first by the controller's time, then by (boot, seq)."""
        limit = max(1, min(int(limit), MAX_EVENTS_LIMIT))
        rows = self._db.execute(
            "SELECT boot, seq, ts, type, data, hist, received FROM events WHERE site = ? "
            "ORDER BY ts DESC, boot DESC, seq DESC LIMIT ?", (site, limit))
        return [{"boot": r["boot"], "seq": r["seq"], "ts": r["ts"], "type": r["type"],
                 "data": json.loads(r["data"]), "hist": bool(r["hist"]),
                 "received": r["received"]} for r in rows]

    # --- rejected ----------------------------------------------------------------------------

    def add_rejected(self, received: float, topic: str, reason: str, detail: str,
                     payload: bytes) -> None:
        excerpt = payload[:EXCERPT_BYTES].decode("utf-8", "backslashreplace")
        if len(payload) > EXCERPT_BYTES:
            excerpt += f"... ({len(payload)} bytes)"
        with self._tx():
            self._db.execute(
                "INSERT INTO rejected (received, topic, reason, detail, payload) "
                "VALUES (?, ?, ?, ?, ?)", (received, topic[:256], reason, detail[:512], excerpt))
        self._rejected_since_prune += 1
        if self._rejected_since_prune >= 100:
            self._rejected_since_prune = 0
            with self._tx():
                self._db.execute("DELETE FROM rejected WHERE id <= "
                                 "(SELECT MAX(id) FROM rejected) - ?", (REJECTED_KEEP,))

    def rejected(self, limit: int = 50) -> list[dict[str, Any]]:
        limit = max(1, min(int(limit), MAX_EVENTS_LIMIT))
        rows = self._db.execute("SELECT received, topic, reason, detail, payload FROM rejected "
                                "ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]

    # --- views -------------------------------------------------------------------------------

    def sites_overview(self, now: float) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT s.*, st.status, st.status_received, st.birth, st.birth_received, st.state, "
            "st.state_ts, st.state_received FROM sites s LEFT JOIN site_status st "
            "ON st.site = s.id WHERE s.active = 1 ORDER BY s.municipality, s.name, s.id")
        return [_summary(r, now) for r in rows]

    def site_overview(self, site: str, now: float) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT s.*, st.status, st.status_received, st.birth, st.birth_received, st.state, "
            "st.state_ts, st.state_received FROM sites s LEFT JOIN site_status st "
            "ON st.site = s.id WHERE s.id = ?", (site,)).fetchone()
        return None if row is None else _summary(row, now)

    def stats(self) -> dict[str, Any]:
        by_reason = {r[0]: r[1] for r in self._db.execute(
            "SELECT reason, COUNT(*) FROM rejected GROUP BY reason ORDER BY reason")}
        return {
            "sites": self._db.execute("SELECT COUNT(*) FROM sites WHERE active = 1").fetchone()[0],
            "events": self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
            "rejected_kept": by_reason,
            "schema_version": self.schema_version,
        }

    # --- helpers -----------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _payload(raw: str | None, received: float | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    doc: dict[str, Any] = json.loads(raw)
    doc["received"] = received
    return doc


def _summary(row: sqlite3.Row, now: float) -> dict[str, Any]:
    status = json.loads(row["status"]) if row["status"] else None
    birth = json.loads(row["birth"]) if row["birth"] else None
    state = json.loads(row["state"]) if row["state"] else None
    heartbeat_s = (birth or {}).get("heartbeat_s") or row["heartbeat_s"] or DEFAULT_HEARTBEAT_S
    out: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "municipality": row["municipality"],
        "lat": row["lat"], "lon": row["lon"],
        "status": status.get("state") if status else None,
        "fw": birth.get("fw") if birth else None,
        "heartbeat_s": heartbeat_s,
        "mode": None, "grid_state": None, "genset_state": None,
        "fuel_pct": None, "hours_left": None, "devices": {},
        "updated_ts": None, "age_s": None, "stale": True,
    }
    if state is not None:
        grid = state.get("grid") or {}
        genset = state.get("genset") or {}
        fuel = state.get("fuel") or {}
        age = now - min(float(row["state_ts"]), float(row["state_received"]))
        out.update(
            mode=state.get("mode"), grid_state=grid.get("state"),
            genset_state=genset.get("state"), fuel_pct=fuel.get("pct"),
            hours_left=fuel.get("hours_left"), devices=state.get("devices") or {},
            updated_ts=row["state_ts"], age_s=round(age, 1),
            stale=age > STALE_HEARTBEATS * heartbeat_s,
        )
    return out
