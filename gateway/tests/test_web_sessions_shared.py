"""Two gateway workers' web sides over one database (as behind one reverse proxy): a login on
one is a login on both, logout and user changes apply on both, and a guesser gains nothing by
alternating between them. Two web apps over PostgreSQL (what several workers use) and SQLite
alike, and two whole `Gateway`s on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from gw_samples import SITES, Clock
from pg_cluster import (  # noqa: F401 - fixtures
    Backend,
    Cluster,
    backend_fixture,
    pg_cluster_fixture,
)
from web_login import PASSWORD, add_user, login

from gateway import auth
from gateway.crisis import CrisisSender
from gateway.service import Gateway
from gateway.web import make_app
from hil_tests.rig.broker import free_port

MSG = {"sv": "Provmeddelande", "severity": "info", "from": "Åre kommun", "sites": ["are-kall"]}


class Broker:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def is_connected(self) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        self.sent.append(topic)
        return True


@contextlib.asynccontextmanager
async def two_workers(backend: Backend, clock: Clock
                      ) -> AsyncIterator[tuple[str, str, Broker]]:
    """Two apps, each with its own store connection to the same database; their base URLs."""
    setup = backend.open()
    setup.upsert_sites(SITES)
    add_user(setup, "anna", "viewer")
    add_user(setup, "kim", "coordinator")
    setup.close()
    broker = Broker()
    runners, stores = [], []
    try:
        for _ in range(2):
            db = backend.open()
            stores.append(db)
            runner = web.AppRunner(make_app(db, clock, crisis=CrisisSender(db, broker, clock)),
                                   access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        a, b = (f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners)
        yield a, b, broker
    finally:
        for r in runners:
            await r.cleanup()
        for db in stores:
            db.close()


def client() -> aiohttp.ClientSession:
    # One jar for both: cookies are per host, not per port, as behind one proxy.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def cookie(s: aiohttp.ClientSession) -> str:
    return next(c.value for c in s.cookie_jar if c.key == "sot_session")


def test_a_login_on_one_worker_is_used_and_ended_on_the_other(backend: Backend):
    async def main() -> None:
        async with two_workers(backend, Clock()) as (a, b, broker), client() as kim:
            csrf = await login(kim, a, "kim")
            async with kim.get(b + "/api/me") as r:
                assert r.status == 200 and (await r.json())["user"] == "kim"
            async with kim.post(b + "/api/crisis", json=MSG,
                                headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200, await r.text()  # the token from A holds on B
            async with kim.post(b + "/api/crisis", json=MSG,
                                headers={"X-CSRF-Token": csrf[:-1] + "x"}) as r:
                assert r.status == 403
            assert len(broker.sent) == 1
            token = cookie(kim)
            dump = backend.raw("SELECT * FROM sessions")
            assert len(dump) == 1 and token not in repr(dump)  # the row holds no live token
            assert auth.token_digest(token) in repr(dump)
            async with kim.post(b + "/api/logout", headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
            # the browser forgets the cookie; someone who kept a copy gets nowhere on A
            async with aiohttp.ClientSession(cookies={"sot_session": token}) as copy:
                async with copy.get(a + "/api/me") as r:
                    assert r.status == 401
            # the form pages: log in on B, act on A with the page's token
            csrf = await login(kim, b, "kim")
            async with kim.post(a + "/crisis", data={**MSG, "site": "are-kall", "csrf": csrf},
                                allow_redirects=False) as r:
                assert r.status == 303, await r.text()  # sent: to the message's page
            assert len(broker.sent) == 2
            async with kim.post(a + "/logout", data={"csrf": csrf},
                                allow_redirects=False) as r:
                assert r.status == 303
            async with kim.get(b + "/api/me") as r:
                assert r.status == 401

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_demoted_or_removed_user_is_refused_on_both_workers(backend: Backend):
    async def main() -> None:
        async with two_workers(backend, Clock()) as (a, b, broker), client() as kim, \
                client() as anna:
            csrf = await login(kim, a, "kim")
            await login(anna, b, "anna")
            db = backend.open()  # `sot user` on the gateway host
            try:
                pwhash = (db.user("kim") or {})["pwhash"]
                db.put_user("kim", "viewer", pwhash, 0.0)
                for base in (a, b):
                    async with kim.post(base + "/api/crisis", json=MSG,
                                        headers={"X-CSRF-Token": csrf}) as r:
                        assert r.status == 403, base
                    async with kim.get(base + "/api/me") as r:
                        assert (await r.json())["role"] == "viewer"
                assert broker.sent == []
                assert db.remove_user("anna")
                for base in (a, b):
                    async with anna.get(base + "/api/me") as r:
                        assert r.status == 401, base
                db.put_user("kim", "coordinator", auth.hash_password("another password 9"), 0.0)
                for base in (b, a):
                    async with kim.get(base + "/api/me") as r:
                        assert r.status == 401, base
            finally:
                db.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_failures_alternating_between_workers_add_up_to_the_same_pause(backend: Backend):
    """5 failures are free for one (address, name); the sixth try waits 2 s. Three on A and two
    on B are five failures, as on one worker; the pause is over on both at once."""
    clock = Clock()

    async def main() -> None:
        async with two_workers(backend, clock) as (a, b, _), client() as s:
            for base in (a, b, a, b, a):
                async with s.post(base + "/api/login",
                                  json={"user": "kim", "password": "wrong-password"}) as r:
                    assert r.status == 401
            for base in (a, b):
                async with s.post(base + "/api/login",
                                  json={"user": "kim", "password": PASSWORD}) as r:
                    assert r.status == 429, base  # the right password waits too
            clock.t += 2
            await login(s, b, "kim")
            await login(s, a, "kim")

    asyncio.run(asyncio.wait_for(main(), 60))


def test_two_gateways_on_one_postgresql_database_share_logins_and_failures(
        pg_cluster: Cluster, tmp_path: Path):
    """The service itself, twice, on one PostgreSQL database (no broker: each keeps retrying
    it, the web serves meanwhile): what the web side of every worker gets from `Gateway`."""
    url = pg_cluster.new_database()
    mqtt_port = free_port()

    def config(n: int) -> dict:
        return {"mqtt": {"port": mqtt_port}, "http": {"host": "127.0.0.1", "port": 0},
                "store": {"url": url}, "alerts": {"files_dir": str(tmp_path / str(n))}}

    async def main() -> None:
        a, b = Gateway(config(1)), Gateway(config(2))
        await a.start()
        try:
            await b.start()
            try:
                assert a.store is not None
                add_user(a.store, "kim", "coordinator")
                on_a = f"http://127.0.0.1:{a.http_port}"
                on_b = f"http://127.0.0.1:{b.http_port}"
                async with client() as kim, client() as guesser:
                    csrf = await login(kim, on_a, "kim")
                    async with kim.get(on_b + "/api/me") as r:
                        assert r.status == 200 and (await r.json())["role"] == "coordinator"
                    async with kim.post(on_b + "/api/logout",
                                        headers={"X-CSRF-Token": csrf}) as r:
                        assert r.status == 200
                    for base in (on_a, on_b):
                        async with kim.get(base + "/api/me") as r:
                            assert r.status == 401
                    for base in (on_b, on_a, on_b, on_a, on_b):  # the [web] defaults: 5 free
                        async with guesser.post(base + "/api/login", json={
                                "user": "kim", "password": "wrong-password"}) as r:
                            assert r.status == 401
                    for base in (on_a, on_b):
                        async with guesser.post(base + "/api/login", json={
                                "user": "kim", "password": PASSWORD}) as r:
                            assert r.status == 429, base
            finally:
                await b.stop()
        finally:
            await a.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
