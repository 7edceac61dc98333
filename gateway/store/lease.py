"""The leader lease: which gateway worker runs the alert engine, the notifier and the feed poller.

Several gateway workers share one store (PostgreSQL; docs/deploy.md, "Several workers"). Each
ingests its share of the MQTT uplink and serves the web, but exactly one of them may evaluate
the alert rules, send notifications and poll the official feeds. That one holds the lease: one
row of `leases` per lease name (`LEADER`) with its holder (the worker's name), an `epoch` that
grows by one at every acquisition, and an expiry time. The holder renews it every few seconds;
another worker takes it once it has expired (`gateway/lease.py`).

Every statement is one conditional write, so two workers racing for the lease cannot both win:
on PostgreSQL the second `INSERT ... ON CONFLICT DO UPDATE ... WHERE` waits for the first's row
lock and then sees its new expiry; SQLite has one writer at a time anyway.

- `acquire_lease` takes the lease when it is free, expired, or held under the same worker name
  (a worker restarted under its own name takes its lease back at once: names are unique per
  worker) and returns the new epoch, or None while another worker holds it.
- `renew_lease` moves the expiry on, only for the same holder and epoch: a holder that was paused
  past its expiry and overtaken finds it cannot renew, and stops.
- `release_lease` gives it up on a clean stop, so another worker takes over at once.
- `notify` sends a PostgreSQL notification (`pg_notify`; nothing on SQLite): how the other
  workers tell the leader which sites they filed messages for.
- `claim_notification` fences the notifier: a queued notification is taken for sending (its
  `next_at` moved on by `hold_s`, so no other dispatcher sees it as due) only while the caller's
  lease (holder and epoch) is current. A holder that lost the lease without noticing yet cannot
  claim, so a takeover never sends the same notification twice; one that was being sent when
  its sender died is due again after `hold_s` (at least once, with the same idempotency key).

Times are the workers' wall clocks (NTP-synchronised, like the sites' `ts` checks assume).
"""

from __future__ import annotations

from typing import Any, Protocol

from .db import StoreBase

LEADER = "leader"


class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, now: float, ttl_s: float) -> int | None: ...
    def renew_lease(self, name: str, holder: str, epoch: int, now: float,
                    ttl_s: float) -> bool: ...
    def release_lease(self, name: str, holder: str, epoch: int) -> bool: ...
    def lease(self, name: str) -> dict[str, Any] | None: ...
    def claim_notification(self, nid: int, name: str, holder: str, epoch: int, now: float,
                           hold_s: float) -> bool: ...
    def notify(self, channel: str, payload: str) -> None: ...


class LeaseMixin(StoreBase):
    """`LeaseStore` on either database."""

    def acquire_lease(self, name: str, holder: str, now: float, ttl_s: float) -> int | None:
        with self._tx():
            rows = self._db.execute(
                "INSERT INTO leases (name, holder, epoch, expires, acquired) "
                "VALUES (?, ?, 1, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "epoch = leases.epoch + 1, expires = excluded.expires, "
                "acquired = excluded.acquired "
                "WHERE leases.expires <= ? OR leases.holder = excluded.holder "
                "RETURNING epoch",
                (name, holder, now + ttl_s, now, now)).fetchall()
        return int(rows[0][0]) if rows else None

    def renew_lease(self, name: str, holder: str, epoch: int, now: float,
                    ttl_s: float) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE leases SET expires = ? WHERE name = ? AND holder = ? AND epoch = ? "
                "AND expires > ?", (now + ttl_s, name, holder, epoch, now))
        return bool(cur.rowcount == 1)

    def release_lease(self, name: str, holder: str, epoch: int) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE leases SET expires = 0 WHERE name = ? AND holder = ? AND epoch = ?",
                (name, holder, epoch))
        return bool(cur.rowcount == 1)

    def lease(self, name: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT name, holder, epoch, expires, acquired FROM leases "
                               "WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(row)

    def claim_notification(self, nid: int, name: str, holder: str, epoch: int, now: float,
                           hold_s: float) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE notifications SET next_at = ? WHERE id = ? AND status = 'queued' "
                "AND next_at <= ? AND EXISTS (SELECT 1 FROM leases WHERE name = ? "
                "AND holder = ? AND epoch = ? AND expires > ?)",
                (now + hold_s, nid, now, name, holder, epoch, now))
        return bool(cur.rowcount == 1)

    def notify(self, channel: str, payload: str) -> None:
        """PostgreSQL's `pg_notify` (the leader's relay of other workers' marks,
        gateway/lease.py `MarkRelay`); nothing on SQLite."""
        if self.dialect.name == "postgres":
            self._db.execute("SELECT pg_notify(?, ?)", (channel, payload))
