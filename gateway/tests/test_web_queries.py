"""Each page reads the store a fixed number of times, however many sites and crisis messages
there are: no query per table row (a county has hundreds of sites)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web
from gw_samples import TS, Clock, birth, raw, state, status
from web_login import add_user, login

from gateway.ingest import Ingest
from gateway.store import SiteInfo, SqliteStore, Store
from gateway.web import make_app

PAGES = ["/", "/sites/s00", "/alerts", "/crisis", "/crisis/m00", "/audit", "/api/crisis",
         "/api/sites", "/signage/s00"]


class Counting:
    """The store with a count of the calls each method gets."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)
        return counted


def calls_per_page(path: Path, n: int) -> dict[str, Counter[str]]:
    db = SqliteStore(path)
    db.upsert_sites([SiteInfo(f"s{i:02}", f"Site {i}", f"Kommun {i % 3}", 63.0 + i / 10, 14.0,
                              30) for i in range(n)])
    add_user(db, "anna", "admin")
    clock = Clock()
    ing = Ingest(db, clock)
    for i in range(n):
        site = f"s{i:02}"
        ing.handle(f"sot/v1/{site}/status", raw(status()))
        ing.handle(f"sot/v1/{site}/birth", raw(birth()))
        ing.handle(f"sot/v1/{site}/state", raw(state()))
        db.save_crisis({"id": f"m{i:02}", "ts": int(TS), "severity": "info", "sv": f"Text {i}",
                        "en": "", "from": "Kommunen"}, "anna", TS)
        for j in range(n):
            db.record_crisis_sent(f"s{j:02}", f"m{i:02}", TS)
    counting = Counting(db)

    async def main() -> dict[str, Counter[str]]:
        runner = web.AppRunner(make_app(cast(Store, counting), clock), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        out = {}
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                await login(s, base)
                for page in PAGES:
                    counting.calls.clear()
                    async with s.get(base + page) as r:
                        assert r.status == 200, page
                    out[page] = Counter(counting.calls)
        finally:
            await runner.cleanup()
        return out

    try:
        return asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        db.close()


def test_store_reads_do_not_grow_with_sites_and_messages(tmp_path: Path) -> None:
    few = calls_per_page(tmp_path / "few.sqlite3", 2)
    many = calls_per_page(tmp_path / "many.sqlite3", 12)
    grew = {page: (dict(few[page]), dict(many[page])) for page in PAGES
            if many[page] != few[page]}
    assert grew == {}
    assert few["/"]["sites_overview"] == 1  # the counting sees the store's calls
