"""Signed commands (docs/commands.md): the last counter used per site (it only grows) and every
command sent; their results arrive as `cmd_result` events (telemetry)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from .db import StoreBase, _escaped


class CommandStore(Protocol):
    def next_cmd_counter(self, site: str, now: float) -> int: ...
    def add_command(self, site: str, name: str, body: dict[str, Any], actor: str) -> None: ...
    def commands(self, site: str, limit: int = 50) -> list[dict[str, Any]]: ...


class CommandMixin(StoreBase):
    """`CommandStore` on either database."""

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
            self._audit(body["issued"], actor, "cmd_sent", f"{site}/{name}/{body['id']}",
                           json.dumps(body.get("args") or {}, sort_keys=True))

    def commands(self, site: str, limit: int = 50) -> list[dict[str, Any]]:
        """The site's commands, newest first, each with the results filed for it (oldest
        first)."""
        rows = [dict(r) for r in self._db.execute(
            "SELECT id, site, name, args, issued, expires, counter, actor FROM commands "
            "WHERE site = ? ORDER BY issued DESC, counter DESC LIMIT ?", (site, int(limit)))]
        if not rows:
            return rows
        # every result for these commands in one query (a page lists them: no query per row)
        jid = self.dialect.json_text("data", "id")
        marks = ",".join("?" * len(rows))
        by_id: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
        for x in self._db.execute(
                f"SELECT {jid} AS cid, data FROM events WHERE site = ? AND type = 'cmd_result' "
                f"AND {jid} IN ({marks}) ORDER BY received, boot, seq",
                (site, *by_id)):
            by_id[x["cid"]].append(json.loads(x["data"]))
        for r in rows:
            r["args"] = json.loads(r["args"])
            r["results"] = by_id[r["id"]]
        return rows
