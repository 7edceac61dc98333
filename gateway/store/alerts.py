"""Alerts and their notifications.

- `alerts`: every alert the engine opened (`gateway/alerts/`), with its lifecycle
  pending -> firing -> acknowledged -> resolved. At most one alert per de-duplication key is
  open (a partial unique index), so a repeated evaluation can never open a second one.
- `acks`: who acknowledged which alert, when, with what note.
- `notifications` (one per message to one contact over one channel) and `notify_attempts`
  (every try, with its outcome and error): a failed notification stays visible, never lost.
- `cap_versions`: each CAP message published for an alert (number, content digest, sent), so
  an identifier is never reused for changed content (`gateway/alerts/cap.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..model import ALERT_FIELDS, AlertRecord, Notification
from .db import StoreBase


class AlertStore(Protocol):
    def alerts(self, *, open_only: bool = True, site: str | None = None,
               municipality: str | None = None, resolved_since: float | None = None,
               limit: int = 100_000,
               municipalities: Sequence[str] | None = None,
               not_municipalities: Sequence[str] = ()) -> list[AlertRecord]: ...
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
    def cap_versions(self, alert_id: int, digest: str, now: float) -> list[tuple[int, float]]: ...


class AlertMixin(StoreBase):
    """`AlertStore` on either database."""

    # --- alerts ------------------------------------------------------------------------------

    def alerts(self, *, open_only: bool = True, site: str | None = None,
               municipality: str | None = None, resolved_since: float | None = None,
               limit: int = 100_000,
               municipalities: Sequence[str] | None = None,
               not_municipalities: Sequence[str] = ()) -> list[AlertRecord]:
        """Open alerts (and with `resolved_since`, those resolved since then), or with
        `open_only=False` every alert; newest first. `municipalities`: those of any of them, in
        one query (the alert engine's round over the sites that sent something);
        `not_municipalities`: none of those (its timed round, for what no part covered)."""
        clauses: list[str] = []
        args: list[Any] = []
        if municipality is not None:
            clauses.append("municipality = ?")
            args.append(municipality)
        if municipalities is not None:
            if not municipalities:
                return []
            clauses.append(f"municipality IN ({', '.join('?' * len(municipalities))})")
            args.extend(municipalities)
        if not_municipalities:
            clauses.append(f"municipality NOT IN ({', '.join('?' * len(not_municipalities))})")
            args.extend(not_municipalities)
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
            return self._insert_id(
                f"INSERT INTO alerts ({', '.join(ALERT_FIELDS)}) VALUES "
                f"({', '.join('?' * len(ALERT_FIELDS))}) ON CONFLICT DO NOTHING RETURNING id",
                values)

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
            self._audit(now, by, "ack", f"alert {rec.id} {rec.key}", note)
        return self.alert(rec.id)

    def acks(self, alert_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT ts, by, note FROM acks WHERE alert_id = ? ORDER BY id", (alert_id,))]

    # --- notifications -----------------------------------------------------------------------

    def add_notifications(self, jobs: Iterable[Notification], now: float) -> list[int]:
        ids = []
        with self._tx():
            for j in jobs:
                nid = self._insert_id(
                    "INSERT INTO notifications (alert_id, kind, contact, channel, target, "
                    "subject, body, idem, status, attempts, next_at, created) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?) ON CONFLICT (idem) DO NOTHING "
                    "RETURNING id",
                    (j.alert_id, j.kind, j.contact, j.channel, j.target, j.subject, j.body,
                     j.idem, j.next_at or now, now))
                if nid is not None:
                    ids.append(nid)
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


def _alert(row: Any) -> AlertRecord:
    values = {f: row[f] for f in ALERT_FIELDS}
    values["data"] = json.loads(row["data"] or "{}")
    return AlertRecord(id=row["id"], **values)
