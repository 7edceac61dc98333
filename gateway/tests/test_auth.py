"""Dashboard security: password hashes, sessions and roles, CSRF on every POST, login throttle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gw_samples import SITES, Clock
from web_login import PASSWORD, add_user, login

from gateway import auth
from gateway.crisis import CrisisSender
from gateway.store import SqliteStore
from gateway.web import make_app


def test_password_hash_is_salted_and_verifies():
    a, b = auth.hash_password("correct horse 1"), auth.hash_password("correct horse 1")
    assert a != b and a.startswith("scrypt$16384$8$1$")  # a salt of its own per hash
    assert auth.verify_password("correct horse 1", a)
    assert not auth.verify_password("correct horse 2", a)
    assert not auth.verify_password("correct horse 1", "garbage")
    assert not auth.check_login(None, "anything at all")  # unknown user: same work, refused
    with pytest.raises(ValueError):
        auth.hash_password("short")
    with pytest.raises(ValueError):
        auth.hash_password("x" * 2000)


def test_throttle_locks_the_name_and_the_address_then_lets_go():
    clock = Clock()
    t = auth.LoginThrottle(clock, window_s=60, max_per_user=3, max_per_ip=5, lockout_s=300)
    for _ in range(2):
        t.failed("10.0.0.1", "eva")
    assert t.locked_for("10.0.0.1", "eva") == 0
    t.failed("10.0.0.2", "eva")  # from another address: still the same name
    assert t.locked_for("10.0.0.9", "eva") == 300
    assert t.locked_for("10.0.0.1", "olle") == 0
    for name in ("a", "b", "c"):  # one address trying many names
        t.failed("10.0.0.3", name)
    t.failed("10.0.0.3", "d")
    t.failed("10.0.0.3", "e")
    assert t.locked_for("10.0.0.3", "someone-new") == 300
    clock.t += 301
    assert t.locked_for("10.0.0.9", "eva") == 0 and t.locked_for("10.0.0.3", "x") == 0
    # failures spread wider than the window never add up
    for _ in range(5):
        t.failed("10.0.0.4", "per")
        clock.t += 30
    assert t.locked_for("10.0.0.4", "per") == 0


class FakeBroker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def is_connected(self) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        self.sent.append((topic, payload, retain))
        return True


@contextlib.asynccontextmanager
async def app_at(tmp_path: Path, clock: Clock) -> AsyncIterator[tuple[str, SqliteStore, Any]]:
    db = SqliteStore(tmp_path / "sot.sqlite3")
    db.upsert_sites(SITES)
    add_user(db, "anna", "viewer")
    add_user(db, "kim", "coordinator")
    add_user(db, "root", "admin")
    broker = FakeBroker()
    app = make_app(db, clock, crisis=CrisisSender(db, broker, clock))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", db, broker
    finally:
        await runner.cleanup()
        db.close()


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


MSG = {"sv": "Provmeddelande", "severity": "info", "from": "Åre kommun", "sites": ["are-kall"]}


def test_roles_csrf_and_cookie_flags(tmp_path: Path):
    async def main() -> None:
        async with app_at(tmp_path, Clock()) as (base, db, broker), client() as s:
            async with s.get(base + "/api/sites") as r:
                assert r.status == 401
            async with s.get(base + "/", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login")
            async with s.get(base + "/api/signage/are-kall") as r:
                assert r.status == 200  # the public screen needs no login
            async with s.post(base + "/api/login", data={"user": "anna",
                                                          "password": PASSWORD}) as r:
                assert r.status == 415  # a cross-site form cannot log anyone in
            async with s.post(base + "/api/login", json={"user": "anna",
                                                          "password": PASSWORD}) as r:
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
                csrf = (await r.json())["csrf"]
            async with s.post(base + "/api/crisis", json=MSG,
                              headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 403  # a viewer only reads
            async with s.get(base + "/api/audit") as r:
                assert r.status == 403
            csrf = await login(s, base, "kim")
            async with s.post(base + "/api/crisis", json=MSG) as r:
                assert r.status == 403  # no token
            async with s.post(base + "/api/crisis", json=MSG,
                              headers={"X-CSRF-Token": csrf[:-1] + "x"}) as r:
                assert r.status == 403  # wrong token
            async with s.post(base + "/crisis", data={**MSG, "site": "are-kall"},
                              allow_redirects=False) as r:
                assert r.status == 403  # a form without its csrf field
            assert broker.sent == []
            async with s.post(base + "/api/crisis", json=MSG,
                              headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200, await r.text()
            assert len(broker.sent) == 1
            csrf = await login(s, base, "root")
            async with s.get(base + "/api/audit") as r:
                actions = [a["action"] for a in await r.json()]
                assert "crisis_sent" in actions and "login" in actions
            async with s.post(base + "/api/logout", headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
            async with s.get(base + "/api/me") as r:
                assert r.status == 401

    asyncio.run(asyncio.wait_for(main(), 30))


def test_login_is_rate_limited_per_user_with_a_lockout(tmp_path: Path):
    clock = Clock()

    async def main() -> None:
        async with app_at(tmp_path, clock) as (base, db, _), client() as s:
            for _ in range(5):
                async with s.post(base + "/api/login", json={"user": "kim",
                                                              "password": "wrong-password"}) as r:
                    assert r.status == 401
            async with s.post(base + "/api/login", json={"user": "kim",
                                                          "password": PASSWORD}) as r:
                assert r.status == 429  # locked: the right password is not even checked
                assert "15 min" in (await r.json())["error"]
            clock.t += 901
            await login(s, base, "kim")
            assert sum(a["action"] == "login_failed" for a in db.audit_log()) == 5

    asyncio.run(asyncio.wait_for(main(), 30))
