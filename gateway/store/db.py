"""The database connection every part of the store shares (SQLite or PostgreSQL): schema
migrations, transactions and savepoints, and the guards on what a write may bind.

The aggregates' mixins hold their SQL once, written in the subset both databases speak: `?`
placeholders (the PostgreSQL connection turns them into psycopg's `%s`), `ON CONFLICT ...`
upserts, `RETURNING id` for a new row's id. What still differs lives in the base classes:
`SqliteBase` (this module) and `PgBase` (`gateway/store/pg.py`) open the connection, run the
migrations and say how a transaction begins; `Dialect` spells the one function that differs in
queries, reading a field of JSON text.

SQLite durability: WAL journal with `synchronous=FULL`, so a message is on disk when its call
returns (the MQTT ingest acknowledges a message to the broker only after that). One connection,
used from one thread: sqlite3's same-thread check is left on to catch mistakes.

Every write fed by a site checks what it binds: text must be storable (`_text`: no lone
surrogate, no NUL, which PostgreSQL's text cannot hold), integers must fit 64 bits (`_int64`),
REAL columns take finite floats only (`_real`). A failure is a ValueError for that one message
(the ingest refuses it, reason `store`), never an exception that aborts a batch. The store's own
records of hostile input (`rejected`, `audit`) escape what they cannot hold instead
(`_escaped`), so filing a refusal cannot fail on the refused text.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class Transactions(Protocol):
    """Several calls as one unit: what the ingest's group commit and the alert engine use."""

    def batch(self) -> AbstractContextManager[None]: ...
    def savepoint(self) -> AbstractContextManager[None]: ...
    def defer_writes(self) -> None: ...
    def flush_writes(self) -> set[tuple[Any, ...]]: ...


# Each entry moves the schema one version up; `PRAGMA user_version` (SQLite) or the table
# `sot_schema` (PostgreSQL) records how many ran. Written with SQLite's column types; `pg.pg_ddl`
# gives PostgreSQL its own (so an entry uses INTEGER, REAL, TEXT and `INTEGER PRIMARY KEY`
# only, and SQL both databases take). Never edit an entry that has shipped: append a new one.
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
    # 7: official alerts the gateway republishes (gateway/feeds/publish.py): what its CAP feed
    # says of each, naming the origin (docs/feeds.md, "The CAP feed out"), and the versions of
    # that CAP message as for the gateway's own alerts.
    """
    CREATE TABLE official_alerts (
        crisis_id TEXT PRIMARY KEY,
        alert     TEXT NOT NULL,
        updated   REAL NOT NULL
    );
    CREATE TABLE official_cap_versions (
        crisis_id TEXT NOT NULL,
        n         INTEGER NOT NULL,
        digest    TEXT NOT NULL,
        sent      REAL NOT NULL,
        PRIMARY KEY (crisis_id, n)
    );
    """,
    # 8: web sessions and the login throttle's counters, shared by every gateway worker
    # (gateway/store/sessions.py). A session is found by the SHA-256 of its cookie's token,
    # never the token itself.
    """
    CREATE TABLE sessions (
        key     TEXT PRIMARY KEY,
        name    TEXT NOT NULL,
        role    TEXT NOT NULL,
        csrf    TEXT NOT NULL,
        stamp   TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX sessions_expires ON sessions (expires);
    CREATE INDEX sessions_name ON sessions (name);
    CREATE TABLE login_failures (
        key TEXT NOT NULL,
        ts  REAL NOT NULL
    );
    CREATE INDEX login_failures_key_ts ON login_failures (key, ts);
    CREATE INDEX login_failures_ts ON login_failures (ts);
    CREATE TABLE login_known (
        name TEXT NOT NULL,
        addr TEXT NOT NULL,
        ts   REAL NOT NULL,
        PRIMARY KEY (name, addr)
    );
    """,
    # 9: the official-alert feeds' state and the coordinators' approvals for the process that
    # runs the feeds (gateway/store/feeds.py).
    """
    CREATE TABLE feed_state (
        id      INTEGER PRIMARY KEY,
        state   TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE feed_approvals (
        id        INTEGER PRIMARY KEY,
        key       TEXT NOT NULL,
        actor     TEXT NOT NULL,
        note      TEXT,
        requested REAL NOT NULL,
        outcome   TEXT,
        handled   REAL
    );
    CREATE INDEX feed_approvals_open ON feed_approvals (outcome, id);
    """,
    # 10: the leader lease of several gateway workers (gateway/store/lease.py): who runs the
    # alert engine, the notifier and the feed poller, until when, under which epoch.
    """
    CREATE TABLE leases (
        name     TEXT PRIMARY KEY,
        holder   TEXT NOT NULL,
        epoch    INTEGER NOT NULL,
        expires  REAL NOT NULL,
        acquired REAL NOT NULL
    );
    """,
)


