"""Where the gateway keeps what the controllers told it, split by aggregate.

Each aggregate is a protocol that declares what its callers use, and a mixin that implements it
on the one SQLite connection (`db.SqliteBase`):

    telemetry.py  TelemetryStore  sites, latest status/birth/state, events, rejected, state
                                  history, the overview and the alert rules' snapshots
    alerts.py     AlertStore      alerts, acks, notifications and their attempts, CAP versions
    crisis.py     CrisisStore     crisis messages sent, their text, the staff's acknowledgements
    commands.py   CommandStore    signed commands and their counters
    users.py      UserStore       dashboard users
                  AuditStore      the audit log
    db.py         Transactions    batch() and savepoint(); the migrations and value guards

`Store` is all of them (what the web layer uses); `SqliteStore` implements `Store` on one
SQLite file, so a PostgreSQL store can follow without touching the layers above. Callers type
against the narrowest protocol they need (the ingest, the alert engine, crisis messages,
commands, the signage).

The domain types (`SiteInfo`, `SiteSnapshot`, `AlertRecord`, `Notification`, `SiteSummary`) and
the one judgement of a site's link and staleness (`site_status`) live in `gateway/model.py`
(docs/mqtt.md, "Site status"); they are re-exported here so `from gateway.store import SiteInfo`
keeps working.
"""

from __future__ import annotations

from typing import Protocol

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
from .crisis import CrisisMixin, CrisisStore
from .db import MIGRATIONS, SqliteBase, Transactions
from .telemetry import (
    EXCERPT_BYTES,
    HISTORY_EVERY_S,
    MAX_EVENTS_LIMIT,
    REJECTED_KEEP,
    TelemetryMixin,
    TelemetryStore,
)
from .users import AuditMixin, AuditStore, UserMixin, UserStore

__all__ = ["ALERT_FIELDS", "DEFAULT_HEARTBEAT_S", "EXCERPT_BYTES", "HISTORY_EVERY_S",
           "MAX_EVENTS_LIMIT", "MIGRATIONS", "OPEN", "REJECTED_KEEP", "STALE_HEARTBEATS",
           "AlertRecord", "AlertStore", "AuditStore", "CommandStore", "CrisisStore",
           "Notification", "SiteInfo", "SiteSnapshot", "SiteStatus", "SiteSummary", "SqliteStore",
           "Store", "TelemetryStore", "Transactions", "UserStore", "effective_heartbeat",
           "site_status", "site_summary"]


class Store(TelemetryStore, AlertStore, CrisisStore, CommandStore, UserStore, AuditStore,
            Transactions, Protocol):
    """Everything the gateway keeps: what the web layer and the CLI use."""

    def close(self) -> None: ...


class SqliteStore(TelemetryMixin, AlertMixin, CrisisMixin, CommandMixin, UserMixin, AuditMixin,
                  SqliteBase):
    """`Store` on one SQLite file (see the modules for each aggregate's tables)."""
