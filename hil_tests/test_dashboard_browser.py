"""The coordinator's dashboard and the shop's public screen, end to end through real parts:
headless Chromium -> gateway (aiohttp) -> Mosquitto -> firmware (MicroPython unix port) -> panel,
and the staff's acknowledgement all the way back.

Set SOT_UPDATE_SCREENSHOTS=1 to refresh the screenshots in docs/img/ (the coordinator guide
shows them); otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from gateway.config import load_sites
from hil_tests.conftest import wait_for
from hil_tests.rig import browser
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread
from hil_tests.rig.sitesim import SimulatedSite

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network", "panel"),
              pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium and "
                                 "playwright (scripts/bootstrap.sh --browser)")]

SITE = "are-kall"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
PASSWORD = "kris-samordnare-1"


def shot(tmp_path: Path, name: str) -> str:
    update = os.environ.get("SOT_UPDATE_SCREENSHOTS") == "1"
    return str(DOCS_IMG / name if update else tmp_path / name)


@pytest.fixture
def sim(broker: Broker, tmp_path: Path):
    # heartbeat 2 s: the screen must call the site stale after 3 missed heartbeats (6 s), well
    # before the broker gives up on the silent controller (1.5 x keepalive = 30 s)
    s = SimulatedSite(load_sites()[SITE], tmp_path, mqtt_host="127.0.0.1", mqtt_port=broker.port,
                      heartbeat_s=2, keepalive_s=20, login=broker.login(SITE))
    s.start()
    try:
        yield s
    finally:
        if s.firmware is not None and s.firmware.pid is not None:
            try:
                os.kill(s.firmware.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        s.stop()


def panel_shows(sim: SimulatedSite, *texts: str, timeout: float = 20) -> str:
    return wait_for(lambda: (t := sim.panel_text()) and all(x in t for x in texts) and t,
                    timeout, f"the panel to show {texts}")


def test_crisis_message_from_dashboard_to_panel_and_signage_and_back(
        gateway: GatewayThread, sim: SimulatedSite, tmp_path: Path):
    gateway.add_user("kim", "coordinator", PASSWORD)
    base = gateway.url
    panel_shows(sim, "NÄTSTRÖM", "Kommunen: ansluten")
    with browser.browser() as b:
        dash = b.new_page(viewport={"width": 1280, "height": 900})
        browser.login(dash, base, "kim", PASSWORD)
        dash.wait_for_selector(f"tr[data-site={SITE}] td.contact.ok", timeout=20_000)

        # the public screen: no login, the site's status in large type
        screen = b.new_context(viewport={"width": 1280, "height": 720}).new_page()
        screen.goto(f"{base}/signage/{SITE}")
        screen.wait_for_function("document.querySelector('#power .v').textContent"
                                 ".includes('Nätström')", timeout=15_000)
        assert screen.locator("#stale").is_hidden()
        assert "ÖPPEN" in screen.inner_text("#shop")
        assert "Diesel" in screen.inner_text("#fuel")
        screen.screenshot(path=shot(tmp_path, "signage-normal.png"))

        # compose and send: Swedish and English, severe, to one site
        dash.goto(base + "/crisis")
        dash.check(f"input[name=site][value={SITE}]")
        dash.fill("textarea[name=sv]", "Vattnet är otjänligt. Koka dricksvattnet <b>5 min</b>.")
        dash.fill("textarea[name=en]", "Boil drinking water for 5 minutes.")
        dash.check("input[name=severity][value=severe]")
        dash.fill("input[name=from]", "Åre kommun")
        dash.screenshot(path=shot(tmp_path, "crisis-compose.png"), full_page=True)
        dash.click("form.compose button[type=submit]")
        dash.wait_for_url(re.compile(r".*/crisis/k[0-9a-z-]+$"))
        crisis_id = dash.url.rsplit("/", 1)[1]
        assert "Inte kvitterat än" in dash.inner_text(f"tr[data-site={SITE}]")

        # ... on the panel beside the till, shown as the characters typed (never markup)
        text = panel_shows(sim, "Vattnet", "Åre kommun", "OK = kvittera")
        assert "<b>5" in text
        # ... and on the public screen: a severe message takes it over
        screen.wait_for_selector("#takeover:not([hidden])", timeout=10_000)
        assert "<b>5 min</b>" in screen.inner_text("#takeover .msg-sv")
        assert "Boil drinking water" in screen.inner_text("#takeover .msg-en")
        assert "Åre kommun" in screen.inner_text("#takeover .src")
        assert screen.locator("#takeover b").count() == 0
        screen.screenshot(path=shot(tmp_path, "signage-severe.png"))

        # staff press OK: the acknowledgement comes back to the dashboard
        sim.press("ack")
        wait_for(lambda: (dash.reload(), dash.locator(f"tr[data-site={SITE}] td.acked").count())[1],
                 20, "the staff acknowledgement on the dashboard", every=0.5)
        dash.screenshot(path=shot(tmp_path, "crisis-acked.png"), full_page=True)

        # withdraw it, then a lesser message to the whole municipality: a banner, not a takeover
        dash.click("form.withdraw button")
        screen.wait_for_selector("#takeover[hidden]", state="attached", timeout=10_000)
        wait_for(lambda: "Vattnet" not in sim.panel_text(), 15, "the message to leave the panel")
        dash.goto(base + "/crisis")
        dash.check("input[name=municipality][value=Åre]")
        dash.fill("textarea[name=sv]", "Kommunens informationspunkt är öppen i butiken 8–20.")
        dash.check("input[name=severity][value=warning]")
        dash.fill("input[name=from]", "Åre kommun")
        dash.click("form.compose button[type=submit]")
        dash.wait_for_url(re.compile(r".*/crisis/k[0-9a-z-]+$"))
        assert dash.url.rsplit("/", 1)[1] != crisis_id
        screen.wait_for_selector("#banner.warning:not([hidden])", timeout=10_000)
        assert "informationspunkt" in screen.inner_text("#banner")
        screen.screenshot(path=shot(tmp_path, "signage-banner.png"))
        panel_shows(sim, "informationspunkt")

        # the site goes silent (controller frozen, its TCP session still open): after 3 missed
        # heartbeats the screen says so and greys the values, it never shows them as current
        assert sim.firmware is not None and sim.firmware.pid is not None
        os.kill(sim.firmware.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        screen.wait_for_selector("#stale:not([hidden])", timeout=20_000)
        stale_after = time.monotonic() - t0
        assert "INAKTUELLT" in screen.inner_text("#stale")
        assert "informationspunkt" in screen.inner_text("#banner")  # the message stays up
        assert stale_after < 15, stale_after  # before the broker's 30 s keepalive gives up
        screen.screenshot(path=shot(tmp_path, "signage-stale.png"))

        dash.goto(f"{base}/sites/{SITE}")
        dash.wait_for_selector("svg.chart, p.muted")
        assert "Krismeddelanden" in dash.content()
        dash.screenshot(path=str(tmp_path / "site-page-live.png"), full_page=True)