@dataclass(frozen=True)
class Dialect:
    """What the shared SQL cannot say the same way in both databases."""

    name: str
    begin: str  # the statement that opens a write transaction
    # (column of JSON text, field) -> an SQL expression: the field as text (`json_text`), or as
    # a value that compares equal for equal JSON numbers, strings, ... (`json_value`); SQL NULL
    # when the field is missing or JSON null.
    json_text: Callable[[str, str], str]
    json_value: Callable[[str, str], str]
    # appended to a SELECT inside a write transaction to hold its rows until the commit: other
    # gateway workers' transactions wait (PostgreSQL); SQLite's write lock is the whole file.
    for_update: str = ""
    # Inserts whose answer (new or already there) may wait for `flush_writes`: where each
    # statement is a round trip to a server (PostgreSQL), not where it is a call into a library.
    defer_inserts: bool = False


def _json_extract(col: str, field: str) -> str:
    return f"json_extract({col}, '$.{field}')"


SQLITE = Dialect("sqlite", "BEGIN IMMEDIATE", _json_extract, _json_extract)


class Conn(Protocol):
    """The part of a DB-API connection the store uses (sqlite3's, or `pg._PgConn`)."""

    def execute(self, sql: str, args: Any = (), /) -> Any: ...
    def executemany(self, sql: str, rows: Any, /) -> Any: ...


