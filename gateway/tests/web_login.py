"""Log a test client in: a user in the store, then POST /api/login (as a script would)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import aiohttp

PASSWORD = "test-password-1"
_HASHES: dict[str, str] = {}
# scrypt cost of the test users' hashes. A stored hash carries its own n, r and p
# (`scrypt$<n>$<r>$<p>$<salt>$<hash>`, gateway/auth.py), and the gateway checks a login with
# those, so a test user can have a cheap hash: n=2**10 checks in about 3 ms where the product's
# 2**14 takes about 50 ms, and these tests log in hundreds of times. Logins still go through
# auth.verify_password; the product's own cost is what gateway/tests/test_auth.py checks.
TEST_SCRYPT_N = 2**10


def test_hash(password: str) -> str:
    """A hash in the product's format at TEST_SCRYPT_N, made once per password and run."""
    if password not in _HASHES:
        salt = secrets.token_bytes(16)
        digest = hashlib.scrypt(password.encode(), salt=salt, n=TEST_SCRYPT_N, r=8, p=1,
                                maxmem=64 * 1024 * 1024, dklen=32)
        _HASHES[password] = (f"scrypt${TEST_SCRYPT_N}$8$1$"
                             f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")
    return _HASHES[password]


test_hash.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def add_user(store: Any, name: str = "anna", role: str = "viewer",
             password: str = PASSWORD) -> None:
    store.put_user(name, role, test_hash(password), 0.0)


async def login(session: aiohttp.ClientSession, base: str, name: str = "anna",
                password: str = PASSWORD) -> str:
    """Returns the CSRF token; the session cookie stays in `session`'s jar."""
    async with session.post(base + "/api/login", json={"user": name, "password": password}) as r:
        body = await r.json()
        assert r.status == 200, body
        return str(body["csrf"])
