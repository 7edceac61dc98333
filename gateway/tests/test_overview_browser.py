"""The dashboard as a real browser renders it (headless Chromium, never a downloaded one):
login refused with a wrong password and slowed down after repeated failures, then the overview
with its table and map.

Set SOT_UPDATE_SCREENSHOTS=1 to refresh docs/img/overview.png and docs/img/login-locked.png;
otherwise screenshots go to a temporary folder and only their existence is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import web
from gw_samples import TS, birth, event, raw, state, status
from web_login import PASSWORD, add_user

from gateway.config import load_sites
from gateway.ingest import Ingest
from gateway.store import SiteInfo, SqliteStore
from gateway.web import make_app
from hil_tests.rig import browser

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium and "
                                 "playwright (scripts/bootstrap.sh --browser)")]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def shot_path(tmp_path: Path, name: str) -> Path:
    return DOCS_IMG / name if os.environ.get("SOT_UPDATE_SCREENSHOTS") == "1" else tmp_path / name


def seeded_store(path: Path) -> tuple[SqliteStore, Ingest]:
    db = SqliteStore(path)
    db.upsert_sites(SiteInfo(s.id, s.name, s.municipality, s.lat, s.lon,
                             s.mqtt["heartbeat_s"]) for s in load_sites().values())
    # Kall's last twelve hours on backup power, every 30 min, for the chart on its page
    t = {"now": TS - 12 * 3600.0}
    hist = Ingest(db, lambda: t["now"])
    hist.handle("sot/v1/are-kall/birth", raw(birth(ts=TS - 12 * 3600, seq=1)))
    for i in range(24):
        t["now"] = TS - 12 * 3600 + i * 1800
        hist.handle("sot/v1/are-kall/state", raw(state(
            ts=int(t["now"]), seq=2 + i, fuel={"pct": 92.0 - 1.25 * i,
                                             "hours_left": 110.0 - 1.6 * i})))
    ing = Ingest(db, lambda: TS + 20)
    for site, over in (
        ("are-kall", {}),
        ("harjedalen-hede", {"mode": "normal", "grid": {"state": "ok", "v": 231.4, "f": 50.0},
                             "genset": {"state": "stopped"},
                             "fuel": {"pct": 96.0, "hours_left": 112.9},
                             "devices": {"tank": "online"}}),
        ("krokom-follinge", {"mode": "backup_failed", "genset": {"state": "fault"},
                             "fuel": {"pct": 41.0, "hours_left": 48.2},
                             "devices": {"tank": "online"}}),
    ):
        ing.handle(f"sot/v1/{site}/status", raw(status()))
        ing.handle(f"sot/v1/{site}/birth", raw(birth()))
        ing.handle(f"sot/v1/{site}/state", raw(state(**over)))
    ing.handle("sot/v1/krokom-follinge/event", raw(event("gen_failed_to_start")))
    return db, ing


def test_login_and_overview_in_headless_chromium(tmp_path: Path):
    def make() -> web.Application:
        db, ing = seeded_store(tmp_path / "sot.sqlite3")
        add_user(db, "anna", "viewer")
        add_user(db, "bo", "viewer")
        app = make_app(db, lambda: TS + 25, ing.stats)

        async def close(_app: web.Application) -> None:
            db.close()

        app.on_cleanup.append(close)
        return app

    with browser.serve(make) as base, browser.browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 820})
        # not logged in: the dashboard sends you to the login form
        page.goto(base + "/")
        assert "/login" in page.url
        browser.login(page, base, "anna", "wrong password!")
        assert "Fel användarnamn eller lösenord" in page.inner_text(".error")
        assert "/login" in page.url
        # five failures from this address make it wait (the account itself is never locked);
        # during the pause not even the right password is checked
        for _ in range(5):
            browser.login(page, base, "bo", "not the password")
        browser.login(page, base, "bo", PASSWORD)
        assert "För många misslyckade inloggningar" in page.inner_text(".error")
        page.screenshot(path=str(shot_path(tmp_path, "login-locked.png")))

        browser.login(page, base, "anna", PASSWORD)
        page.wait_for_selector("table.sites")
        dom = page.content()
        for name in ("Kall", "Hede", "Föllinge", "Åre", "Härjedalen", "Krokom"):
            assert name in dom
        for label in ("Nätström", "Reservkraft", "Timmar kvar", "Senast uppdaterad",
                      "Reservkraft i drift", "Normal drift", "Reservkraft har inte startat",
                      "Till salu"):
            assert label in dom
        assert page.locator("table.sites tbody tr").count() == 3
        assert page.locator("svg.map a.mapsite").count() == 3
        cookie = next(c for c in page.context.cookies() if c["name"] == "sot_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        png = shot_path(tmp_path, "overview.png")
        page.screenshot(path=str(png), full_page=True)
        assert png.stat().st_size > 10_000
        page.goto(base + "/sites/are-kall")
        assert page.locator("svg.chart .fuel polyline").count() == 1
        page.screenshot(path=str(shot_path(tmp_path, "site-page.png")), full_page=True)
        # the viewer sees no compose form and no audit log
        page.goto(base + "/crisis")
        assert page.locator("form.compose").count() == 0
        assert page.locator("nav a[href='/audit']").count() == 0
