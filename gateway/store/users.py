"""Dashboard users and the audit log.

- `users`: dashboard users with role and scrypt hash (`gateway/auth.py`); never in git.
  Removing a user also deletes their sessions and known addresses (`gateway/store/sessions.py`).
- `audit`: who did what (acknowledgements, crisis messages sent, commands, site resets,
  notifications given up). The other aggregates write their audit rows inside their own
  transaction (`StoreBase._audit`).
"""

from __future__ import annotations

from typing import Any, Protocol

from .db import StoreBase


class UserStore(Protocol):
    def put_user(self, name: str, role: str, pwhash: str, now: float) -> None: ...
    def user(self, name: str) -> dict[str, Any] | None: ...
    def users(self) -> list[dict[str, Any]]: ...
    def remove_user(self, name: str) -> bool: ...


class AuditStore(Protocol):
    def add_audit(self, ts: float, actor: str, action: str, target: str,
                  detail: str = "") -> None: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...


class UserMixin(StoreBase):
    """`UserStore` on either database."""

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
        """Remove the user and end their sessions (on every worker: they are in the store).
        The addresses they logged in from go too: someone given the name later starts with
        none (`auth.LoginThrottle`)."""
        with self._tx():
            cur = self._db.execute("DELETE FROM users WHERE name = ?", (name,))
            self._db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            self._db.execute("DELETE FROM login_known WHERE name = ?", (name,))
        return cur.rowcount == 1


class AuditMixin(StoreBase):
    """`AuditStore` on either database."""

    # --- audit -------------------------------------------------------------------------------

    def add_audit(self, ts: float, actor: str, action: str, target: str,
                  detail: str = "") -> None:
        with self._tx():
            self._audit(ts, actor, action, target, detail)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(
            "SELECT ts, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
            (int(limit),))]
