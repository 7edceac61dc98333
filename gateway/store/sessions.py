"""Web sessions and the login throttle's counters, in the store so that every gateway worker
behind one proxy knows every login and counts every failure (`gateway/auth.py` holds the rules;
these are only its rows).

- `sessions`: one row per live session, found by `key`, the SHA-256 of the cookie's token (hex).
  The token itself is never stored: a dump or a backup of the database must not hand out live
  sessions. The CSRF token is stored as it is (it is worth nothing without the cookie); `stamp`
  is a digest of the user's password hash at login. Expired rows are swept a bounded number at
  a time, at every new login.
- `login_failures`: one row per failed login per throttle key (`pair:ADDR|NAME`, `ip:ADDR`,
  `user:NAME`) with its time. Rows older than the throttle's window are deleted at every
  failure; past `MAX_KEYS` keys (a scan over many names), the keys idle for `IDLE_S` go too.
- `login_known`: the addresses each user has logged in from, the `KNOWN_PER_USER` most recent.

Text from a login form is untrusted: names and addresses are stored escaped (`_escaped`: never
fails, whatever a client typed) and cut to a length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .db import StoreBase, _escaped

SWEEP_ROWS = 100  # expired sessions deleted per login, at most
MAX_KEYS = 30_000  # throttle keys kept before the idle ones are dropped
IDLE_S = 60.0  # ... those whose last failure is older than this
KNOWN_PER_USER = 20


class SessionStore(Protocol):
    """The web's sessions (`auth.Sessions` takes this)."""

    def add_session(self, key: str, name: str, role: str, csrf: str, stamp: str,
                    created: float, expires: float) -> None: ...
    def session(self, key: str) -> dict[str, Any] | None: ...
    def set_session_role(self, key: str, role: str) -> None: ...
    def drop_session(self, key: str) -> None: ...
    def drop_sessions_of(self, name: str) -> int: ...
    def sweep_sessions(self, now: float, limit: int = SWEEP_ROWS) -> int: ...


class ThrottleStore(Protocol):
    """The login throttle's counters (`auth.LoginThrottle` takes this)."""

    def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        """key -> (failures after `since`, time of the last one), for the keys that have any."""
        ...

    def add_login_failure(self, keys: Sequence[str], now: float, since: float) -> None:
        """One failure at `now` under each key; failures at or before `since` are forgotten."""
        ...

    def clear_login_failures(self, key: str) -> None: ...
    def login_known(self, name: str, addr: str) -> bool: ...
    def add_login_address(self, name: str, addr: str, now: float) -> None: ...


def _key(text: str) -> str:
    return _escaped(text[:256])


class SessionMixin(StoreBase):
    """`SessionStore` and `ThrottleStore` on either database."""

    # --- sessions ----------------------------------------------------------------------------

    def add_session(self, key: str, name: str, role: str, csrf: str, stamp: str,
                    created: float, expires: float) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO sessions (key, name, role, csrf, stamp, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, _key(name), role, csrf, stamp, created, expires))

    def session(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT key, name, role, csrf, stamp, created, expires FROM sessions WHERE key = ?",
            (key,)).fetchone()
        return None if row is None else dict(row)

    def set_session_role(self, key: str, role: str) -> None:
        with self._tx():
            self._db.execute("UPDATE sessions SET role = ? WHERE key = ?", (role, key))

    def drop_session(self, key: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM sessions WHERE key = ?", (key,))

    def drop_sessions_of(self, name: str) -> int:
        with self._tx():
            cur = self._db.execute("DELETE FROM sessions WHERE name = ?", (_key(name),))
        return int(cur.rowcount)

    def sweep_sessions(self, now: float, limit: int = SWEEP_ROWS) -> int:
        """Delete up to `limit` sessions expired at `now` (bounded work per call)."""
        with self._tx():
            cur = self._db.execute(
                "DELETE FROM sessions WHERE key IN "
                "(SELECT key FROM sessions WHERE expires <= ? ORDER BY expires LIMIT ?)",
                (now, int(limit)))
        return int(cur.rowcount)

    # --- login throttle ----------------------------------------------------------------------

    def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        stored = {_key(k): k for k in keys}
        if not stored:
            return {}
        marks = ", ".join("?" * len(stored))
        rows = self._db.execute(
            f"SELECT key, COUNT(*), MAX(ts) FROM login_failures WHERE key IN ({marks}) "
            "AND ts > ? GROUP BY key", (*stored, since)).fetchall()
        return {stored[r[0]]: (int(r[1]), float(r[2])) for r in rows}

    def add_login_failure(self, keys: Sequence[str], now: float, since: float) -> None:
        with self._tx():
            self._db.execute("DELETE FROM login_failures WHERE ts <= ?", (since,))
            self._db.executemany("INSERT INTO login_failures (key, ts) VALUES (?, ?)",
                                 [(_key(k), now) for k in keys])
            # A scan over many names or addresses: past MAX_KEYS keys, those idle for a minute
            # go. Counting rows first keeps the usual case to one cheap count (keys <= rows).
            if self._one("SELECT COUNT(*) FROM login_failures") > MAX_KEYS and self._one(
                    "SELECT COUNT(*) FROM (SELECT DISTINCT key FROM login_failures) k") \
                    > MAX_KEYS:
                self._db.execute(
                    "DELETE FROM login_failures WHERE key IN (SELECT key FROM login_failures "
                    "GROUP BY key HAVING MAX(ts) <= ?)", (now - IDLE_S,))

    def clear_login_failures(self, key: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM login_failures WHERE key = ?", (_key(key),))

    def login_known(self, name: str, addr: str) -> bool:
        return self._db.execute("SELECT 1 FROM login_known WHERE name = ? AND addr = ?",
                                (_key(name), _key(addr))).fetchone() is not None

    def add_login_address(self, name: str, addr: str, now: float) -> None:
        n, a = _key(name), _key(addr)
        with self._tx():
            self._db.execute(
                "INSERT INTO login_known (name, addr, ts) VALUES (?, ?, ?) "
                "ON CONFLICT (name, addr) DO UPDATE SET ts = excluded.ts", (n, a, now))
            self._db.execute(
                "DELETE FROM login_known WHERE name = ? AND addr NOT IN (SELECT addr FROM "
                "login_known WHERE name = ? ORDER BY ts DESC, addr LIMIT ?)",
                (n, n, KNOWN_PER_USER))
