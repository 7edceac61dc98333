"""The web layer over a real aiohttp server on 127.0.0.1 and a real SqliteStore."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gw_samples import SITES, TS, Clock, birth, event, raw, state, status, will
from web_login import PASSWORD, add_user

from gateway.ingest import Ingest
from gateway.store import SiteInfo, SqliteStore
from gateway.web import make_app


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
def env(tmp_path: Path):
    db = SqliteStore(tmp_path / "sot.sqlite3")
    db.upsert_sites(SITES)
    add_user(db)
    clock = Clock()
    ing = Ingest(db, clock)
    yield db, clock, ing
    db.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def get(base: str, path: str, *, user: str | None = "anna"
              ) -> tuple[int, Any, dict[str, str]]:
    """GET as the logged-in viewer `user` (added by the fixtures), or anonymously (None)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        if user is not None:
            async with s.post(base + "/api/login", json={"user": user, "password": PASSWORD}):
                pass
        return await _get(s, base, path)


async def _get(s: aiohttp.ClientSession, base: str, path: str
               ) -> tuple[int, Any, dict[str, str]]:
    async with s.get(base + path) as r:
        body = await r.text()
        is_json = r.content_type == "application/json"
        return r.status, json.loads(body) if is_json else body, dict(r.headers)


def feed(ing: Ingest, site: str = "are-kall", **state_over: Any) -> None:
    ing.handle(f"sot/v1/{site}/status", raw(status()))
    ing.handle(f"sot/v1/{site}/birth", raw(birth()))
    ing.handle(f"sot/v1/{site}/state", raw(state(**state_over)))


def test_api_sites_lists_every_configured_site(env):
    db, clock, ing = env
    feed(ing)
    clock.t = TS + 12

    async def main():
        async with serving(make_app(db, clock, ing.stats)) as base:
            return await get(base, "/api/sites")

    code, body, _ = run(main())
    assert code == 200 and len(body) == 3
    kall = next(s for s in body if s["id"] == "are-kall")
    assert set(kall) >= {"id", "name", "municipality", "lat", "lon", "status", "mode",
                         "grid_state", "genset_state", "fuel_pct", "hours_left", "devices",
                         "updated_ts", "age_s", "stale"}
    assert kall["status"] == "online" and kall["mode"] == "on_backup"
    assert kall["fuel_pct"] == 62.0 and kall["hours_left"] == 72.9
    assert kall["age_s"] == 12 and kall["stale"] is False and kall["fw"] == "0.1.0"
    hede = next(s for s in body if s["id"] == "harjedalen-hede")
    assert hede["mode"] is None and hede["stale"] is True and hede["status"] is None


def test_api_site_events_and_stats(env):
    db, clock, ing = env
    feed(ing)
    for i, t in enumerate(["grid_lost", "mode_changed", "gen_running"]):
        ing.handle("sot/v1/are-kall/event", raw(event(t, seq=20 + i, ts=TS + i)))
    ing.handle("sot/v1/are-kall/event", raw(event("gen_running", seq=22, ts=TS + 2)))
    ing.handle("sot/v1/are-kall/state", b"{not json")
    ing.handle("sot/v1/nowhere/state", raw(state()))

    async def main():
        async with serving(make_app(db, clock, ing.stats)) as base:
            return {p: await get(base, p) for p in (
                "/api/sites/are-kall", "/api/sites/nowhere", "/api/sites/are-kall/events",
                "/api/sites/are-kall/events?limit=1", "/api/sites/are-kall/events?limit=abc",
                "/api/sites/are-kall/events?limit=0", "/api/sites/nowhere/events",
                "/api/stats")}

    r = run(main())
    code, site, _ = r["/api/sites/are-kall"]
    assert code == 200 and set(site) == {"site", "status", "birth", "state"}
    assert site["state"]["grid"]["state"] == "lost" and site["state"]["received"] == TS
    assert site["birth"]["devices"][1]["profile"] == "dse-gencomm"
    assert site["site"]["id"] == "are-kall"
    assert r["/api/sites/nowhere"][0] == 404
    code, evs, _ = r["/api/sites/are-kall/events"]
    assert code == 200 and [e["type"] for e in evs] == ["gen_running", "mode_changed",
                                                         "grid_lost"]
    assert set(evs[0]) == {"boot", "seq", "ts", "type", "data", "hist", "received"}
    assert len(r["/api/sites/are-kall/events?limit=1"][1]) == 1
    assert r["/api/sites/are-kall/events?limit=abc"][0] == 400
    assert r["/api/sites/are-kall/events?limit=0"][0] == 400
    assert r["/api/sites/nowhere/events"][0] == 404
    code, stats, _ = r["/api/stats"]
    assert code == 200
    assert stats["accepted"] == 6 and stats["duplicates"] == 1 and stats["rejected"] == 2
    assert stats["rejected_by_reason"] == {"not_json": 1, "unknown_site": 1}
    assert stats["store"]["events"] == 3


