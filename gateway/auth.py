"""Who may use the dashboard: password hashes, sessions, CSRF tokens and login throttling.

Passwords: scrypt (RFC 7914) with a 16-byte random salt per user, stored as
`scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>` so the cost can be raised later without breaking
stored hashes. n=2**14, r=8, p=1 takes about 50 ms and 16 MiB here: slow for a guesser, quick
enough for a login. Users live in the gateway's SQLite store (`users` table, outside git) and are
managed with `sot user add/list/remove`; there is no default user and no default password.

Roles are ordered: viewer < coordinator < admin. A viewer reads, a coordinator also acknowledges
alerts and sends crisis messages, an admin also reads the audit log.

Sessions are kept in memory (a gateway restart logs everyone out, which is acceptable for a
dashboard and keeps secrets off disk). The session cookie is HttpOnly and SameSite=Strict; each
session has its own CSRF token that every POST must carry (form field `csrf` or header
`X-CSRF-Token`). The login form itself is protected with a double-submit cookie.

Sessions end when the user is removed, gets a new password, or after `lifetime_s`; a changed
role applies from the next request (`Sessions.recheck`, called on every request).

Throttling (`LoginThrottle`): failures slow down the address that fails, growing with each
failure; an account is never locked for everyone, and an address the user has logged in from
before is never slowed down by failures from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("viewer", "coordinator", "admin")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # scrypt of a megabyte "password" is a cheap denial of service otherwise
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


def valid_username(name: str) -> bool:
    return 1 <= len(name) <= 64 and set(name) <= USERNAME_CHARS


def role_at_least(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"password must be {MIN_PASSWORD}..{MAX_PASSWORD} characters")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt" or len(password) > MAX_PASSWORD:
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=64 * 1024 * 1024, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


# A hash of a random password, checked when the user does not exist, so that a login attempt
# for an unknown name takes as long as one for a known name.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def check_login(stored: str | None, password: str) -> bool:
    if stored is None:
        verify_password(password, _DUMMY_HASH)
        return False
    return verify_password(password, stored)


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    expires: float
    stamp: str = ""  # the user's password hash at login: a new password ends the session


@dataclass
class Sessions:
    """In-memory sessions with an absolute lifetime. `recheck` ties each one to the user as the
    database has it now: `sot user` runs in another process, so the web looks the user up on
    every request instead of waiting to be told."""

    clock: Callable[[], float] = time.time
    lifetime_s: float = 12 * 3600
    _by_token: dict[str, Session] = field(default_factory=dict)

    def create(self, user: str, role: str, stamp: str = "") -> Session:
        self._sweep()
        s = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32),
                    self.clock() + self.lifetime_s, stamp)
        self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None or s.expires <= self.clock():
            self._by_token.pop(token or "", None)
            return None
        return s

    def recheck(self, token: str | None, row: dict[str, Any] | None) -> Session | None:
        """The session of `token` as the user's stored `row` allows now: ended when the user is
        gone or has a new password, with the stored role when the role changed."""
        s = self.get(token)
        if s is None:
            return None
        if row is None or row.get("name") != s.user or row.get("pwhash", "") != s.stamp \
                or row.get("role") not in ROLES:
            self.drop_user(s.user)
            return None
        s.role = str(row["role"])
        return s

    def drop(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def drop_user(self, user: str) -> None:
        for t in [t for t, s in self._by_token.items() if s.user == user]:
            del self._by_token[t]

    def _sweep(self) -> None:
        now = self.clock()
        for t in [t for t, s in self._by_token.items() if s.expires <= now]:
            del self._by_token[t]


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and bool(token) and hmac.compare_digest(session.csrf, token or "")


@dataclass
class LoginThrottle:
    """Failed logins slow down whoever fails; they never lock an account for everyone.

    Failures within `window_s` are counted under three keys. Past its free allowance each key
    asks for a pause before the next try, doubling with every further failure from `base_s` up
    to its cap; a try during the pause is refused without a password check and is not counted,
    so hammering does not lengthen it.

        (address, name)  `free_pair` failures, then up to `max_delay_s`: a guesser at one
                         account from one address
        address          `free_addr` failures over any names, then up to `max_delay_s`: one
                         address trying many names
        name             `free_name` failures from all addresses together, then up to
                         `name_delay_s` (short): a guesser spread over many addresses. This one
                         does not apply to an address the user has logged in from before, so
                         nobody can lock a coordinator out by failing on purpose.

    Names are public (they may appear in logs and mails), so no rule depends on keeping them
    secret. Memory is bounded: a scan over many names or addresses prunes old keys.
    """

    clock: Callable[[], float] = time.time
    window_s: float = 900.0
    free_pair: int = 5
    free_addr: int = 20
    free_name: int = 50
    base_s: float = 2.0
    max_delay_s: float = 900.0
    name_delay_s: float = 60.0
    _fails: dict[str, list[float]] = field(default_factory=dict)
    _known: dict[str, dict[str, float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> list[float]:
        recent = [t for t in self._fails.get(key, ()) if t > now - self.window_s]
        if recent:
            self._fails[key] = recent
        else:
            self._fails.pop(key, None)
        return recent

    def _wait(self, key: str, free: int, cap: float, now: float) -> float:
        recent = self._recent(key, now)
        over = len(recent) - free
        if over < 0:
            return 0.0
        delay = min(self.base_s * 2 ** min(over, 40), cap)
        return max(0.0, recent[-1] + delay - now)

    def locked_for(self, ip: str, user: str) -> float:
        """Seconds this address must wait before it may try this name again (0: may try)."""
        now = self.clock()
        waits = [self._wait(f"pair:{ip}|{user}", self.free_pair, self.max_delay_s, now),
                 self._wait(f"ip:{ip}", self.free_addr, self.max_delay_s, now)]
        if ip not in self._known.get(user, {}):
            waits.append(self._wait(f"user:{user}", self.free_name, self.name_delay_s, now))
        return max(waits)

    def failed(self, ip: str, user: str) -> None:
        now = self.clock()
        for key in (f"pair:{ip}|{user}", f"ip:{ip}", f"user:{user}"):
            self._recent(key, now)
            self._fails.setdefault(key, []).append(now)
        if len(self._fails) > 30_000:  # a scan over many names must not grow memory forever
            self._fails = {k: v for k, v in self._fails.items() if v[-1] > now - 60}

    def succeeded(self, ip: str, user: str) -> None:
        self._fails.pop(f"pair:{ip}|{user}", None)
        known = self._known.setdefault(user, {})
        known[ip] = self.clock()
        if len(known) > 20:  # the most recent addresses of this user
            for old in sorted(known, key=known.__getitem__)[:-20]:
                del known[old]
