"""Log a test client in: a user in the store, then POST /api/login (as a script would)."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.auth import hash_password

PASSWORD = "test-password-1"
_HASHES: dict[str, str] = {}


def add_user(store: Any, name: str = "anna", role: str = "viewer",
             password: str = PASSWORD) -> None:
    # scrypt is slow on purpose: hash each password once per test run
    h = _HASHES.get(password) or _HASHES.setdefault(password, hash_password(password))
    store.put_user(name, role, h, 0.0)


async def login(session: aiohttp.ClientSession, base: str, name: str = "anna",
                password: str = PASSWORD) -> str:
    """Returns the CSRF token; the session cookie stays in `session`'s jar."""
    async with session.post(base + "/api/login", json={"user": name, "password": password}) as r:
        body = await r.json()
        assert r.status == 200, body
        return str(body["csrf"])
