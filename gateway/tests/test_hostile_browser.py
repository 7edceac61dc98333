"""A site whose stored text holds a lone surrogate, control characters and markup (written to
the store directly, past the ingest), in headless Chromium: the overview, the site page and
the public signage render, and the signage stream keeps delivering changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from gw_samples import SITES
from hostile_samples import SHOWN, poison
from web_login import PASSWORD, add_user

from gateway.store import SqliteStore
from gateway.web import make_app
from hil_tests.rig import browser

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium and "
                                 "playwright (scripts/bootstrap.sh --browser)")]


def shows(page: Any, selector: str, text: str, timeout: float = 15.0) -> None:
    """Wait until `selector` shows `text`, polled from here: the page's CSP forbids the eval
    that Playwright's own polling of a string predicate needs."""
    end = time.monotonic() + timeout
    while text not in page.inner_text(selector):
        assert time.monotonic() < end, (selector, page.inner_text(selector))
        page.wait_for_timeout(200)


def test_a_poisoned_site_renders_everywhere_and_its_stream_keeps_flowing(tmp_path: Path):
    path = tmp_path / "sot.sqlite3"

    def make() -> web.Application:
        db = SqliteStore(path)
        db.upsert_sites(SITES)
        add_user(db, "anna", "viewer")
        poison(db, ts=time.time())
        app = make_app(db)

        async def close(_app: web.Application) -> None:
            db.close()

        app.on_cleanup.append(close)
        return app

    with browser.serve(make) as base, browser.browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        browser.login(page, base, "anna", PASSWORD)
        page.wait_for_selector("table.sites")
        row = page.inner_text("tr[data-site='are-kall']")
        assert SHOWN in row and "<b>" in row  # shown as text, the markup inert
        assert page.locator("table.sites b").count() == 0
        page.goto(base + "/sites/are-kall")
        assert page.locator("table.sites tbody tr").count() == 1
        assert SHOWN in page.inner_text("ol.timeline")
        page.goto(base + "/signage/are-kall")
        shows(page, "#hours .v", "12")
        assert SHOWN in page.inner_text("#fuel")
        assert page.locator("#conn.down").count() == 0
        # a change reaches the screen over the event stream, past the bad text
        other = SqliteStore(path)
        try:
            other._db.execute("UPDATE site_status SET state = replace(state, "
                              "'\"hours_left\": 12.0', '\"hours_left\": 30.0')")
        finally:
            other.close()
        shows(page, "#hours .v", "30")
        assert page.locator("#conn.down").count() == 0 and not errors, errors
