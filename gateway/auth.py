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

Throttling: failed logins are counted per client address and per user name in a sliding window;
past the limit the address or the name is locked out for `lockout_s`, and while locked no
password is even checked (so a locked account cannot be probed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class Sessions:
    """In-memory sessions with an absolute lifetime."""

    clock: Callable[[], float] = time.time
    lifetime_s: float = 12 * 3600
    _by_token: dict[str, Session] = field(default_factory=dict)

    def create(self, user: str, role: str) -> Session:
        self._sweep()
        s = Session(secrets.token_urlsafe(32), user, role, secrets.token_urlsafe(32),
                    self.clock() + self.lifetime_s)
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
    """Failed logins per key ("ip:<addr>" or "user:<name>") in a sliding window of `window_s`.
    `max_per_user` failures lock the name, `max_per_ip` lock the address, for `lockout_s`."""

    clock: Callable[[], float] = time.time
    window_s: float = 900.0
    max_per_user: int = 5
    max_per_ip: int = 20
    lockout_s: float = 900.0
    _fails: dict[str, list[float]] = field(default_factory=dict)
    _locked: dict[str, float] = field(default_factory=dict)

    def locked_for(self, ip: str, user: str) -> float:
        """Seconds left of a lockout on this address or this name (0: may try)."""
        now = self.clock()
        left = 0.0
        for key in (f"ip:{ip}", f"user:{user}"):
            until = self._locked.get(key)
            if until is not None:
                if until > now:
                    left = max(left, until - now)
                else:
                    del self._locked[key]
        return left

    def failed(self, ip: str, user: str) -> None:
        now = self.clock()
        for key, limit in ((f"ip:{ip}", self.max_per_ip), (f"user:{user}", self.max_per_user)):
            recent = [t for t in self._fails.get(key, []) if t > now - self.window_s]
            recent.append(now)
            self._fails[key] = recent
            if len(recent) >= limit:
                self._locked[key] = now + self.lockout_s
                self._fails[key] = []
        if len(self._fails) > 10_000:  # a scan over many names must not grow memory forever
            self._fails = {k: v for k, v in self._fails.items() if v and v[-1] > now - 60}

    def succeeded(self, ip: str, user: str) -> None:
        self._fails.pop(f"user:{user}", None)
