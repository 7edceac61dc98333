"""Telemetry: the configured sites and what their controllers said.

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

The overview (`sites_overview`, `site_overview`) and the alert rules' input (`snapshots`) are
`gateway.model` types; whether a site is online, stale or lost is `gateway.model.site_status`
(docs/mqtt.md, "Site status"), never decided here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..model import SiteInfo, SiteSnapshot, SiteSummary, site_summary
from .db import StoreBase, _escaped, _int64, _real, _text

REJECTED_KEEP = 10_000
EXCERPT_BYTES = 200
MAX_EVENTS_LIMIT = 500
HISTORY_EVERY_S = 300
SNAPSHOT_CHUNK = 500  # sites per query in `snapshots(sites=...)` and `latest_raw`
# A stored message as (JSON text, received), either None when the site has none of that kind.
Raw = tuple[str | None, float | None]


class TelemetryStore(Protocol):
    def upsert_sites(self, sites: Iterable[SiteInfo]) -> None: ...
    def site_ids(self) -> frozenset[str]: ...
    def site_municipalities(self) -> dict[str, str]: ...
    def latest(self, site: str) -> dict[str, Any] | None: ...
    def latest_raw(self, sites: Sequence[str]) -> dict[str, dict[str, Raw]]: ...
    def latest_states(self) -> dict[str, dict[str, Any]]: ...
    def put_status(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def put_birth(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def put_state(self, site: str, msg: dict[str, Any], raw: str, received: float) -> None: ...
    def add_event(self, site: str, msg: dict[str, Any], raw: str, received: float
                  ) -> bool | None: ...
    def event_seqs(self, site: str, boot: int, after: int, limit: int = 2000) -> list[int]: ...
    def event_seqs_many(self, keys: Sequence[tuple[str, int, int]],
                        limit: int = 2000) -> dict[tuple[str, int], list[int]]: ...
    def add_rejected(self, received: float, topic: str, reason: str, detail: str,
                     payload: bytes) -> None: ...
    def sites_overview(self, now: float) -> list[SiteSummary]: ...
    def site_overview(self, site: str, now: float) -> SiteSummary | None: ...
    def events(self, site: str, limit: int = 50) -> list[dict[str, Any]]: ...
    def events_of_type(self, site: str, etype: str,
                       limit: int = 50) -> list[dict[str, Any]]: ...
    def rejected(self, limit: int = 50) -> list[dict[str, Any]]: ...
    def stats(self) -> dict[str, Any]: ...
    def reset_site(self, site: str, actor: str, now: float) -> bool: ...
    def state_history(self, site: str, since: float = 0.0,
                      limit: int = 1000) -> list[dict[str, Any]]: ...
    def snapshots(self, site: str | None = None, *,
                  sites: Sequence[str] | None = None) -> list[SiteSnapshot]: ...


class TelemetryMixin(StoreBase):
    """`TelemetryStore` on either database."""

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

    def site_municipalities(self) -> dict[str, str]:
        """Active site -> its municipality."""
        return {r[0]: r[1] for r in
                self._db.execute("SELECT id, municipality FROM sites WHERE active = 1")}

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
        self._write(
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
            self._write(
                f"INSERT INTO site_status (site, {kind}, {kind}_ts, {kind}_received) "
                f"VALUES (?, ?, ?, ?) ON CONFLICT (site) DO UPDATE SET {kind} = excluded.{kind}, "
                f"{kind}_ts = excluded.{kind}_ts, {kind}_received = excluded.{kind}_received",
                (site, _text(raw), None if ts is None else _int64(ts), received), site)

    def latest(self, site: str) -> dict[str, Any] | None:
        """{"status", "birth", "state"}: each the payload plus `received`, or None."""
        row = self._db.execute("SELECT * FROM site_status WHERE site = ?", (site,)).fetchone()
        if row is None:
            return None
        return {kind: payload(row[kind], row[f"{kind}_received"])
                for kind in ("status", "birth", "state")}

    def latest_raw(self, sites: Sequence[str]) -> dict[str, dict[str, Raw]]:
        """For the ingest's group commit: the latest status, birth and state of each of `sites`
        that has any, as stored (JSON text, received), in one query per 500 sites. Inside a
        transaction on PostgreSQL the rows stay locked until it ends (taken in the order of the
        sites, so two workers never wait on each other in a circle): another worker filing a
        message of the same site waits and then reads what this one wrote, and the latest is
        never replaced by an older message that raced it."""
        wanted = sorted(set(sites))
        out: dict[str, dict[str, Raw]] = {}
        for i in range(0, len(wanted), SNAPSHOT_CHUNK):
            chunk = wanted[i:i + SNAPSHOT_CHUNK]
            lock = self.dialect.for_update if self._depth else ""
            for r in self._db.execute(
                    "SELECT site, status, status_received, birth, birth_received, state, "
                    "state_received FROM site_status WHERE site IN "
                    f"({', '.join('?' * len(chunk))}) ORDER BY site{lock}", tuple(chunk)):
                out[r[0]] = {"status": (r[1], r[2]), "birth": (r[3], r[4]),
                             "state": (r[5], r[6])}
        return out

    def latest_states(self) -> dict[str, dict[str, Any]]:
        """Every site's latest state (the payload plus `received`), in one query: for pages that
        show something of each site's state beside its summary."""
        rows = self._db.execute(
            "SELECT site, state, state_received FROM site_status WHERE state IS NOT NULL")
        return {r["site"]: payload(r["state"], r["state_received"]) or {} for r in rows}

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
            self._audit(now, actor, "site_reset", site,
                           f"latest status/birth/state forgotten; {gone} future history rows")
        self._history_last.pop(site, None)
        return True

    # --- events ------------------------------------------------------------------------------

    def add_event(self, site: str, msg: dict[str, Any], raw: str, received: float
                  ) -> bool | None:
        """File one event; False when (site, boot, seq) is already filed. Under
        `defer_writes` on PostgreSQL: None, and (site, boot, seq) among `flush_writes()`'s
        answer when it was new (the events of a group commit go in one pipeline)."""
        row = (site, _int64(msg["boot"]), _int64(msg["seq"]), _int64(msg["ts"]),
               _text(msg["type"]),
               _text(json.dumps(msg["data"], separators=(",", ":"), ensure_ascii=False)),
               1 if msg["hist"] else 0, received)
        with self._tx():
            return self._insert_new(
                "INSERT INTO events (site, boot, seq, ts, type, data, hist, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, boot, seq) DO NOTHING "
                "RETURNING site, boot, seq", row)

    def event_seqs(self, site: str, boot: int, after: int, limit: int = 2000) -> list[int]:
        """The filed seqs of (site, boot) above `after`, ascending (the UNIQUE key's index)."""
        rows = self._db.execute(
            "SELECT seq FROM events WHERE site = ? AND boot = ? AND seq > ? ORDER BY seq LIMIT ?",
            (site, boot, after, limit))
        return [r[0] for r in rows]

    def event_seqs_many(self, keys: Sequence[tuple[str, int, int]],
                        limit: int = 2000) -> dict[tuple[str, int], list[int]]:
        """`event_seqs` for many (site, boot, after) at once, in one query per 300 of them (the
        ingest's acknowledgements after a group commit: one round trip, not one per site)."""
        out: dict[tuple[str, int], list[int]] = {}
        for i in range(0, len(keys), 300):
            chunk = keys[i:i + 300]
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            rows = self._db.execute(
                "SELECT site, boot, seq FROM (SELECT e.site, e.boot, e.seq, ROW_NUMBER() OVER "
                "(PARTITION BY e.site, e.boot ORDER BY e.seq) AS n FROM events e JOIN "
                f"(VALUES {values}) AS k ON e.site = k.column1 AND e.boot = k.column2 "
                "AND e.seq > k.column3) AS found WHERE n <= ? ORDER BY site, boot, seq",
                (*(v for key in chunk for v in key), limit))
            for site, boot, seq in rows:
                out.setdefault((site, int(boot)), []).append(int(seq))
        return out

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

    def sites_overview(self, now: float) -> list[SiteSummary]:
        rows = self._db.execute(
            "SELECT s.*, st.status, st.status_received, st.birth, st.birth_received, st.state, "
            "st.state_ts, st.state_received FROM sites s LEFT JOIN site_status st "
            "ON st.site = s.id WHERE s.active = 1 ORDER BY s.municipality, s.name, s.id")
        return [_summary(r, now) for r in rows]

    def site_overview(self, site: str, now: float) -> SiteSummary | None:
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

    # --- rule inputs -------------------------------------------------------------------------

    def snapshots(self, site: str | None = None, *,
                  sites: Sequence[str] | None = None) -> list[SiteSnapshot]:
        """Active sites (or the one named, or those of `sites`, active or not) with their latest
        messages, for the alert rules. `sites` is read in two queries per 500 sites, not two per
        site: the alert engine's round after a burst names every site that sent something, and
        on PostgreSQL each query is a round trip."""
        if sites is not None:
            wanted = sorted(set(sites))
            return [snap for i in range(0, len(wanted), SNAPSHOT_CHUNK)
                    for snap in self._snapshots(wanted[i:i + SNAPSHOT_CHUNK])]
        return self._snapshots(None if site is None else [site])

    def _snapshots(self, sites: list[str] | None) -> list[SiteSnapshot]:
        if sites == []:
            return []
        args: tuple[str, ...] = ()
        if sites is None:
            where, crisis_where = "s.active = 1", ""
        else:
            marks = ", ".join("?" * len(sites))
            where, args = f"s.id IN ({marks})", tuple(sites)
            crisis_where = f" AND c.site IN ({marks})"
        rows = self._db.execute(
            "SELECT s.*, st.status, st.status_received, st.birth, st.state, st.state_ts, "
            f"st.state_received, st.reset_at FROM sites s LEFT JOIN site_status st "
            f"ON st.site = s.id "
            f"WHERE {where} ORDER BY s.id", args).fetchall()
        unacked: dict[str, list[tuple[str, float]]] = {}
        for r in self._db.execute(
                "SELECT c.site, c.crisis_id, c.ts FROM crisis_sent c WHERE NOT EXISTS "
                "(SELECT 1 FROM crisis_acks a WHERE a.site = c.site AND a.crisis_id = c.crisis_id "
                "AND a.received >= c.ts)" + crisis_where + " ORDER BY c.ts", args):
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


def payload(raw: str | None, received: float | None) -> dict[str, Any] | None:
    """A stored message as the ingest compares it: the payload plus `received`."""
    if raw is None:
        return None
    doc: dict[str, Any] = json.loads(raw)
    doc["received"] = received
    return doc


def _summary(row: Any, now: float) -> SiteSummary:
    return site_summary(_overview_snapshot(row), now)


def _overview_snapshot(row: Any) -> SiteSnapshot:
    return SiteSnapshot(
        info=SiteInfo(row["id"], row["name"], row["municipality"], row["lat"], row["lon"],
                      row["heartbeat_s"]),
        status=json.loads(row["status"]) if row["status"] else None,
        status_received=row["status_received"],
        birth=json.loads(row["birth"]) if row["birth"] else None,
        state=json.loads(row["state"]) if row["state"] else None,
        state_ts=row["state_ts"], state_received=row["state_received"])