def test_overview_page_swedish_first_escaped_and_refreshing(tmp_path: Path):
    db = SqliteStore(tmp_path / "sot.sqlite3")
    evil = "<script>alert('x')</script>"
    db.upsert_sites([SiteInfo("are-kall", evil, "Åre & <b>Co</b>", 63.0, 13.0, 30),
                     *SITES[1:]])
    add_user(db)
    clock = Clock()
    ing = Ingest(db, clock)
    feed(ing, devices={"<img src=x onerror=alert(1)>": "offline", "genset": "online",
                       "pumps": "mismatch"})
    feed(ing, "harjedalen-hede", mode="backup_failed",
         genset={"state": "fault"}, fuel={"hours_left": 5.3})

    async def main():
        async with serving(make_app(db, clock, ing.stats)) as base:
            return await get(base, "/")

    code, page, headers = run(main())
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp  # no inline script
    assert "default-src 'none'" in csp
    assert "<script>" not in page and "<img" not in page and "<b>Co" not in page
    # the apostrophe as MarkupSafe writes it (&#39;; html.escape wrote &#x27;): the same escape
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Åre &amp; &lt;b&gt;Co&lt;/b&gt;" in page
    assert '<meta http-equiv="refresh" content="5">' in page
    assert '<html lang="sv">' in page
    for sv, en in (("Nätström", "Grid"), ("Reservkraft", "Backup power"),
                   ("Timmar kvar", "Hours left"), ("Senast uppdaterad", "Last update"),
                   ("Reservkraft i drift", "On backup power"),
                   ("Reservkraft har inte startat", "Backup power failed")):
        assert f'{sv} <span class="en">/ {en}</span>' in page
    assert "5,3 h" in page  # Swedish decimal comma, under 10 h with one decimal
    # a device that answers but failed its identity check is named as the wrong device
    assert 'Fel enhet <span class="en">/ Wrong device</span>: pumps' in page
    assert 'class="mode alarm"' in page and 'class="mode backup"' in page
    assert "Ingen data" in page  # Föllinge has sent nothing
    db.close()


def test_overview_marks_stale_and_lost_sites(env):
    db, clock, ing = env
    feed(ing)
    feed(ing, "harjedalen-hede", mode="normal")
    ing.handle("sot/v1/harjedalen-hede/status", raw(will()))
    clock.t = TS + 600

    async def main():
        async with serving(make_app(db, clock, ing.stats)) as base:
            return await get(base, "/")

    _, page, _ = run(main())
    assert 'Inaktuell <span class="en">/ Stale</span>' in page
    assert 'Förlorad kontakt <span class="en">/ Connection lost</span>' in page
    assert 'senast kända <span class="en">/ last known</span>' in page
    assert 'class="current"' not in page  # nothing is shown as current
    assert "för 10 min sedan" in page