class StoreBase:
    """The connection and its transactions, whatever the database; the aggregates' mixins
    (telemetry, alerts, crisis, commands, users, audit) add their tables' methods on top, and
    `SqliteBase` or `pg.PgBase` open the connection (`SqliteStore`, `PgStore`)."""

    _db: Conn
    dialect: Dialect

    def __init__(self) -> None:
        self._rejected_since_prune = 0
        self._depth = 0  # open `batch()`/transaction nesting: only the outermost commits
        self._savepoints = 0  # open savepoints, for their names
        # telemetry's cache of each site's last history row; cleared on every rollback
        self._history_last: dict[str, tuple[float, str | None, str | None]] = {}
        # `defer_writes`: statement -> its rows waiting for `flush_writes` (by a key: a later
        # row of the same key replaces the earlier one)
        self._deferred: dict[str, dict[Any, Any]] | None = None
        self._deferred_inserts: dict[str, list[tuple[Any, ...]]] = {}

    # --- schema (per database) ---------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        raise NotImplementedError

    def integrity_check(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        return self._db.execute(sql, args).fetchone()[0]

    def _insert_id(self, sql: str, args: Any) -> int | None:
        """Run an INSERT ... RETURNING id; the new row's id, or None when it inserted nothing
        (ON CONFLICT DO NOTHING)."""
        rows = self._db.execute(sql, args).fetchall()
        return int(rows[0][0]) if rows else None

    def _audit(self, ts: float, actor: str, action: str, target: str, detail: str = "") -> None:
        """One audit row, inside the caller's transaction (`AuditMixin.add_audit` for one of its
        own)."""
        self._db.execute("INSERT INTO audit (ts, actor, action, target, detail) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (ts, _escaped(actor[:128]), _escaped(action[:64]),
                          _escaped(target[:256]), _escaped(detail[:1024])))

    # --- transactions ------------------------------------------------------------------------

    def batch(self) -> AbstractContextManager[None]:
        """One transaction around several calls: everything inside commits together."""
        return self._tx()

    def savepoint(self) -> AbstractContextManager[None]:
        """Inside a transaction: a SAVEPOINT, rolled back alone when the block raises (the
        transaction goes on). Outside one: a transaction of its own, like `batch()`. This is how
        one message of a group commit fails without taking the others with it."""
        return _Savepoint(self)

    def defer_writes(self) -> None:
        """Inside a transaction: the writes that take `_write` (the latest messages of the sites
        and their history rows) wait in memory until `flush_writes`, which sends each
        statement's rows at once (`executemany`: on PostgreSQL psycopg sends them in one
        pipeline instead of a round trip each; the ingest's group commit). A rollback drops
        them. An error then surfaces at `flush_writes`, not at the call that caused it."""
        self._deferred = {}

    def flush_writes(self) -> set[tuple[Any, ...]]:
        """Send what waits; returns the keys (the RETURNING columns) of the rows `_insert_new`
        deferred that were new."""
        deferred, self._deferred = self._deferred, None
        inserts, self._deferred_inserts = self._deferred_inserts, {}
        for sql, rows in (deferred or {}).items():
            self._db.executemany(sql, list(rows.values()))
        new: set[tuple[Any, ...]] = set()
        for sql, batch in inserts.items():
            new.update(self._insert_many(sql, batch))
        return new

    def _insert_many(self, sql: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Every row's INSERT at once; the RETURNING rows. Only where `defer_inserts`."""
        raise NotImplementedError(f"{self.dialect.name}: inserts are not deferred")

    def _insert_new(self, sql: str, args: tuple[Any, ...]) -> bool | None:
        """An `INSERT ... ON CONFLICT DO NOTHING RETURNING <key>`: True when the row is new,
        False when its key was there. Deferred (`defer_writes`, on a database whose dialect
        says `defer_inserts`): None now, and the key among `flush_writes()`'s when it was
        new."""
        if self._deferred is None or not self.dialect.defer_inserts:
            return bool(self._db.execute(sql, args).fetchall())
        self._deferred_inserts.setdefault(sql, []).append(args)
        return None

    def _write(self, sql: str, args: tuple[Any, ...], key: Any = None) -> None:
        """One write, now or (`defer_writes`) at `flush_writes`. `key`: a later write of the same
        statement and key replaces the earlier one (None: every one is kept)."""
        if self._deferred is None:
            self._db.execute(sql, args)
            return
        rows = self._deferred.setdefault(sql, {})
        rows[object() if key is None else key] = args

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK when the block raises. Nested uses join the outermost
        transaction."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute(self.dialect.begin)
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._deferred = None
            self._deferred_inserts = {}
            self._rollback()
            self._history_last.clear()  # the cache may hold rows that were rolled back
            raise
        self._depth = 0
        if self._deferred is not None or self._deferred_inserts:
            self._deferred = None
            self._deferred_inserts = {}
            self._rollback()
            raise RuntimeError("writes deferred and never flushed: rolled back")
        self._db.execute("COMMIT")

    def _rollback(self) -> None:
        self._db.execute("ROLLBACK")


class SqliteBase(StoreBase):
    """The store on one SQLite file (`SqliteStore`)."""

    dialect = SQLITE

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write below states its own transaction.
        db = sqlite3.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        self._sqlite = db
        self._db = db
        self.migrate()

    @property
    def schema_version(self) -> int:
        return int(self._one("PRAGMA user_version"))

    def migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this gateway "
                               f"knows ({len(MIGRATIONS)}); upgrade the gateway")
        for n in range(version, len(MIGRATIONS)):
            # user_version lives in the database header and commits with the migration.
            self._sqlite.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[n]}\n"
                                       f"PRAGMA user_version = {n + 1};\nCOMMIT;")

    def integrity_check(self) -> str:
        return str(self._one("PRAGMA integrity_check"))

    def close(self) -> None:
        self._sqlite.close()


class _Savepoint:
    """`StoreBase.savepoint()`. A class rather than a generator: it runs for every message."""

    __slots__ = ("_store", "_outer", "_name")

    def __init__(self, store: StoreBase) -> None:
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
            s._db.execute("ROLLBACK TO SAVEPOINT " + self._name)
            s._history_last.clear()  # the cache may hold rows that were rolled back
        s._db.execute("RELEASE SAVEPOINT " + self._name)
        return False


INT64 = 2**63 - 1


def _int64(v: Any) -> int:
    """An integer both databases can hold (64 bits), or ValueError (never an OverflowError
    mid-transaction)."""
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
    """Text both databases can store (UTF-8: no lone surrogate; no NUL, which PostgreSQL's
    text cannot hold), or ValueError naming the character. The ingest's text policy refuses
    such strings first; this is the store's own guard."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"text not storable: U+{ord(v[e.start]):04X} at character "
                         f"{e.start}") from None
    if "\x00" in v:
        raise ValueError(f"text not storable: U+0000 at character {v.index(chr(0))}")
    return v


def _escaped(v: str) -> str:
    """Text for the store's own records (rejected, audit): never fails, lone surrogates and
    control characters as escapes."""
    out = v.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c >= " " or c in "\t\n" else f"\\x{ord(c):02x}" for c in out) \
        if any(c < " " for c in out) else out
