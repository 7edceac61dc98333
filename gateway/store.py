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
- `state_history`: what a chart of a site needs (mode, power, hours left, fuel %), one row per
  accepted state when a discrete value changed, else at most one per `HISTORY_EVERY_S`: a county
  of 2 000 sites at a 30 s heartbeat would otherwise add 5.8 million rows a day.
- `alerts`: every alert the engine opened (`gateway/alerts/`), with its lifecycle
  pending -> firing -> acknowledged -> resolved. At most one alert per de-duplication key is
  open (a partial unique index), so a repeated evaluation can never open a second one.
- `acks`: who acknowledged which alert, when, with what note.
- `notifications` (one per message to one contact over one channel) and `notify_attempts`
  (every try, with its outcome and error): a failed notification stays visible, never lost.
- `audit`: who did what (acknowledgements, crisis messages sent, notifications given up).
- `crisis_sent`, `crisis_acks`: crisis messages the gateway sent to a site, and the staff's
  acknowledgements from the panel, these once per (site, boot, seq).
- `crisis_messages`: the text of each crisis message as last sent (JSON payload), who sent it,
  and when it was withdrawn.
- `users`: dashboard users with role and scrypt hash (`gateway/auth.py`); never in git.
- `cap_versions`: each CAP message published for an alert (number, content digest, sent), so
  an identifier is never reused for changed content (`gateway/alerts/cap.py`).

Durability: WAL journal with `synchronous=FULL`, so a message is on disk when its call returns
(the MQTT ingest acknowledges a message to the broker only after that). One connection, used
from one thread: sqlite3's same-thread check is left on to catch mistakes.

Staleness (docs/mqtt.md: "readers treat a retained state as stale after 3 heartbeats"): a site
is stale when its last state is older than `STALE_HEARTBEATS` x heartbeat_s. heartbeat_s is the
site's configured one (else `DEFAULT_HEARTBEAT_S`); a birth may claim a shorter one, never a
longer one (`effective_heartbeat`). The age is taken from the older of the controller's `ts` and
the receive time: a retained state replayed by the broker keeps its old `ts`, and a controller
clock running ahead cannot keep a silent site looking fresh.

Every write fed by a site checks what it binds: text must be storable (`_text`: no lone
surrogate), integers must fit SQLite's 64 bits (`_int64`), REAL columns take finite floats only
(`_real`). A failure is a ValueError for that one message (the ingest refuses it, reason
`store`), never an exception that aborts a batch. The store's own records of hostile input
(`rejected`, `audit`) escape what they cannot hold instead (`_escaped`), so filing a refusal
cannot fail on the refused text.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DEFAULT_HEARTBEAT_S = 30
STALE_HEARTBEATS = 3
REJECTED_KEEP = 10_000
EXCERPT_BYTES = 200
MAX_EVENTS_LIMIT = 500
HISTORY_EVERY_S = 300
OPEN = ("pending", "firing", "acknowledged")


@dataclass(frozen=True)
class SiteInfo:
    """What the gateway knows about a site from configuration, before any message."""

    id: str
    name: str
    municipality: str
    lat: float
    lon: float
    heartbeat_s: int | None = None


@dataclass(frozen=True)
class SiteSnapshot:
    """Everything the alert rules read about one site: configuration, latest messages, and the
    crisis messages it has not acknowledged. Payloads are parsed JSON; times are epoch s."""

    info: SiteInfo
    status: dict[str, Any] | None
    status_received: float | None
    birth: dict[str, Any] | None
    state: dict[str, Any] | None
    state_ts: float | None
    state_received: float | None
    crisis_unacked: tuple[tuple[str, float], ...] = ()
    reset_at: float | None = None  # when a coordinator last reset the site (`reset_site`)

    @property
    def heartbeat_s(self) -> int:
        return effective_heartbeat(self.birth, self.info.heartbeat_s)


def effective_heartbeat(birth: dict[str, Any] | None, configured: int | None) -> int:
    """The heartbeat the gateway judges a site by: the site's configuration (or
    `DEFAULT_HEARTBEAT_S`, the controller's own default) is the most a site may claim; a birth
    may only claim a shorter one. A birth cannot postpone "stale" or "silent"."""
    cap = int(configured or DEFAULT_HEARTBEAT_S)
    claimed = (birth or {}).get("heartbeat_s")
    if isinstance(claimed, int) and not isinstance(claimed, bool) and 1 <= claimed < cap:
        return claimed
    return cap


@dataclass(frozen=True)
class AlertRecord:
    """One alert as stored. `level` is the highest escalation step notified (-1: none yet);
    `incident` is the key of the regional incident it was grouped into, if any."""

    id: int
    key: str
    rule: str
    site: str | None
    municipality: str
    detail: str
    severity: str
    status: str
    started: float
    fired: float | None = None
    clearing_since: float | None = None
    resolved: float | None = None
    resolve_reason: str | None = None
    level: int = -1
    level_since: float | None = None
    notified: float | None = None
    notify_count: int = 0
    incident: str | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    ack_note: str | None = None
    sv: str = ""
    en: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status in OPEN


ALERT_FIELDS = ("key", "rule", "site", "municipality", "detail", "severity", "status", "started",
                "fired", "clearing_since", "resolved", "resolve_reason", "level", "level_since",
                "notified", "notify_count", "incident", "acked_by", "acked_at", "ack_note", "sv",
                "en", "data")


@dataclass(frozen=True)
class Notification:
    """One message to one contact over one channel. `idem` is its idempotency key: the same on
    every retry, so a receiver that saw an attempt that timed out can drop the repeat."""

    id: int
    alert_id: int
    kind: str
    contact: str
    channel: str
    target: str
    subject: str
    body: str
    idem: str
    status: str = "queued"
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None


