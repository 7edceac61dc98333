"""The official-alert feeds' state (gateway/feeds/run.py), so that it outlives the process.

- `feed_state`: one row, the feeds' state as JSON: the alerts held, what each is out as on
  the panels, what awaits a coordinator, the feeds' health. The process that runs the feeds
  writes it after every poll and every approval; a restarted gateway, or another worker taking
  the feeds over, starts from it, and every worker's `/feeds` page shows it.
- `feed_approvals`: a coordinator's approval, as a request to the process that runs the feeds
  (whichever worker the coordinator's browser reached): who, which alert, the local note, and
  the outcome once handled ("done", "too_long" with the room there was, "gone").
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .db import StoreBase, _text


class FeedStateStore(Protocol):
    def save_feed_state(self, state: dict[str, Any], now: float) -> None: ...
    def feed_state(self) -> tuple[dict[str, Any], float] | None: ...
    def request_feed_approval(self, key: str, actor: str, note: str | None,
                              now: float) -> int: ...
    def open_feed_approvals(self) -> list[dict[str, Any]]: ...
    def finish_feed_approval(self, request: int, outcome: str, now: float) -> None: ...
    def feed_approval(self, request: int) -> dict[str, Any] | None: ...


class FeedStateMixin(StoreBase):
    """`FeedStateStore` on either database."""

    def save_feed_state(self, state: dict[str, Any], now: float) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO feed_state (id, state, updated) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                "updated = excluded.updated",
                (json.dumps(state, ensure_ascii=False), now))

    def feed_state(self) -> tuple[dict[str, Any], float] | None:
        """The state last saved and when, or None before the first save."""
        row = self._db.execute("SELECT state, updated FROM feed_state WHERE id = 1").fetchone()
        return None if row is None else (json.loads(row["state"]), float(row["updated"]))

    def request_feed_approval(self, key: str, actor: str, note: str | None,
                              now: float) -> int:
        with self._tx():
            got = self._insert_id(
                "INSERT INTO feed_approvals (key, actor, note, requested) VALUES (?, ?, ?, ?) "
                "RETURNING id", (_text(key), _text(actor), None if note is None else _text(note),
                                 now))
        assert got is not None
        return got

    def open_feed_approvals(self) -> list[dict[str, Any]]:
        """Requests not handled yet, oldest first."""
        return [dict(r) for r in self._db.execute(
            "SELECT id, key, actor, note, requested FROM feed_approvals WHERE outcome IS NULL "
            "ORDER BY id")]

    def finish_feed_approval(self, request: int, outcome: str, now: float) -> None:
        with self._tx():
            self._db.execute("UPDATE feed_approvals SET outcome = ?, handled = ? WHERE id = ?",
                             (outcome, now, request))

    def feed_approval(self, request: int) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM feed_approvals WHERE id = ?",
                               (request,)).fetchone()
        return None if row is None else dict(row)
