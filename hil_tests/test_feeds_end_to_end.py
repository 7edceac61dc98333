"""An official alert from a national feed to the shop, end to end through real parts: a local
aiohttp feed server (the project's own CAP fixtures, retimed to now) -> the gateway's poller ->
Mosquitto (TLS) -> the firmware (MicroPython unix port) -> the panel, and the public signage
page in headless Chromium.

One scenario, in the order that makes each step observable: the VMA as Test first (the
coordinators have it, no panel or screen does; were the real one on show already, the test's
identical headline could not be told apart), then the same VMA Actual (Kall's panel and signage
show it, Hede's signage does not: Hede is in Härjedalen, not Åre), then its Cancel (gone from
the panel and the signage). The coordinators' page /feeds shows each step: the test alert
marked, the real one shown at Kall. The feed is polled every 10 s, the shortest interval
allowed.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_sites
from hil_tests.conftest import wait_for
from hil_tests.rig import browser
from hil_tests.rig.broker import Broker
from hil_tests.rig.feedserver import FeedServer, fixture, retimed
from hil_tests.rig.gatewayproc import GatewayThread, rig_config, running_gateway
from hil_tests.rig.sitesim import SimulatedSite

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network", "panel"),
              pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium and "
                                 "playwright (scripts/bootstrap.sh --browser)")]

SITE = "are-kall"
OTHER = "harjedalen-hede"
INTERVAL_S = 10
POLL_WAIT = INTERVAL_S + 10  # one poll interval, the MQTT hop and the panel's redraw
HEADLINE = "VMA: Storm och långvarigt elavbrott"


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    s = FeedServer().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def feed_gateway(broker: Broker, feed: FeedServer, tmp_path: Path) -> Iterator[GatewayThread]:
    feed.set("/vma.xml", retimed(fixture("vma-are-test.xml")))
    feeds = [{"name": "vma", "kind": "cap", "url": feed.url("/vma.xml"),
              "interval_s": INTERVAL_S}]
    policy = {"default": "approve", "municipalities": {"2321": "auto"}}
    with running_gateway(rig_config(broker, tmp_path, feeds=feeds, feed_policy=policy)) as gw:
        yield gw


@pytest.fixture
def sim(broker: Broker, tmp_path: Path) -> Iterator[SimulatedSite]:
    s = SimulatedSite(load_sites()[SITE], tmp_path, mqtt_host="127.0.0.1", mqtt_port=broker.port,
                      heartbeat_s=2, login=broker.login(SITE))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def official(gw: GatewayThread) -> list[tuple[str, str]]:
    """(identifier, status) of the official alerts the gateway holds (the coordinators' view)."""
    def get() -> list[tuple[str, str]]:
        assert gw.gateway.feeds is not None
        return [(a.identifier, a.status) for a in gw.gateway.feeds.alerts()]
    return list(gw.thread.call(get))


def cap_feed(base: str) -> str:
    with urllib.request.urlopen(base + "/cap.atom", timeout=10) as r:
        return str(r.read().decode())


def test_a_vma_reaches_kall_only_as_actual_and_leaves_when_cancelled(
        feed_gateway: GatewayThread, sim: SimulatedSite, feed: FeedServer, tmp_path: Path):
    gw = feed_gateway
    base = gw.url
    gw.add_user("kim", "coordinator", "kris-samordnare-1")
    wait_for(lambda: "NÄTSTRÖM" in sim.panel_text(), 30, "Kall's panel")
    with browser.browser() as b:
        kall = b.new_context(viewport={"width": 1280, "height": 720}).new_page()
        kall.goto(f"{base}/signage/{SITE}")
        kall.wait_for_function("document.querySelector('#power .v').textContent"
                               ".includes('Nätström')", timeout=20_000)
        hede = b.new_context(viewport={"width": 1280, "height": 720}).new_page()
        hede.goto(f"{base}/signage/{OTHER}")
        hede.wait_for_selector("#takeover", state="attached", timeout=20_000)
        dash = b.new_page(viewport={"width": 1280, "height": 900})
        browser.login(dash, base, "kim", "kris-samordnare-1")

        # 1. The VMA as Test: the gateway has it (coordinators see it, marked), nothing public.
        wait_for(lambda: ("TEST-VMA-2026-1205-T01", "Test") in official(gw), POLL_WAIT,
                 "the gateway to hold the test VMA")
        sim_text = sim.panel_text()
        assert "VMA" not in sim_text, sim_text
        assert kall.locator("#takeover").is_hidden() and kall.locator("#banner").is_hidden()
        assert gw.get("/api/stats")["feeds"]["published"].get("sent", 0) == 0
        dash.goto(base + "/feeds")  # the coordinators see it, marked as test
        row = dash.locator('tr[data-status="Test"]')
        assert "TEST, visas inte publikt" in row.inner_text()
        assert "visas på" not in row.inner_text()

        # 2. The same VMA, Actual: Kall's panel and signage show it, Hede's signage does not.
        feed.set("/vma.xml", retimed(fixture("vma-are-actual.xml")))
        wait_for(lambda: "VMA" in sim.panel_text(), POLL_WAIT, "the VMA on Kall's panel")
        kall.wait_for_selector("#takeover:not([hidden])", timeout=10_000)
        assert HEADLINE in kall.inner_text("#takeover .msg-sv")
        assert "Håll dig inomhus" in kall.inner_text("#takeover .msg-sv")
        assert "Storm and long power cut" in kall.inner_text("#takeover .msg-en")
        assert "Räddningstjänsten Jämtland" in kall.inner_text("#takeover .src")
        kall.screenshot(path=str(tmp_path / "signage-vma.png"))
        assert hede.locator("#takeover").is_hidden() and hede.locator("#banner").is_hidden()
        assert "VMA" not in hede.inner_text("body")
        dash.goto(base + "/feeds")
        assert f"visas på / shown at: {SITE}" in dash.inner_text('tr[data-status="Actual"]')
        # ... and the gateway's CAP feed out carries it, naming the issuer and the original
        cap = cap_feed(base)
        assert "<cap:source>Räddningstjänsten Jämtland (feed:" in cap, cap
        assert "vma@cap.example.se,TEST-VMA-2026-1205-001," in cap

        # 3. The Cancel: withdrawn from the panel and the signage.
        feed.set("/vma.xml", retimed(fixture("vma-are-cancel-first.xml")))
        wait_for(lambda: "VMA" not in sim.panel_text(), POLL_WAIT, "the VMA to leave the panel")
        kall.wait_for_selector("#takeover[hidden]", state="attached", timeout=10_000)
        assert "VMA" not in kall.inner_text("body")
        assert ("TEST-VMA-2026-1205-001", "Actual") not in official(gw)
        assert ".official." not in cap_feed(base)
