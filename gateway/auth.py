"""Who may use the dashboard: password hashes, sessions, CSRF tokens and login throttling.

Passwords: scrypt (RFC 7914) with a 16-byte random salt per user, stored as
`scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>` so the cost can be raised later without breaking
stored hashes. n=2**14, r=8, p=1 takes about 50 ms and 16 MiB here: slow for a guesser, quick
enough for a login. Users live in the gateway's store (`users` table, outside git) and are
managed with `sot user add/list/remove`; there is no default user and no default password.

Roles are ordered: viewer < coordinator < admin. A viewer reads, a coordinator also acknowledges
alerts and sends crisis messages, an admin also reads the audit log.

Sessions are kept in the store (`gateway/store/sessions.py`), so every gateway worker behind one
proxy serves every logged-in user, and a gateway restart keeps them logged in. The store holds
a SHA-256 of each session's token, never the token, so a copy of the database (a dump, a
backup) gives no one a live session. The session cookie is HttpOnly and SameSite=Strict; each
session has its own CSRF token that every POST must carry (form field `csrf` or header
`X-CSRF-Token`). The login form itself is protected with a double-submit cookie.

Sessions end when the user is removed, gets a new password, or after `lifetime_s`; a changed
role applies from the next request (`Sessions.recheck`, called on every request).

Throttling (`LoginThrottle`): failures slow down the address that fails, growing with each
failure; an account is never locked for everyone, and an address the user has logged in from
before is never slowed down by failures from elsewhere. Its counters are in the store too, so
failures spread over several workers count as on one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .store.sessions import IDLE_S, KNOWN_PER_USER, MAX_KEYS, SessionStore, ThrottleStore

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
    token: str  # the cookie's value (the store keeps only its digest, `token_digest`)
    user: str
    role: str
    csrf: str
    expires: float
    stamp: str = ""  # a digest of the user's password hash at login: a new password ends it


def token_digest(token: str) -> str:
    """What the store keeps of a session token (and of a password hash, as the session's stamp):
    SHA-256, hex. The token is 256 random bits, so no salt or slow hash is needed: nobody can
    find a token from its digest, and a dump of the store holds no live session."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Sessions:
    """Sessions with an absolute lifetime, kept in the store (`store.sessions.SessionStore`) so
    that every gateway worker knows every login: a session made on one worker is used, ended or
    refused on any other. `recheck` ties each one to the user as the database has it now:
    `sot user` runs in another process, so the web looks the user up on every request instead
    of waiting to be told."""

    store: SessionStore
    clock: Callable[[], float] = time.time
    lifetime_s: float = 12 * 3600

    def create(self, user: str, role: str, stamp: str = "") -> Session:
        now = self.clock()
        self.store.sweep_sessions(now)
        token = secrets.token_urlsafe(32)
        s = Session(token, user, role, secrets.token_urlsafe(32), now + self.lifetime_s,
                    token_digest(stamp))
        self.store.add_session(token_digest(token), s.user, s.role, s.csrf, s.stamp, now,
                               s.expires)
        return s

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 256:
            return None
        key = token_digest(token)
        row = self.store.session(key)
        if row is None:
            return None
        if row["expires"] <= self.clock():
            self.store.drop_session(key)
            return None
        return Session(token, str(row["name"]), str(row["role"]), str(row["csrf"]),
                       float(row["expires"]), str(row["stamp"]))

    def recheck(self, token: str | None, row: dict[str, Any] | None,
                session: Session | None = None) -> Session | None:
        """The session of `token` as the user's stored `row` allows now: ended when the user is
        gone or has a new password, with the stored role when the role changed. `session`: what
        `get(token)` just gave, to spare the store a second look."""
        s = session if session is not None and session.token == token else self.get(token)
        if s is None:
            return None
        if row is None or row.get("name") != s.user \
                or token_digest(str(row.get("pwhash", ""))) != s.stamp \
                or row.get("role") not in ROLES:
            self.drop_user(s.user)
            return None
        if row["role"] != s.role:
            s.role = str(row["role"])
            self.store.set_session_role(token_digest(s.token), s.role)
        return s

    def drop(self, token: str | None) -> None:
        if token and len(token) <= 256:
            self.store.drop_session(token_digest(token))

    def drop_user(self, user: str) -> None:
        self.store.drop_sessions_of(user)


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and bool(token) and hmac.compare_digest(session.csrf, token or "")


class MemoryCounters:
    """`ThrottleStore` in this process's memory: for a `LoginThrottle` used on its own (tests,
    tools). The web binds its throttle to the store instead (`web.make_app`), so that every
    worker counts the same failures."""

    def __init__(self) -> None:
        self._fails: dict[str, list[float]] = {}
        self._known: dict[str, dict[str, float]] = {}

    def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        out = {}
        for key in keys:
            recent = [t for t in self._fails.get(key, ()) if t > since]
            if recent:
                out[key] = (len(recent), max(recent))
        return out

    def add_login_failure(self, keys: Sequence[str], now: float, since: float) -> None:
        for key in keys:
            recent = [t for t in self._fails.get(key, ()) if t > since]
            self._fails[key] = [*recent, now]
        if len(self._fails) > MAX_KEYS:  # a scan over many names must not grow memory forever
            self._fails = {k: v for k, v in self._fails.items() if v[-1] > now - IDLE_S}

    def clear_login_failures(self, key: str) -> None:
        self._fails.pop(key, None)

    def login_known(self, name: str, addr: str) -> bool:
        return addr in self._known.get(name, {})

    def add_login_address(self, name: str, addr: str, now: float) -> None:
        known = self._known.setdefault(name, {})
        known[addr] = now
        if len(known) > KNOWN_PER_USER:  # the most recent addresses of this user
            for old in sorted(known, key=known.__getitem__)[:-KNOWN_PER_USER]:
                del known[old]


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
    secret. The failures and each user's known addresses (the 20 most recent) are kept in
    `counters`: the store for the web (`web.make_app` binds it), so that failures on several
    gateway workers add up as on one; this process's memory when none is given. Either is
    bounded: failures older than the window are dropped, and a scan over many names or
    addresses (past 30 000 keys) drops the keys idle for a minute.
    """

    clock: Callable[[], float] = time.time
    window_s: float = 900.0
    free_pair: int = 5
    free_addr: int = 20
    free_name: int = 50
    base_s: float = 2.0
    max_delay_s: float = 900.0
    name_delay_s: float = 60.0
    counters: ThrottleStore = field(default_factory=MemoryCounters)

    def _wait(self, seen: tuple[int, float] | None, free: int, cap: float, now: float) -> float:
        count, last = seen or (0, 0.0)
        over = count - free
        if over < 0:
            return 0.0
        delay = min(self.base_s * 2 ** min(over, 40), cap)
        return max(0.0, last + delay - now)

    def locked_for(self, ip: str, user: str) -> float:
        """Seconds this address must wait before it may try this name again (0: may try)."""
        now = self.clock()
        pair, addr, name = f"pair:{ip}|{user}", f"ip:{ip}", f"user:{user}"
        seen = self.counters.login_failures((pair, addr, name), now - self.window_s)
        waits = [self._wait(seen.get(pair), self.free_pair, self.max_delay_s, now),
                 self._wait(seen.get(addr), self.free_addr, self.max_delay_s, now)]
        if not self.counters.login_known(user, ip):
            waits.append(self._wait(seen.get(name), self.free_name, self.name_delay_s, now))
        return max(waits)

    def failed(self, ip: str, user: str) -> None:
        now = self.clock()
        self.counters.add_login_failure((f"pair:{ip}|{user}", f"ip:{ip}", f"user:{user}"), now,
                                        now - self.window_s)

    def succeeded(self, ip: str, user: str) -> None:
        self.counters.clear_login_failures(f"pair:{ip}|{user}")
        self.counters.add_login_address(user, ip, self.clock())