class Store(Protocol):
    def upsert_sites(self, sites: Iterable[SiteInfo]) -> None: ...
    def site_ids(self) -> frozenset[str]: ...
    def latest(self, site: str) -> dict[str, Any] | None: ...
    def put_status(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def put_birth(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def put_state(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def add_event(self, site: str, msg: dict[str, Any], raw: str, received: float) -> bool: ...
    def event_seqs(self, site: str, boot: int, after: int, limit: int = 2000) -> list[int]: ...
    def add_rejected(self, received: float, topic: str, reason: str, detail: str,
                     payload: bytes) -> None: ...
    def sites_overview(self, now: float) -> list[dict[str, Any]]: ...
    def site_overview(self, site: str, now: float) -> dict[str, Any] | None: ...
    def events(self, site: str, limit: int = 50) -> list[dict[str, Any]]: ...
    def events_of_type(self, site: str, etype: str,
                       limit: int = 50) -> list[dict[str, Any]]: ...
    def rejected(self, limit: int = 50) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    # history, alerts, notifications, audit, crisis messages
    def batch(self) -> AbstractContextManager[None]: ...
    def savepoint(self) -> AbstractContextManager[None]: ...
    def reset_site(self, site: str, actor: str, now: float) -> bool: ...
    def state_history(self, site: str, since: float = 0.0,
                      limit: int = 1000) -> list[dict[str, Any]]: ...
    def snapshots(self, site: str | None = None) -> list[SiteSnapshot]: ...
    def alerts(self, *, open_only: bool = True, site: str | None = None,
               municipality: str | None = None, resolved_since: float | None = None,
               limit: int = 100_000) -> list[AlertRecord]: ...
    def alert(self, ref: int | str) -> AlertRecord | None: ...
    def open_alert(self, rec: AlertRecord) -> int | None: ...
    def update_alert(self, alert_id: int, expect: tuple[str, ...],
                     **changes: Any) -> bool: ...
    def ack_alert(self, ref: int | str, by: str, note: str, now: float) -> AlertRecord | None: ...
    def acks(self, alert_id: int) -> list[dict[str, Any]]: ...
    def add_notifications(self, jobs: Iterable[Notification], now: float) -> list[int]: ...
    def due_notifications(self, now: float, limit: int = 50) -> list[Notification]: ...
    def next_notification_at(self) -> float | None: ...
    def record_attempt(self, nid: int, ts: float, error: str | None,
                       retry_at: float | None) -> None: ...
    def notifications(self, alert_id: int | None = None,
                      limit: int = 100) -> list[dict[str, Any]]: ...
    def notify_attempts(self, nid: int) -> list[dict[str, Any]]: ...
    def add_audit(self, ts: float, actor: str, action: str, target: str,
                  detail: str = "") -> None: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def record_crisis_sent(self, site: str, crisis_id: str, ts: float,
                           actor: str = "gateway") -> None: ...
    def add_crisis_ack(self, site: str, msg: dict[str, Any], received: float) -> bool: ...
    # the dashboard: users and the crisis messages' text and delivery
    def withdraw_crisis(self, site: str, crisis_id: str, ts: float,
                        actor: str = "gateway") -> None: ...
    def save_crisis(self, payload: dict[str, Any], actor: str, now: float) -> None: ...
    def mark_crisis_withdrawn(self, crisis_id: str, now: float) -> None: ...
    def crisis_message(self, crisis_id: str) -> dict[str, Any] | None: ...
    def crisis_messages(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def crisis_sites(self, crisis_id: str) -> list[str]: ...
    def crisis_delivery(self, crisis_id: str | None = None,
                        site: str | None = None) -> list[dict[str, Any]]: ...
    def put_user(self, name: str, role: str, pwhash: str, now: float) -> None: ...
    def user(self, name: str) -> dict[str, Any] | None: ...
    def users(self) -> list[dict[str, Any]]: ...
    def remove_user(self, name: str) -> bool: ...
    def cap_versions(self, alert_id: int, digest: str, now: float) -> list[tuple[int, float]]: ...


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
    # 2: state history, alerts and their lifecycle, notifications, audit, crisis messages.
    """
    CREATE TABLE state_history (
        id         INTEGER PRIMARY KEY,
        site       TEXT NOT NULL REFERENCES sites(id),
        ts         INTEGER NOT NULL,
        received   REAL NOT NULL,
        mode       TEXT,
        power      TEXT,
        hours_left REAL,
        fuel_pct   REAL
    );
    CREATE INDEX state_history_site_ts ON state_history (site, ts);
    CREATE TABLE alerts (
        id             INTEGER PRIMARY KEY,
        key            TEXT NOT NULL,
        rule           TEXT NOT NULL,
        site           TEXT REFERENCES sites(id),
        municipality   TEXT NOT NULL,
        detail         TEXT NOT NULL DEFAULT '',
        severity       TEXT NOT NULL,
        status         TEXT NOT NULL
                       CHECK (status IN ('pending', 'firing', 'acknowledged', 'resolved')),
        started        REAL NOT NULL,
        fired          REAL,
        clearing_since REAL,
        resolved       REAL,
        resolve_reason TEXT,
        level          INTEGER NOT NULL DEFAULT -1,
        level_since    REAL,
        notified       REAL,
        notify_count   INTEGER NOT NULL DEFAULT 0,
        incident       TEXT,
        acked_by       TEXT,
        acked_at       REAL,
        ack_note       TEXT,
        sv             TEXT NOT NULL DEFAULT '',
        en             TEXT NOT NULL DEFAULT '',
        data           TEXT NOT NULL DEFAULT '{}'
    );
    -- The de-duplication key: one open alert per key, whatever evaluates twice.
    CREATE UNIQUE INDEX alerts_open_key ON alerts (key) WHERE status != 'resolved';
    CREATE INDEX alerts_site_status ON alerts (site, status);
    CREATE INDEX alerts_muni_status ON alerts (municipality, status);
    CREATE INDEX alerts_status_resolved ON alerts (status, resolved);
    CREATE TABLE acks (
        id       INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        ts       REAL NOT NULL,
        by       TEXT NOT NULL,
        note     TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE notifications (
        id         INTEGER PRIMARY KEY,
        alert_id   INTEGER NOT NULL REFERENCES alerts(id),
        kind       TEXT NOT NULL,
        contact    TEXT NOT NULL,
        channel    TEXT NOT NULL,
        target     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        body       TEXT NOT NULL,
        idem       TEXT NOT NULL UNIQUE,
        status     TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
        attempts   INTEGER NOT NULL DEFAULT 0,
        next_at    REAL NOT NULL,
        created    REAL NOT NULL,
        done_at    REAL,
        last_error TEXT
    );
    CREATE INDEX notifications_due ON notifications (status, next_at);
    CREATE INDEX notifications_alert ON notifications (alert_id);
    CREATE TABLE notify_attempts (
        id              INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL REFERENCES notifications(id),
        ts              REAL NOT NULL,
        outcome         TEXT NOT NULL CHECK (outcome IN ('sent', 'error')),
        error           TEXT
    );
    CREATE INDEX notify_attempts_notification ON notify_attempts (notification_id);
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY,
        ts     REAL NOT NULL,
        actor  TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE crisis_sent (
        site      TEXT NOT NULL REFERENCES sites(id),
        crisis_id TEXT NOT NULL,
        ts        REAL NOT NULL,
        PRIMARY KEY (site, crisis_id)
    );
    CREATE TABLE crisis_acks (
        id        INTEGER PRIMARY KEY,
        site      TEXT NOT NULL REFERENCES sites(id),
        crisis_id TEXT NOT NULL,
        boot      INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        by        TEXT,
        received  REAL NOT NULL,
        UNIQUE (site, boot, seq)
    );
    CREATE INDEX crisis_acks_site_id ON crisis_acks (site, crisis_id);
    """,
    # 3: dashboard users, and the text of the crisis messages the gateway sent.
    """
    CREATE TABLE users (
        name    TEXT PRIMARY KEY,
        role    TEXT NOT NULL CHECK (role IN ('viewer', 'coordinator', 'admin')),
        pwhash  TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE crisis_messages (
        id         TEXT PRIMARY KEY,
        payload    TEXT NOT NULL,
        created_by TEXT NOT NULL,
        updated    REAL NOT NULL,
        withdrawn  REAL
    );
    """,
    # 4: the CAP messages published per alert (gateway/alerts/cap.py): one identifier, one
    # content; a changed content is the next version.
    """
    CREATE TABLE cap_versions (
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        n        INTEGER NOT NULL,
        digest   TEXT NOT NULL,
        sent     REAL NOT NULL,
        PRIMARY KEY (alert_id, n)
    );
    """,
    # 5: when a coordinator last made the gateway forget a site's latest messages.
    """
    ALTER TABLE site_status ADD COLUMN reset_at REAL;
    """,
    # 6: signed commands (docs/commands.md): the last counter used per site (it only grows) and
    # every command sent; results arrive as `cmd_result` events.
    """
    CREATE TABLE cmd_counter (
        site    TEXT PRIMARY KEY,
        counter INTEGER NOT NULL
    );
    CREATE TABLE commands (
        id      TEXT PRIMARY KEY,
        site    TEXT NOT NULL,
        name    TEXT NOT NULL,
        args    TEXT NOT NULL,
        issued  INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        counter INTEGER NOT NULL,
        actor   TEXT NOT NULL
    );
    CREATE INDEX commands_site ON commands (site, issued);
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
        self._depth = 0  # open `batch()`/transaction nesting: only the outermost commits
        self._savepoints = 0  # open savepoints, for their names
        self._history_last: dict[str, tuple[float, str | None, str | None]] = {}
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
        """File the latest state and, in the same transaction, its history row when due."""
        with self._tx():
            self._put("state", site, msg.get("ts"), raw, received)
            self._history(site, msg, received)

    def _history(self, site: str, msg: dict[str, Any], received: float) -> None:
        ts = float(msg.get("ts") or received)
        mode = msg.get("mode")
        cap_raw = msg.get("capability")
        cap = cap_raw if isinstance(cap_raw, dict) else {}
        power = cap.get("power")
        last = self._history_last.get(site)
        if last is None:
            row = self._db.execute("SELECT ts, mode, power FROM state_history WHERE site = ? "
                                   "ORDER BY ts DESC, id DESC LIMIT 1", (site,)).fetchone()
            last = (float(row[0]), row[1], row[2]) if row else (-1e18, None, None)
        # A row dated before the last one (a clock put right, a site reset) is always due.
        if (mode, power) == last[1:] and 0 <= ts - last[0] < HISTORY_EVERY_S:
            return
        fuel_raw = msg.get("fuel")
        fuel = fuel_raw if isinstance(fuel_raw, dict) else {}
        hours = fuel.get("hours_left")
        pct = fuel.get("pct")
        self._db.execute(
            "INSERT INTO state_history (site, ts, received, mode, power, hours_left, fuel_pct) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (site, _int64(ts), received, _text(mode) if isinstance(mode, str) else None,
             _text(power) if isinstance(power, str) else None, _real(hours), _real(pct)))
        self._history_last[site] = (ts, mode, power)

    def state_history(self, site: str, since: float = 0.0,
                      limit: int = 1000) -> list[dict[str, Any]]:
        """Oldest first, from `since` (the controller's ts)."""
        rows = self._db.execute(
            "SELECT ts, received, mode, power, hours_left, fuel_pct FROM state_history "
            "WHERE site = ? AND ts >= ? ORDER BY ts, id LIMIT ?", (site, since, int(limit)))
        return [dict(r) for r in rows]

    def _put(self, kind: str, site: str, ts: Any, raw: str, received: float) -> None:
        # `kind` is one of three literals above, never input: safe to place in the statement.
        with self._tx():
            self._db.execute(
                f"INSERT INTO site_status (site, {kind}, {kind}_ts, {kind}_received) "
                f"VALUES (?, ?, ?, ?) ON CONFLICT (site) DO UPDATE SET {kind} = excluded.{kind}, "
                f"{kind}_ts = excluded.{kind}_ts, {kind}_received = excluded.{kind}_received",
                (site, _text(raw), None if ts is None else _int64(ts), received))

    def latest(self, site: str) -> dict[str, Any] | None:
        """{"status", "birth", "state"}: each the payload plus `received`, or None."""
        row = self._db.execute("SELECT * FROM site_status WHERE site = ?", (site,)).fetchone()
        if row is None:
            return None
        return {kind: _payload(row[kind], row[f"{kind}_received"])
                for kind in ("status", "birth", "state")}

    def reset_site(self, site: str, actor: str, now: float) -> bool:
        """Forget the site's latest status, birth and state, so the next message of each kind is
        taken whatever (boot, seq, ts) it carries: the way back from a site that claimed a boot
        counter or a time it cannot have (docs/mqtt.md, "Time and order a site claims"). Rows
        of its state history dated after `now` go too. Audited. False if there is no such site.
        `sot site reset` calls it; the dashboard may call it the same way."""
        if self._db.execute("SELECT 1 FROM sites WHERE id = ?", (site,)).fetchone() is None:
            return False
        with self._tx():
            self._db.execute(
                "INSERT INTO site_status (site, reset_at) VALUES (?, ?) ON CONFLICT (site) DO "
                "UPDATE SET status = NULL, status_ts = NULL, status_received = NULL, "
                "birth = NULL, birth_ts = NULL, birth_received = NULL, state = NULL, "
                "state_ts = NULL, state_received = NULL, reset_at = excluded.reset_at",
                (site, now))
            gone = self._db.execute("DELETE FROM state_history WHERE site = ? AND ts > ?",
                                    (site, now)).rowcount
            self.add_audit(now, actor, "site_reset", site,
                           f"latest status/birth/state forgotten; {gone} future history rows")
        self._history_last.pop(site, None)
        return True

    # --- events ------------------------------------------------------------------------------

    def add_event(self, site: str, msg: dict[str, Any], raw: str, received: float) -> bool:
        """File one event; False when (site, boot, seq) is already filed."""
        row = (site, _int64(msg["boot"]), _int64(msg["seq"]), _int64(msg["ts"]),
               _text(msg["type"]),
               _text(json.dumps(msg["data"], separators=(",", ":"), ensure_ascii=False)),
               1 if msg["hist"] else 0, received)
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO events (site, boot, seq, ts, type, data, hist, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, boot, seq) DO NOTHING", row)
        return cur.rowcount == 1

    def event_seqs(self, site: str, boot: int, after: int, limit: int = 2000) -> list[int]:
        """The filed seqs of (site, boot) above `after`, ascending (the UNIQUE key's index)."""
        rows = self._db.execute(
            "SELECT seq FROM events WHERE site = ? AND boot = ? AND seq > ? ORDER BY seq LIMIT ?",
            (site, boot, after, limit))
        return [r[0] for r in rows]

    def events(self, site: str, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first by the controller's time, then by (boot, seq)."""
        limit = max(1, min(int(limit), MAX_EVENTS_LIMIT))
        rows = self._db.execute(
            "SELECT boot, seq, ts, type, data, hist, received FROM events WHERE site = ? "
            "ORDER BY ts DESC, boot DESC, seq DESC LIMIT ?", (site, limit))
        return [{"boot": r["boot"], "seq": r["seq"], "ts": r["ts"], "type": r["type"],
                 "data": json.loads(r["data"]), "hist": bool(r["hist"]),
                 "received": r["received"]} for r in rows]

    def events_of_type(self, site: str, etype: str, limit: int = 50) -> list[dict[str, Any]]:
        """Like events(), only those of one type (the test runs of gateway/exercise.py, which a
        busy site's other events must not push out of reach)."""
        limit = max(1, min(int(limit), MAX_EVENTS_LIMIT))
        rows = self._db.execute(
            "SELECT boot, seq, ts, type, data, hist, received FROM events WHERE site = ? "
            "AND type = ? ORDER BY ts DESC, boot DESC, seq DESC LIMIT ?", (site, etype, limit))
        return [{"boot": r["boot"], "seq": r["seq"], "ts": r["ts"], "type": r["type"],
                 "data": json.loads(r["data"]), "hist": bool(r["hist"]),
                 "received": r["received"]} for r in rows]

    # --- rejected ----------------------------------------------------------------------------

    def add_rejected(self, received: float, topic: str, reason: str, detail: str,
                     payload: bytes) -> None:
        # Whatever was refused, its record must be storable: the excerpt keeps what is not
        # text as escapes (bytes that are not UTF-8, and characters no text may hold).
        excerpt = _escaped(payload[:EXCERPT_BYTES].decode("utf-8", "backslashreplace"))
        if len(payload) > EXCERPT_BYTES:
            excerpt += f"... ({len(payload)} bytes)"
        with self._tx():
            self._db.execute(
                "INSERT INTO rejected (received, topic, reason, detail, payload) "
                "VALUES (?, ?, ?, ?, ?)", (received, _escaped(topic[:256]), _escaped(reason[:64]),
                                           _escaped(detail[:512]), excerpt))
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
        one = self._one
        by_reason = {r[0]: r[1] for r in self._db.execute(
            "SELECT reason, COUNT(*) FROM rejected GROUP BY reason ORDER BY reason")}
        alerts = {r[0]: r[1] for r in self._db.execute(
            "SELECT status, COUNT(*) FROM alerts GROUP BY status ORDER BY status")}
        notes = {r[0]: r[1] for r in self._db.execute(
            "SELECT status, COUNT(*) FROM notifications GROUP BY status ORDER BY status")}
        return {
            "sites": one("SELECT COUNT(*) FROM sites WHERE active = 1"),
            "events": one("SELECT COUNT(*) FROM events"),
            "rejected_kept": by_reason,
            "alerts": alerts,
            "notifications": notes,
            "schema_version": self.schema_version,
        }

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self._db.execute(sql, args).fetchone()[0]

    # --- rule inputs -------------------------------------------------------------------------

    def snapshots(self, site: str | None = None) -> list[SiteSnapshot]:
        """Active sites (or the one named) with their latest messages, for the alert rules."""
        where, args = ("s.active = 1", ()) if site is None else ("s.id = ?", (site,))
        rows = self._db.execute(
            "SELECT s.*, st.status, st.status_received, st.birth, st.state, st.state_ts, "
            f"st.state_received, st.reset_at FROM sites s LEFT JOIN site_status st "
            f"ON st.site = s.id "
            f"WHERE {where} ORDER BY s.id", args).fetchall()
        unacked: dict[str, list[tuple[str, float]]] = {}
        for r in self._db.execute(
                "SELECT c.site, c.crisis_id, c.ts FROM crisis_sent c WHERE NOT EXISTS "
                "(SELECT 1 FROM crisis_acks a WHERE a.site = c.site AND a.crisis_id = c.crisis_id "
                "AND a.received >= c.ts)"
                + ("" if site is None else " AND c.site = ?") + " ORDER BY c.ts", args):
            unacked.setdefault(r[0], []).append((r[1], float(r[2])))
        return [SiteSnapshot(
            info=SiteInfo(r["id"], r["name"], r["municipality"], r["lat"], r["lon"],
                          r["heartbeat_s"]),
            status=json.loads(r["status"]) if r["status"] else None,
            status_received=r["status_received"],
            birth=json.loads(r["birth"]) if r["birth"] else None,
            state=json.loads(r["state"]) if r["state"] else None,
            state_ts=r["state_ts"], state_received=r["state_received"],
            crisis_unacked=tuple(unacked.get(r["id"], ())), reset_at=r["reset_at"])
            for r in rows]

    # --- alerts ------------------------------------------------------------------------------

    def alerts(self, *, open_only: bool = True, site: str | None = None,
               municipality: str | None = None, resolved_since: float | None = None,
               limit: int = 100_000) -> list[AlertRecord]:
        """Open alerts (and with `resolved_since`, those resolved since then), or with
        `open_only=False` every alert; newest first."""
        clauses: list[str] = []
        args: list[Any] = []
        if municipality is not None:
            clauses.append("municipality = ?")
            args.append(municipality)
        if open_only:
            if resolved_since is None:
                clauses.append("status != 'resolved'")
            else:
                clauses.append("(status != 'resolved' OR resolved >= ?)")
                args.append(resolved_since)
        if site is not None:
            clauses.append("site = ?")
            args.append(site)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(f"SELECT * FROM alerts {where} ORDER BY id DESC LIMIT ?",
                                (*args, int(limit)))
        return [_alert(r) for r in rows]

    def alert(self, ref: int | str) -> AlertRecord | None:
        """By id, or by key (the open alert of that key, else the newest)."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            row = self._db.execute("SELECT * FROM alerts WHERE id = ?", (int(ref),)).fetchone()
        else:
            row = self._db.execute("SELECT * FROM alerts WHERE key = ? ORDER BY "
                                   "status = 'resolved', id DESC LIMIT 1", (ref,)).fetchone()
        return None if row is None else _alert(row)

    def open_alert(self, rec: AlertRecord) -> int | None:
        """Insert; None when an alert of that key is open already (nothing written)."""
        values = [getattr(rec, f) for f in ALERT_FIELDS]
        values[-1] = json.dumps(rec.data, ensure_ascii=False, separators=(",", ":"))
        with self._tx():
            cur = self._db.execute(
                f"INSERT INTO alerts ({', '.join(ALERT_FIELDS)}) VALUES "
                f"({', '.join('?' * len(ALERT_FIELDS))}) ON CONFLICT DO NOTHING", values)
        return cur.lastrowid if cur.rowcount == 1 else None

    def update_alert(self, alert_id: int, expect: tuple[str, ...], **changes: Any) -> bool:
        """Change fields of an alert if its status is still one of `expect`; False if not (an
        acknowledgement from the CLI may have come between reading and writing)."""
        bad = set(changes) - set(ALERT_FIELDS)
        if bad:
            raise ValueError(f"unknown alert fields {sorted(bad)}")
        if "data" in changes:
            changes["data"] = json.dumps(changes["data"], ensure_ascii=False,
                                         separators=(",", ":"))
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._tx():
            cur = self._db.execute(
                f"UPDATE alerts SET {sets} WHERE id = ? AND status IN "
                f"({', '.join('?' * len(expect))})", (*changes.values(), alert_id, *expect))
        return cur.rowcount == 1

    def ack_alert(self, ref: int | str, by: str, note: str, now: float) -> AlertRecord | None:
        """Acknowledge a firing alert (an incident: with its member alerts). Returns the alert as
        it is now, or None if there is no such alert. An alert that is not firing is returned
        unchanged, so the caller can say why nothing happened."""
        rec = self.alert(ref)
        if rec is None or rec.status != "firing":
            return rec
        with self._tx():
            ids = [rec.id] + [r[0] for r in self._db.execute(
                "SELECT id FROM alerts WHERE incident = ? AND status = 'firing'", (rec.key,))]
            for aid in ids:
                self._db.execute("UPDATE alerts SET status = 'acknowledged', acked_by = ?, "
                                 "acked_at = ?, ack_note = ? WHERE id = ? AND status = 'firing'",
                                 (by, now, note, aid))
                self._db.execute("INSERT INTO acks (alert_id, ts, by, note) VALUES (?, ?, ?, ?)",
                                 (aid, now, by, note))
            self.add_audit(now, by, "ack", f"alert {rec.id} {rec.key}", note)
        return self.alert(rec.id)

    def acks(self, alert_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT ts, by, note FROM acks WHERE alert_id = ? ORDER BY id", (alert_id,))]

    # --- notifications -----------------------------------------------------------------------

    def add_notifications(self, jobs: Iterable[Notification], now: float) -> list[int]:
        ids = []
        with self._tx():
            for j in jobs:
                cur = self._db.execute(
                    "INSERT INTO notifications (alert_id, kind, contact, channel, target, "
                    "subject, body, idem, status, attempts, next_at, created) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?) ON CONFLICT (idem) DO NOTHING",
                    (j.alert_id, j.kind, j.contact, j.channel, j.target, j.subject, j.body,
                     j.idem, j.next_at or now, now))
                if cur.rowcount == 1 and cur.lastrowid is not None:
                    ids.append(cur.lastrowid)
        return ids

    def due_notifications(self, now: float, limit: int = 50) -> list[Notification]:
        rows = self._db.execute(
            "SELECT * FROM notifications WHERE status = 'queued' AND next_at <= ? "
            "ORDER BY next_at, id LIMIT ?", (now, int(limit)))
        return [Notification(
            id=r["id"], alert_id=r["alert_id"], kind=r["kind"], contact=r["contact"],
            channel=r["channel"], target=r["target"], subject=r["subject"], body=r["body"],
            idem=r["idem"], status=r["status"], attempts=r["attempts"], next_at=r["next_at"],
            last_error=r["last_error"]) for r in rows]

    def next_notification_at(self) -> float | None:
        return self._one("SELECT MIN(next_at) FROM notifications WHERE status = 'queued'")

    def record_attempt(self, nid: int, ts: float, error: str | None,
                       retry_at: float | None) -> None:
        """One try: sent (error None), or failed and retried at `retry_at`, or given up (None)."""
        with self._tx():
            self._db.execute("INSERT INTO notify_attempts (notification_id, ts, outcome, error) "
                             "VALUES (?, ?, ?, ?)",
                             (nid, ts, "sent" if error is None else "error", error))
            if error is None:
                self._db.execute("UPDATE notifications SET status = 'sent', done_at = ?, "
                                 "attempts = attempts + 1 WHERE id = ?", (ts, nid))
            elif retry_at is not None:
                self._db.execute("UPDATE notifications SET attempts = attempts + 1, next_at = ?, "
                                 "last_error = ? WHERE id = ?", (retry_at, error, nid))
            else:
                self._db.execute("UPDATE notifications SET status = 'failed', done_at = ?, "
                                 "attempts = attempts + 1, last_error = ? WHERE id = ?",
                                 (ts, error, nid))

    def notifications(self, alert_id: int | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
        where, args = ("WHERE alert_id = ?", (alert_id,)) if alert_id is not None else ("", ())
        rows = self._db.execute(
            "SELECT id, alert_id, kind, contact, channel, target, subject, status, attempts, "
            f"next_at, created, done_at, last_error, idem FROM notifications {where} "
            "ORDER BY id DESC LIMIT ?", (*args, int(limit)))
        return [dict(r) for r in rows]

    def notify_attempts(self, nid: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT ts, outcome, error FROM notify_attempts WHERE notification_id = ? "
            "ORDER BY id", (nid,))]

    # --- audit -------------------------------------------------------------------------------

    def add_audit(self, ts: float, actor: str, action: str, target: str,
                  detail: str = "") -> None:
        with self._tx():
            self._db.execute("INSERT INTO audit (ts, actor, action, target, detail) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (ts, _escaped(actor[:128]), _escaped(action[:64]),
                              _escaped(target[:256]), _escaped(detail[:1024])))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT ts, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
            (int(limit),))]

    # --- signed commands ---------------------------------------------------------------------

    def next_cmd_counter(self, site: str, now: float) -> int:
        """A counter for the site's next command, above every one used before: the stored one
        + 1, or the time in milliseconds if that is larger (a gateway whose database was lost
        still issues counters the controller has not seen)."""
        with self._tx():
            row = self._db.execute("SELECT counter FROM cmd_counter WHERE site = ?",
                                   (site,)).fetchone()
            n = max((row["counter"] if row else 0) + 1, int(now * 1000))
            self._db.execute("INSERT INTO cmd_counter (site, counter) VALUES (?, ?) "
                             "ON CONFLICT (site) DO UPDATE SET counter = excluded.counter",
                             (site, n))
        return n

    def add_command(self, site: str, name: str, body: dict[str, Any], actor: str) -> None:
        """A command sent (signed payload `body`), and its audit entry."""
        with self._tx():
            self._db.execute(
                "INSERT INTO commands (id, site, name, args, issued, expires, counter, actor) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (body["id"], site, name, json.dumps(body.get("args") or {}, sort_keys=True),
                 body["issued"], body["expires"], body["counter"], _escaped(actor[:128])))
            self.add_audit(body["issued"], actor, "cmd_sent", f"{site}/{name}/{body['id']}",
                           json.dumps(body.get("args") or {}, sort_keys=True))

    def commands(self, site: str, limit: int = 50) -> list[dict[str, Any]]:
        """The site's commands, newest first, each with the results filed for it (oldest
        first)."""
        rows = [dict(r) for r in self._db.execute(
            "SELECT id, site, name, args, issued, expires, counter, actor FROM commands "
            "WHERE site = ? ORDER BY issued DESC, counter DESC LIMIT ?", (site, int(limit)))]
        for r in rows:
            r["args"] = json.loads(r["args"])
            r["results"] = [json.loads(x["data"]) for x in self._db.execute(
                "SELECT data FROM events WHERE site = ? AND type = 'cmd_result' "
                "AND json_extract(data, '$.id') = ? ORDER BY received, boot, seq",
                (site, r["id"]))]
        return rows

    # --- crisis messages ---------------------------------------------------------------------

    def record_crisis_sent(self, site: str, crisis_id: str, ts: float,
                           actor: str = "gateway") -> None:
        """The crisis-message sender (issue 7) calls this once it has published the message; the
        rule `crisis_ack_missing` waits for the site's acknowledgement from then on."""
        with self._tx():
            self._db.execute("INSERT INTO crisis_sent (site, crisis_id, ts) VALUES (?, ?, ?) "
                             "ON CONFLICT (site, crisis_id) DO UPDATE SET ts = excluded.ts",
                             (site, crisis_id, ts))
            self.add_audit(ts, actor, "crisis_sent", f"{site}/{crisis_id}")

    def withdraw_crisis(self, site: str, crisis_id: str, ts: float,
                        actor: str = "gateway") -> None:
        with self._tx():
            self._db.execute("DELETE FROM crisis_sent WHERE site = ? AND crisis_id = ?",
                             (site, crisis_id))
            self.add_audit(ts, actor, "crisis_withdrawn", f"{site}/{crisis_id}")

    def add_crisis_ack(self, site: str, msg: dict[str, Any], received: float) -> bool:
        """File one acknowledgement from the panel; False when (site, boot, seq) is filed."""
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO crisis_acks (site, crisis_id, boot, seq, ts, by, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, boot, seq) DO NOTHING",
                (site, _text(str(msg["id"])), _int64(msg["boot"]), _int64(msg["seq"]),
                 _int64(msg["ts"]), None if msg.get("by") is None else _text(str(msg["by"])),
                 received))
        return cur.rowcount == 1

    def save_crisis(self, payload: dict[str, Any], actor: str, now: float) -> None:
        """The text of a message as last sent (a new one, or an update of the same id)."""
        with self._tx():
            self._db.execute(
                "INSERT INTO crisis_messages (id, payload, created_by, updated) VALUES "
                "(?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET payload = excluded.payload, "
                "updated = excluded.updated, withdrawn = NULL",
                (payload["id"], json.dumps(payload, ensure_ascii=False), actor, now))

    def mark_crisis_withdrawn(self, crisis_id: str, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE crisis_messages SET withdrawn = ? WHERE id = ?",
                             (now, crisis_id))

    def crisis_message(self, crisis_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM crisis_messages WHERE id = ?",
                               (crisis_id,)).fetchone()
        return None if row is None else _crisis_row(row)

    def crisis_messages(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first, withdrawn ones included (with `withdrawn` set)."""
        return [_crisis_row(r) for r in self._db.execute(
            "SELECT * FROM crisis_messages ORDER BY updated DESC LIMIT ?", (int(limit),))]

    def crisis_sites(self, crisis_id: str) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT site FROM crisis_sent WHERE crisis_id = ? ORDER BY site", (crisis_id,))]

    def crisis_delivery(self, crisis_id: str | None = None,
                        site: str | None = None) -> list[dict[str, Any]]:
        """Per (site, message) still out there: when sent, and the staff's acknowledgement of
        this version (an ack received before the last update acknowledged older text)."""
        clauses, args = [], []
        if crisis_id is not None:
            clauses.append("c.crisis_id = ?")
            args.append(crisis_id)
        if site is not None:
            clauses.append("c.site = ?")
            args.append(site)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [dict(r) for r in self._db.execute(
            "SELECT c.site, c.crisis_id, c.ts AS sent, "
            "(SELECT MIN(a.received) FROM crisis_acks a WHERE a.site = c.site "
            " AND a.crisis_id = c.crisis_id AND a.received >= c.ts) AS acked, "
            "(SELECT a.by FROM crisis_acks a WHERE a.site = c.site AND a.crisis_id = c.crisis_id "
            " AND a.received >= c.ts ORDER BY a.id LIMIT 1) AS acked_by, "
            # the controller's refusal of this version (a `crisis_refused` event naming the
            # message's ts; docs/mqtt.md, "Crisis messages: sizes and refusals")
            "r.why AS refused, r.received AS refused_at "
            f"FROM crisis_sent c LEFT JOIN (SELECT v.site, json_extract(v.data, '$.id') AS id, "
            " json_extract(v.data, '$.msg_ts') AS msg_ts, json_extract(v.data, '$.why') AS why, "
            " MAX(v.received) AS received FROM events v WHERE v.type = 'crisis_refused' "
            " GROUP BY v.site, id, msg_ts) r ON r.site = c.site AND r.id = c.crisis_id "
            " AND (r.msg_ts = (SELECT json_extract(m.payload, '$.ts') FROM crisis_messages m "
            "  WHERE m.id = c.crisis_id) OR (r.msg_ts IS NULL AND r.received >= c.ts)) "
            f"{where} ORDER BY c.ts DESC, c.site", args)]

    # --- users -------------------------------------------------------------------------------

    def put_user(self, name: str, role: str, pwhash: str, now: float) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO users (name, role, pwhash, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET role = excluded.role, pwhash = excluded.pwhash",
                (name, role, pwhash, now))

    def user(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT name, role, pwhash, created FROM users WHERE name = ?",
                               (name,)).fetchone()
        return None if row is None else dict(row)

    def users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT name, role, created FROM users ORDER BY name")]

    def remove_user(self, name: str) -> bool:
        with self._tx():
            cur = self._db.execute("DELETE FROM users WHERE name = ?", (name,))
        return cur.rowcount == 1

    def cap_versions(self, alert_id: int, digest: str, now: float) -> list[tuple[int, float]]:
        """The CAP messages published for an alert, oldest first, as (n, sent); when `digest`
        (of the content about to be published) differs from the last one's, (n + 1, now) is
        recorded first. The public feed calls this for every alert it shows: an unchanged
        alert costs one read, no write."""
        last = self._db.execute(
            "SELECT n, digest FROM cap_versions WHERE alert_id = ? ORDER BY n DESC LIMIT 1",
            (alert_id,)).fetchone()
        if last is None or last["digest"] != digest:
            with self._tx():  # (another process first: its version stands)
                self._db.execute(
                    "INSERT INTO cap_versions (alert_id, n, digest, sent) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (alert_id, (last["n"] if last else 0) + 1, digest, now))
        return [(int(r[0]), float(r[1])) for r in self._db.execute(
            "SELECT n, sent FROM cap_versions WHERE alert_id = ? ORDER BY n", (alert_id,))]

    def crisis_acks(self, site: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT crisis_id, boot, seq, ts, by, received FROM crisis_acks WHERE site = ? "
            "ORDER BY id", (site,))]

    # --- helpers -----------------------------------------------------------------------------

    def batch(self) -> AbstractContextManager[None]:
        """One transaction around several calls: everything inside commits together."""
        return self._tx()

    def savepoint(self) -> AbstractContextManager[None]:
        """Inside a transaction: a SAVEPOINT, rolled back alone when the block raises (the
        transaction goes on). Outside one: a transaction of its own, like `batch()`. This is how
        one message of a group commit fails without taking the others with it."""
        return _Savepoint(self)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises. Nested uses join the
        outermost transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            self._history_last.clear()  # the cache may hold rows that were rolled back
            raise
        self._depth = 0
        self._db.execute("COMMIT")


class _Savepoint:
    """`SqliteStore.savepoint()`. A class rather than a generator: it runs for every message."""

    __slots__ = ("_store", "_outer", "_name")

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._outer: AbstractContextManager[None] | None = None
        self._name = ""

    def __enter__(self) -> None:
        s = self._store
        if not s._depth:
            self._outer = s._tx()
            self._outer.__enter__()
            return
        s._savepoints += 1
        self._name = f"sp{s._savepoints}"
        s._db.execute("SAVEPOINT " + self._name)
        s._depth += 1

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        s = self._store
        if self._outer is not None:
            return bool(self._outer.__exit__(kind, exc, tb))
        s._depth -= 1
        s._savepoints -= 1
        if kind is not None:
            s._db.execute("ROLLBACK TO " + self._name)
            s._history_last.clear()  # the cache may hold rows that were rolled back
        s._db.execute("RELEASE " + self._name)
        return False


INT64 = 2**63 - 1


def _int64(v: Any) -> int:
    """An integer SQLite can hold, or ValueError (never an OverflowError mid-transaction)."""
    try:
        n = int(v)
    except OverflowError:
        raise ValueError(f"number out of range: {v!r}"[:60]) from None
    if -INT64 - 1 <= n <= INT64:
        return n
    raise ValueError(f"integer out of range: {str(n)[:24]}")


def _real(v: Any) -> float | None:
    """A number for a REAL column: a finite float, else None (an int too big for a float or
    for SQLite's integers is not a reading anybody can use)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _text(v: str) -> str:
    """Text SQLite can store (UTF-8: no lone surrogate), or ValueError naming the character.
    The ingest's text policy refuses such strings first; this is the store's own guard."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text not storable: U+{ord(v[e.start]):04X} at character "
                         f"{e.start}") from None
    return v


def _escaped(v: str) -> str:
    """Text for the store's own records (rejected, audit): never fails, lone surrogates and
    control characters as escapes."""
    out = v.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c >= " " or c in "\t\n" else f"\\x{ord(c):02x}" for c in out) \
        if any(c < " " for c in out) else out


def _alert(row: sqlite3.Row) -> AlertRecord:
    values = {f: row[f] for f in ALERT_FIELDS}
    values["data"] = json.loads(row["data"] or "{}")
    return AlertRecord(id=row["id"], **values)


def _crisis_row(row: sqlite3.Row) -> dict[str, Any]:
    return {**json.loads(row["payload"]), "created_by": row["created_by"],
            "updated": row["updated"], "withdrawn": row["withdrawn"]}


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
    heartbeat = effective_heartbeat(birth, row["heartbeat_s"])
    out: dict[str, Any] = {
        "id": row["id"], "name": row["name"], "municipality": row["municipality"],
        "lat": row["lat"], "lon": row["lon"],
        "status": status.get("state") if status else None,
        "fw": birth.get("fw") if birth else None,
        "heartbeat_s": heartbeat,
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
            stale=age > STALE_HEARTBEATS * heartbeat,
        )
    return out
