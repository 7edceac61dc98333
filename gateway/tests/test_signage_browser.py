"""The public screen in headless Chromium when the gateway goes away: the last known state
stays up with its age and a note that the server cannot be reached, then turns stale once the
site's 3 heartbeats have passed, all without the server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web
from gw_samples import SITES, birth, raw, state, status

from gateway.ingest import Ingest
from gateway.store import SqliteStore
from gateway.web import make_app
from hil_tests.rig import browser

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium and "
                                 "playwright (scripts/bootstrap.sh --browser)")]


def test_screen_keeps_last_known_state_when_the_gateway_is_gone(tmp_path: Path):
    def make() -> web.Application:
        db = SqliteStore(tmp_path / "sot.sqlite3")
        db.upsert_sites(SITES)
        now = time.time()
        ing = Ingest(db, time.time)
        ing.handle("sot/v1/are-kall/status", raw(status(ts=int(now))))
        # heartbeat 2 s: stale 6 s after this state, whoever is (not) serving the page
        ing.handle("sot/v1/are-kall/birth", raw(birth(ts=int(now), heartbeat_s=2)))
        ing.handle("sot/v1/are-kall/state", raw(state(ts=int(now))))
        app = make_app(db)

        async def close(_app: web.Application) -> None:
            db.close()

        app.on_cleanup.append(close)
        return app

    with browser.browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 720})
        with browser.serve(make) as base:
            page.goto(base + "/signage/are-kall")
            page.wait_for_function("document.querySelector('#power .v').textContent"
                                   ".includes('Reservkraft')", timeout=10_000)
            assert page.locator("#stale").is_hidden()
            assert "Senast uppdaterad" in page.inner_text("#updated")
        # the server is gone: the screen says so and keeps what it knew
        page.wait_for_selector("#conn.down", timeout=15_000)
        assert "Ingen kontakt med servern" in page.inner_text("#conn")
        assert "Reservkraft" in page.inner_text("#power")
        page.wait_for_selector("#stale:not([hidden])", timeout=15_000)
        assert "INAKTUELLT" in page.inner_text("#stale")
        assert "sedan" in page.inner_text("#updated")
