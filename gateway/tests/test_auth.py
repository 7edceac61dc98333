"""Dashboard security: password hashes, sessions and roles, CSRF on every POST, login throttle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gw_samples import SITES, Clock, present
from web_login import PASSWORD, add_user, login

from gateway import auth
from gateway.crisis import CrisisSender
from gateway.store import PgStore, SqliteStore
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


def test_throttle_slows_the_failing_address_and_never_locks_the_account():
    clock = Clock()
    t = auth.LoginThrottle(clock, window_s=3600, free_pair=5, free_addr=20, free_name=50,
                           base_s=2, max_delay_s=900, name_delay_s=60)
    t.succeeded("10.0.0.7", "kim")  # kim's own desk
    for _ in range(5):
        assert t.locked_for("6.6.6.6", "kim") == 0
        t.failed("6.6.6.6", "kim")
    assert t.locked_for("6.6.6.6", "kim") == 2  # the guesser waits ...
    assert t.locked_for("10.0.0.8", "kim") == 0  # ... kim from a new laptop does not
    assert t.locked_for("10.0.0.7", "kim") == 0
    waits = []
    for _ in range(12):  # each failure after the pause doubles it, up to the cap
        clock.t += t.locked_for("6.6.6.6", "kim")
        t.failed("6.6.6.6", "kim")
        waits.append(t.locked_for("6.6.6.6", "kim"))
    assert waits[:4] == [4, 8, 16, 32] and max(waits) == 900
    # many names from one address: that address waits, nobody else
    for i in range(20):
        t.failed("5.5.5.5", f"user{i}")
    assert t.locked_for("5.5.5.5", "somebody") > 0 and t.locked_for("5.5.5.6", "user1") == 0
    # a guesser spread over many addresses: a short pause for unknown addresses only
    for i in range(60):
        t.failed(f"7.7.{i}.1", "eva")
    assert 0 < t.locked_for("10.0.0.9", "eva") <= 60
    t.succeeded("10.0.0.10", "eva")
    assert t.locked_for("10.0.0.10", "eva") == 0
    # failures older than the window are forgotten
    clock.t += 3601
    assert t.locked_for("6.6.6.6", "kim") == 0 and t.locked_for("10.0.0.9", "eva") == 0


class FakeBroker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def is_connected(self) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        self.sent.append((topic, payload, retain))
        return True


@contextlib.asynccontextmanager
async def app_at(tmp_path: Path, clock: Clock, *,
                 store: Callable[[], SqliteStore | PgStore] | None = None, **kw: Any
                 ) -> AsyncIterator[tuple[str, SqliteStore | PgStore, FakeBroker]]:
    """The web app on 127.0.0.1 over a SQLite store in `tmp_path`, or over what `store` opens
    (`pg_cluster.Backend.open`)."""
    db = store() if store is not None else SqliteStore(tmp_path / "sot.sqlite3")
    db.upsert_sites(SITES)
    add_user(db, "anna", "viewer")
    add_user(db, "kim", "coordinator")
    add_user(db, "root", "admin")
    broker = FakeBroker()
    app = make_app(db, clock, crisis=CrisisSender(db, broker, clock), **kw)
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


def test_failed_logins_cost_the_failing_address_not_the_coordinator(tmp_path: Path):
    """Behind a reverse proxy (trusted: its X-Forwarded-For names the client), a stranger who
    fails on purpose as "kim" is slowed down; kim logs in from her own address at once."""
    clock = Clock()

    def via(addr: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"192.0.2.99, {addr}"}  # the proxy appended the last one

    async def main() -> None:
        async with app_at(tmp_path, clock, trusted_proxies=frozenset({"127.0.0.1"})) as (
                base, db, _), client() as s:
            for _ in range(8):
                async with s.post(base + "/api/login", headers=via("203.0.113.5"),
                                  json={"user": "kim", "password": "wrong-password"}) as r:
                    assert r.status in (401, 429)
            async with s.post(base + "/api/login", headers=via("203.0.113.5"),
                              json={"user": "kim", "password": PASSWORD}) as r:
                assert r.status == 429  # the stranger waits, even with the right password
                assert "Försök igen om" in (await r.json())["error"]
            async with s.post(base + "/api/login", headers=via("198.51.100.20"),
                              json={"user": "kim", "password": PASSWORD}) as r:
                assert r.status == 200  # kim, from elsewhere, is not locked out
            fails = [a for a in db.audit_log() if a["action"] == "login_failed"]
            assert len(fails) == 5 and {a["target"] for a in fails} == {"203.0.113.5"}
            # the same stranger tries 25 other names: only the stranger waits, not everyone
            # else behind the same proxy
            codes = []
            for i in range(25):
                async with s.post(base + "/api/login", headers=via("203.0.113.5"),
                                  json={"user": f"name{i}", "password": "wrong-password"}) as r:
                    codes.append(r.status)
            assert codes.count(401) == 15 and codes[-1] == 429  # 20 failures from the address
            async with s.post(base + "/api/login", headers=via("198.51.100.77"),
                              json={"user": "anna", "password": PASSWORD}) as r:
                assert r.status == 200

    asyncio.run(asyncio.wait_for(main(), 30))


def test_forwarded_for_is_ignored_unless_the_proxy_is_configured(tmp_path: Path):
    """Without a configured proxy a client cannot dodge the throttle (or frame another
    address) by sending its own X-Forwarded-For."""
    clock = Clock()

    async def main() -> None:
        async with app_at(tmp_path, clock) as (base, db, _), client() as s:
            for i in range(5):
                async with s.post(base + "/api/login",
                                  headers={"X-Forwarded-For": f"10.9.9.{i}"},
                                  json={"user": "kim", "password": "wrong-password"}) as r:
                    assert r.status == 401
            async with s.post(base + "/api/login", headers={"X-Forwarded-For": "10.9.9.77"},
                              json={"user": "kim", "password": PASSWORD}) as r:
                assert r.status == 429
            assert {a["target"] for a in db.audit_log()} == {"127.0.0.1"}
            clock.t += 3
            await login(s, base, "kim")  # the pause was short, and is over

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_demoted_or_removed_user_loses_the_rights_of_the_live_session(tmp_path: Path):
    """`sot user` changes the database from another process; the live session follows at the
    next request, not when it expires 12 h later."""
    from gateway.auth import hash_password

    async def main() -> None:
        async with app_at(tmp_path, Clock()) as (base, db, broker), client() as kim, \
                client() as anna:
            csrf = await login(kim, base, "kim")
            async with kim.post(base + "/api/crisis", json=MSG,
                                headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
            async with aiohttp.ClientSession() as anon:  # the public sees no account name
                for path in ("/api/signage/are-kall", "/signage/are-kall", "/cap.atom"):
                    async with anon.get(base + path) as r:
                        assert r.status == 200 and "kim" not in await r.text(), path
            # sot user add --role
            db.put_user("kim", "viewer", present(db.user("kim"))["pwhash"], 0.0)
            async with kim.post(base + "/api/crisis", json=MSG,
                                headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 403  # same cookie, same token: no longer a coordinator
            async with kim.post(base + "/crisis", data={**MSG, "site": "are-kall",
                                                        "csrf": csrf},
                                allow_redirects=False) as r:
                assert r.status == 403  # nor through the form
            async with kim.get(base + "/api/me") as r:
                assert (await r.json())["role"] == "viewer"
            assert len(broker.sent) == 1

            await login(anna, base, "anna")
            assert db.remove_user("anna")  # sot user remove anna
            async with anna.get(base + "/api/me") as r:
                assert r.status == 401
            async with anna.get(base + "/", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"].startswith("/login")
            # back with the same name (a new person, or a reset): the old cookie stays dead
            add_user(db, "anna", "viewer")
            async with anna.get(base + "/api/me") as r:
                assert r.status == 401

            # a new password ends the sessions made with the old one
            csrf = await login(kim, base, "kim")
            db.put_user("kim", "viewer", hash_password("another password 9"), 0.0)
            async with kim.get(base + "/api/me") as r:
                assert r.status == 401

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_session_cookie_is_secure_unless_the_web_is_plain_http_on_loopback():
    from gateway.service import secure_cookie, with_defaults

    def cfg(host: str, value: object = "auto") -> dict[str, Any]:
        return with_defaults({"http": {"host": host}, "web": {"secure_cookie": value}})

    assert secure_cookie(cfg("0.0.0.0")) is True  # reachable from the network: HTTPS only
    assert secure_cookie(cfg("192.168.1.10")) is True
    assert secure_cookie(cfg("127.0.0.1")) is False  # the demo, tests, a local browser
    assert secure_cookie(cfg("::1")) is False
    assert secure_cookie(cfg("127.0.0.1", True)) is True  # behind a TLS proxy on this host
    with pytest.raises(ValueError, match="secure_cookie"):
        secure_cookie(cfg("0.0.0.0", False))  # plain HTTP over the network is refused
    with pytest.raises(ValueError, match="secure_cookie"):
        secure_cookie(cfg("127.0.0.1", "yes"))
    from gateway.service import load_config

    shipped = load_config(Path(__file__).resolve().parents[2] / "config" / "gateway.toml")
    assert secure_cookie(with_defaults(shipped)) is True
