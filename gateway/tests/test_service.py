"""Gateway configuration, start-up failure and `serve` (no broker needed: paho keeps retrying)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from web_login import add_user, login

from gateway.config import REPO_ROOT
from gateway.service import DEFAULTS, Gateway, load_config, serve, with_defaults
from hil_tests.rig.broker import free_port


def test_shipped_gateway_toml_is_complete_and_valid():
    cfg = with_defaults(load_config(REPO_ROOT / "config" / "gateway.toml"))
    assert cfg["http"]["host"] == "127.0.0.1" and cfg["mqtt"]["host"] == "127.0.0.1"
    assert set(cfg) == set(DEFAULTS)


def test_unknown_config_keys_are_named():
    with pytest.raises(ValueError, match=r"\[http\]: key 'prot': unknown key"):
        with_defaults({"http": {"prot": 80}})
    with pytest.raises(ValueError, match=r"unknown section \[htp\]"):
        with_defaults({"htp": {}})


def config(tmp_path: Path, http_port: int = 0) -> dict:
    return {"mqtt": {"port": free_port()}, "http": {"host": "127.0.0.1", "port": http_port},
            "store": {"path": str(tmp_path / "db" / "sot.sqlite3")},
            "alerts": {"files_dir": str(tmp_path)}}


def test_a_failed_start_releases_what_it_opened(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        gw = Gateway(config(tmp_path, busy.getsockname()[1]))
        with pytest.raises(OSError):
            asyncio.run(gw.start())
    assert gw.store is None and gw.mqtt is None


def test_serve_runs_until_the_stop_event(tmp_path: Path):
    async def main() -> list[dict]:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(config(tmp_path, 0), stop))
        await asyncio.sleep(0.3)
        assert not task.done()
        stop.set()
        await asyncio.wait_for(task, 10)
        # The same database opens again and serves the configured sites.
        gw = Gateway(config(tmp_path, 0))
        await gw.start()
        try:
            assert gw.store is not None
            add_user(gw.store)
            base = f"http://127.0.0.1:{gw.http_port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                await login(s, base)
                async with s.get(base + "/api/sites") as r:
                    return await r.json()
        finally:
            await gw.stop()

    sites = asyncio.run(asyncio.wait_for(main(), 30))
    assert {s["id"] for s in sites} == {"are-kall", "harjedalen-hede", "krokom-follinge"}
    assert (tmp_path / "db" / "sot.sqlite3").exists()


def test_worker_settings_are_checked():
    cfg = with_defaults({})
    assert cfg["worker"] == {"name": "main", "lease_ttl_s": 6.0}
    with pytest.raises(ValueError, match=r"\[worker\]: key 'name'"):
        with_defaults({"worker": {"name": "Worker 2"}})
    with pytest.raises(ValueError, match=r"\[worker\]: key 'lease_ttl_s'"):
        with_defaults({"worker": {"lease_ttl_s": 0.1}})
    with pytest.raises(ValueError, match=r"\[mqtt\]: key 'session_expiry_s'"):
        with_defaults({"mqtt": {"session_expiry_s": -1}})


def test_two_workers_one_leader_and_the_other_takes_over_when_it_stops(tmp_path: Path):
    """Two gateway workers on one store (no broker needed): the first leads and runs the alert
    engine, the second serves the web and ingests only; /api/stats says who leads; a clean stop
    of the leader hands the lead over within one renewal period."""
    def worker(name: str) -> dict:
        return {**config(tmp_path), "worker": {"name": name, "lease_ttl_s": 1.5}}

    async def stats(gw: Gateway) -> dict:
        base = f"http://127.0.0.1:{gw.http_port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            await login(s, base)
            async with s.get(base + "/api/stats") as r:
                return dict(await r.json())

    async def main() -> None:
        a, b = Gateway(worker("a")), Gateway(worker("b"))
        await a.start()
        await b.start()
        try:
            assert a.store is not None
            add_user(a.store)
            assert a.engine is not None and b.engine is None
            assert a.feeds is not None and b.feeds is not None  # both serve the feeds page
            got = await stats(b)
            assert got["worker"]["worker"] == "b" and not got["worker"]["leading"]
            assert got["worker"]["leader"] == "a"
            assert "alerts" not in got
            await a.stop()
            deadline = asyncio.get_running_loop().time() + 5
            while b.engine is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert b.engine is not None and b.lease is not None and b.lease.leading
            got = await stats(b)
            assert got["worker"]["leader"] == "b" and "alerts" in got
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_leader_whose_event_loop_stalls_says_so(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture):
    """When the lead moves, the operator must be able to tell a dead leader from one whose
    worker was too busy to renew: a renewal that starts late is logged and counted in
    /api/stats. A stall shorter than the lease keeps the lead."""
    async def main() -> None:
        gw = Gateway({**config(tmp_path), "worker": {"name": "a", "lease_ttl_s": 1.5}})
        await gw.start()
        try:
            assert gw.lease is not None and gw.lease.leading and gw.lease.slow == 0
            await asyncio.sleep(0.1)  # the lease's renewal task is waiting
            time.sleep(0.8)  # the loop is held: the renewal due every 0.5 s has to wait
            deadline = asyncio.get_running_loop().time() + 3
            while gw.lease.slow == 0 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            stats = gw.lease.stats()
            assert stats["slow"] == 1 and 0.25 < stats["worst_delay_s"] < 1.0, stats
            assert gw.lease.leading and gw.engine is not None
        finally:
            await gw.stop()

    with caplog.at_level(logging.WARNING, logger="gateway.lease"):
        asyncio.run(asyncio.wait_for(main(), 30))
    said = [r.getMessage() for r in caplog.records if "renewal started" in r.getMessage()]
    assert len(said) == 1 and "busy" in said[0], said
