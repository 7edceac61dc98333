"""Crisis messages (gateway/crisis.py).

- `crisis_sent`, `crisis_acks`: crisis messages the gateway sent to a site, and the staff's
  acknowledgements from the panel, these once per (site, boot, seq).
- `crisis_messages`: the text of each crisis message as last sent (JSON payload), who sent it,
  and when it was withdrawn.
- `official_alerts`, `official_cap_versions`: for a crisis message that republishes an official
  alert (a VMA, a Krisinformation item), what the gateway's CAP feed says of it and where it
  came from (gateway/alerts/cap.py `official_alert`), and the versions of that CAP message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from .db import StoreBase, _int64, _text


class CrisisStore(Protocol):
    def record_crisis_sent(self, site: str, crisis_id: str, ts: float,
                           actor: str = "gateway") -> None: ...
    def withdraw_crisis(self, site: str, crisis_id: str, ts: float,
                        actor: str = "gateway") -> None: ...
    def add_crisis_ack(self, site: str, msg: dict[str, Any], received: float) -> bool: ...
    def save_crisis(self, payload: dict[str, Any], actor: str, now: float) -> None: ...
    def mark_crisis_withdrawn(self, crisis_id: str, now: float) -> None: ...
    def crisis_message(self, crisis_id: str) -> dict[str, Any] | None: ...
    def crisis_messages(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def crisis_sites(self, crisis_id: str) -> list[str]: ...
    def crisis_messages_by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    def crisis_deliveries(self) -> dict[str, list[dict[str, Any]]]: ...
    def crisis_delivery(self, crisis_id: str | None = None,
                        site: str | None = None) -> list[dict[str, Any]]: ...
    def crisis_acks(self, site: str) -> list[dict[str, Any]]: ...
    def save_official(self, crisis_id: str, alert: dict[str, Any], now: float) -> None: ...


class OfficialStore(Protocol):
    """What the CAP feed reads of the official alerts the gateway shows."""

    def official_shown(self) -> list[dict[str, Any]]: ...
    def official_cap_versions(self, crisis_id: str, digest: str,
                              now: float) -> list[tuple[int, float]]: ...


class CrisisMixin(StoreBase):
    """`CrisisStore` on either database."""

    # --- crisis messages ---------------------------------------------------------------------

    def record_crisis_sent(self, site: str, crisis_id: str, ts: float,
                           actor: str = "gateway") -> None:
        """The crisis-message sender (issue 7) calls this once it has published the message; the
        rule `crisis_ack_missing` waits for the site's acknowledgement from then on."""
        with self._tx():
            self._db.execute("INSERT INTO crisis_sent (site, crisis_id, ts) VALUES (?, ?, ?) "
                             "ON CONFLICT (site, crisis_id) DO UPDATE SET ts = excluded.ts",
                             (site, crisis_id, ts))
            self._audit(ts, actor, "crisis_sent", f"{site}/{crisis_id}")

    def withdraw_crisis(self, site: str, crisis_id: str, ts: float,
                        actor: str = "gateway") -> None:
        with self._tx():
            self._db.execute("DELETE FROM crisis_sent WHERE site = ? AND crisis_id = ?",
                             (site, crisis_id))
            self._audit(ts, actor, "crisis_withdrawn", f"{site}/{crisis_id}")

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

    def crisis_messages_by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The messages with these ids, in one query (unknown ids are left out)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self._db.execute(f"SELECT * FROM crisis_messages WHERE id IN ({marks})", wanted)
        return {r["id"]: _crisis_row(r) for r in rows}

    def crisis_deliveries(self) -> dict[str, list[dict[str, Any]]]:
        """`crisis_delivery()` for every message at once (one query), by message id."""
        out: dict[str, list[dict[str, Any]]] = {}
        for d in self.crisis_delivery():
            out.setdefault(d["crisis_id"], []).append(d)
        return out

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
        jv = self.dialect.json_value
        return [dict(r) for r in self._db.execute(
            "SELECT c.site, c.crisis_id, c.ts AS sent, "
            "(SELECT MIN(a.received) FROM crisis_acks a WHERE a.site = c.site "
            " AND a.crisis_id = c.crisis_id AND a.received >= c.ts) AS acked, "
            "(SELECT a.by FROM crisis_acks a WHERE a.site = c.site AND a.crisis_id = c.crisis_id "
            " AND a.received >= c.ts ORDER BY a.id LIMIT 1) AS acked_by, "
            # the controller's refusal of this version (a `crisis_refused` event naming the
            # message's ts; docs/mqtt.md, "Crisis messages: sizes and refusals")
            "r.why AS refused, r.received AS refused_at "
            f"FROM crisis_sent c LEFT JOIN ({self._refusals()}) r "
            "ON r.site = c.site AND r.id = c.crisis_id "
            f"AND (r.msg_ts = (SELECT {jv('m.payload', 'ts')} FROM crisis_messages m "
            "  WHERE m.id = c.crisis_id) OR (r.msg_ts IS NULL AND r.received >= c.ts)) "
            f"{where} ORDER BY c.ts DESC, c.site", args)]

    def _refusals(self) -> str:
        """The latest `crisis_refused` event per (site, message id, message ts) as rows (site,
        id, msg_ts, why, received)."""
        jt, jv = self.dialect.json_text, self.dialect.json_value
        return (f"SELECT site, id, msg_ts, why, received FROM (SELECT v.site, "
                f"{jt('v.data', 'id')} AS id, {jv('v.data', 'msg_ts')} AS msg_ts, "
                f"{jt('v.data', 'why')} AS why, v.received, ROW_NUMBER() OVER (PARTITION BY "
                f"v.site, {jt('v.data', 'id')}, {jv('v.data', 'msg_ts')} "
                "ORDER BY v.received DESC, v.id DESC) AS k "
                "FROM events v WHERE v.type = 'crisis_refused') x WHERE k = 1")

    def crisis_acks(self, site: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT crisis_id, boot, seq, ts, by, received FROM crisis_acks WHERE site = ? "
            "ORDER BY id", (site,))]

    # --- official alerts republished ---------------------------------------------------------

    def save_official(self, crisis_id: str, alert: dict[str, Any], now: float) -> None:
        """What the crisis message `crisis_id` republishes: the official alert as the CAP feed
        tells it (a JSON object), replaced by each send of the message."""
        with self._tx():
            self._db.execute(
                "INSERT INTO official_alerts (crisis_id, alert, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (crisis_id) DO UPDATE SET alert = excluded.alert, "
                "updated = excluded.updated",
                (crisis_id, json.dumps(alert, ensure_ascii=False), now))

    def official_shown(self) -> list[dict[str, Any]]:
        """The official alerts on at least one site now (their crisis message not withdrawn),
        newest first, each as {"crisis_id", "alert", "updated", "sites": [{"id", "name",
        "municipality", "lat", "lon"}, ...] by site id}. Two queries, whatever their number."""
        rows = list(self._db.execute(
            "SELECT o.crisis_id, o.alert, o.updated FROM official_alerts o "
            "JOIN crisis_messages m ON m.id = o.crisis_id WHERE m.withdrawn IS NULL "
            "AND EXISTS (SELECT 1 FROM crisis_sent c WHERE c.crisis_id = o.crisis_id) "
            "ORDER BY o.updated DESC, o.crisis_id"))
        if not rows:
            return []
        where: dict[str, list[dict[str, Any]]] = {}
        for r in self._db.execute(
                "SELECT c.crisis_id, s.id, s.name, s.municipality, s.lat, s.lon "
                "FROM crisis_sent c JOIN sites s ON s.id = c.site ORDER BY c.crisis_id, s.id"):
            where.setdefault(r["crisis_id"], []).append(
                {k: r[k] for k in ("id", "name", "municipality", "lat", "lon")})
        return [{"crisis_id": r["crisis_id"], "alert": json.loads(r["alert"]),
                 "updated": r["updated"], "sites": where.get(r["crisis_id"], [])}
                for r in rows]

    def official_cap_versions(self, crisis_id: str, digest: str,
                              now: float) -> list[tuple[int, float]]:
        """As `cap_versions` (gateway/store/alerts.py), for a republished official alert."""
        last = self._db.execute(
            "SELECT n, digest FROM official_cap_versions WHERE crisis_id = ? "
            "ORDER BY n DESC LIMIT 1", (crisis_id,)).fetchone()
        if last is None or last["digest"] != digest:
            with self._tx():  # (another process first: its version stands)
                self._db.execute(
                    "INSERT INTO official_cap_versions (crisis_id, n, digest, sent) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (crisis_id, (last["n"] if last else 0) + 1, digest, now))
        return [(int(r[0]), float(r[1])) for r in self._db.execute(
            "SELECT n, sent FROM official_cap_versions WHERE crisis_id = ? ORDER BY n",
            (crisis_id,))]


def _crisis_row(row: Any) -> dict[str, Any]:
    return {**json.loads(row["payload"]), "created_by": row["created_by"],
            "updated": row["updated"], "withdrawn": row["withdrawn"]}
