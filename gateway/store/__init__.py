"""Where the gateway keeps what the controllers told it, split by aggregate.

Each aggregate is a protocol that declares what its callers use, and a mixin that implements it
once, on either database's connection (`db.StoreBase`):

    telemetry.py  TelemetryStore  sites, latest status/birth/state, events, rejected, state
                                  history, the overview and the alert rules' snapshots
    alerts.py     AlertStore      alerts, acks, notifications and their attempts, CAP versions
    crisis.py     CrisisStore     crisis messages sent, their text, the staff's acknowledgements
                  OfficialStore   the official alerts republished, as the CAP feed tells them
    feeds.py      FeedStateStore  the official-alert feeds' state and the approvals waiting
    commands.py   CommandStore    signed commands and their counters
    users.py      UserStore       dashboard users
                  AuditStore      the audit log
    sessions.py   SessionStore    web sessions (by a digest of the cookie's token)
                  ThrottleStore   the login throttle's failures and known addresses
    lease.py      LeaseStore      the leader lease of several gateway workers, and the
                                  notifier's claim fenced by it
    db.py         Transactions    batch() and savepoint(); the migrations and value guards;
                                  the SQLite connection
    pg.py                         the PostgreSQL connection (placeholders, column types)

`Store` is all of them (what the web layer uses); `SqliteStore` implements `Store` on one
SQLite file, `PgStore` on a PostgreSQL database, with the same SQL and migrations;
`open_store` picks one from the `[store]` settings. Callers type against the narrowest protocol
they need (the ingest, the alert engine, crisis messages, commands, the signage).

The domain types (`SiteInfo`, `SiteSnapshot`, `AlertRecord`, `Notification`, `SiteSummary`) and
the one judgement of a site's link and staleness (`site_status`) live in `gateway/model.py`
(docs/mqtt.md, "Site status"); they are re-exported here so `from gateway.store import SiteInfo`
keeps working.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..model import (
    ALERT_FIELDS,
    DEFAULT_HEARTBEAT_S,
    OPEN,
    STALE_HEARTBEATS,
    AlertRecord,
    Notification,
    SiteInfo,
    SiteSnapshot,
    SiteStatus,
    SiteSummary,
    effective_heartbeat,
    site_status,
    site_summary,
)
from .alerts import AlertMixin, AlertStore
from .commands import CommandMixin, CommandStore
from .crisis import CrisisMixin, CrisisStore, OfficialStore
from .db import MIGRATIONS, SqliteBase, Transactions
from .feeds import FeedStateMixin, FeedStateStore
from .lease import LEADER, LeaseMixin, LeaseStore
from .pg import PgBase, StoreFailed, StoreUnavailable
from .sessions import SessionMixin, SessionStore, ThrottleStore
from .telemetry import (
    EXCERPT_BYTES,
    HISTORY_EVERY_S,
    MAX_EVENTS_LIMIT,
    REJECTED_KEEP,
    TelemetryMixin,
    TelemetryStore,
)
from .users import AuditMixin, AuditStore, UserMixin, UserStore

__all__ = ["ALERT_FIELDS", "AlertRecord", "AlertStore", "AuditStore", "CommandStore",
           "CrisisStore", "DEFAULT_HEARTBEAT_S", "EXCERPT_BYTES", "FeedStateStore",
           "HISTORY_EVERY_S", "LEADER", "LeaseStore", "MAX_EVENTS_LIMIT", "MIGRATIONS",
           "Notification", "OPEN", "OfficialStore", "PgStore", "REJECTED_KEEP",
           "STALE_HEARTBEATS", "SYSTEMIC", "SessionStore", "SiteInfo", "SiteSnapshot",
           "SiteStatus", "SiteSummary", "SqliteStore", "Store", "StoreFailed", "StoreUnavailable",
           "TelemetryStore", "ThrottleStore", "Transactions", "UserStore", "effective_heartbeat",
           "open_store", "site_status", "site_summary"]


class Store(TelemetryStore, AlertStore, CrisisStore, OfficialStore, FeedStateStore, CommandStore,
            UserStore, AuditStore, SessionStore, ThrottleStore, LeaseStore, Transactions,
            Protocol):
    """Everything the gateway keeps: what the web layer and the CLI use."""

    @property
    def schema_version(self) -> int: ...
    def integrity_check(self) -> str: ...
    def close(self) -> None: ...


class SqliteStore(TelemetryMixin, AlertMixin, CrisisMixin, FeedStateMixin, CommandMixin,
                  UserMixin, AuditMixin, SessionMixin, LeaseMixin, SqliteBase):
    """`Store` on one SQLite file (see the modules for each aggregate's tables)."""


class PgStore(TelemetryMixin, AlertMixin, CrisisMixin, FeedStateMixin, CommandMixin, UserMixin,
              AuditMixin, SessionMixin, LeaseMixin, PgBase):
    """`Store` on a PostgreSQL database (`gateway/store/pg.py`)."""


# Exceptions that say the database as a whole failed (disk full, I/O error, locked, connection
# lost), not the one message being filed: the ingest leaves such a message unacknowledged.
SYSTEMIC: tuple[type[BaseException], ...] = (sqlite3.OperationalError, StoreFailed)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(settings: Mapping[str, Any], base_dir: Path) -> Store:
    """The store the `[store]` settings name: PostgreSQL when `url` is a postgresql:// URL,
    else SQLite at `path` (relative to `base_dir`)."""
    url = str(settings.get("url") or "")
    if url:
        if not url.startswith(POSTGRES_SCHEMES):
            raise ValueError(f"[store] url: only postgresql:// URLs are known, not "
                             f"{url.split(':', 1)[0]!r} (leave url out for SQLite at path)")
        return PgStore(url)
    path = Path(str(settings["path"]))
    return SqliteStore(path if path.is_absolute() else base_dir / path)

