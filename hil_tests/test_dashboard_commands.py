"""A coordinator's remote control from the dashboard, end to end through real parts: headless
Chromium -> gateway (aiohttp, its own MQTT session, the site's command key) -> Mosquitto (TLS,
ACLs) -> firmware (MicroPython unix port) -> the simulated generator, and the controller's
result back to the site page.

Set SOT_UPDATE_SCREENSHOTS=1 to refresh docs/img/dashboard-command-confirm.png (docs/commands.md
shows it); otherwise the screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store import SqliteStore
from hil_tests.conftest import wait_for
from hil_tests.rig import browser
from hil_tests.rig.broker import Broker
from hil_tests.rig.gatewayproc import GatewayThread, rig_config, running_gateway
from hil_tests.test_site_panel import SITE, make_site

pytestmark = [pytest.mark.hil, pytest.mark.needs("unix", "bus", "network"),
              pytest.mark.browser,
              pytest.mark.skipif(not browser.available(), reason="needs /usr/bin/chromium and "
                                 "playwright (scripts/bootstrap.sh --browser)")]

KEY = "6b" * 32
PASSWORD = "fjarr-samordnare-1"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def shot(tmp_path: Path, name: str) -> str:
    update = os.environ.get("SOT_UPDATE_SCREENSHOTS") == "1"
    return str(DOCS_IMG / name if update else tmp_path / name)


@pytest.fixture
def keyed_gateway(broker: Broker, tmp_path: Path) -> Iterator[GatewayThread]:
    """The gateway with the site's command key (as `sot mqtt-auth` writes it)."""
    config = rig_config(broker, tmp_path)
    Path(config["mqtt"]["cmd_keys"]).write_text(json.dumps({SITE: KEY}))
    with running_gateway(config) as gw:
        yield gw


@pytest.fixture
def sim(broker: Broker, tmp_path: Path):
    with make_site(tmp_path, broker.port, login={**broker.login(SITE), "cmd_key": KEY}) as s:
        yield s


def row_state(page: Any, base: str, want: tuple[str, ...]) -> str | None:
    page.goto(f"{base}/sites/{SITE}")
    row = page.locator("tr[data-command]").first
    if row.count() == 0:
        return None
    state = row.get_attribute("data-state")
    return state if state in want else None


def test_coordinator_runs_a_test_run_from_the_site_page_and_sees_it_done(
        keyed_gateway: GatewayThread, sim: Any, tmp_path: Path):
    gw = keyed_gateway
    gw.add_user("kim", "coordinator", PASSWORD)
    base = gw.url
    wait_for(lambda: (s := (gw.get(f"/api/sites/{SITE}").get("state") or {}))
             and s["genset"]["ready"], 30, "the gateway to hear a ready generator")
    with browser.browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 900})
        browser.login(page, base, "kim", PASSWORD)
        page.goto(f"{base}/sites/{SITE}")
        page.fill("form.command input[name=minutes]", "1")
        page.click("button[data-cmd=gen_test]")
        page.wait_for_selector("p[data-confirm]")
        question = page.inner_text("p[data-confirm]")
        assert "Skicka Provkörning (1 min, utan last) till Kall (are-kall)?" in question
        assert "Send Test run (1 min, off load) to Kall (are-kall)?" in question
        page.screenshot(path=shot(tmp_path, "dashboard-command-confirm.png"), full_page=False)
        assert sim.plant.control_writes == []  # the button alone sent nothing
        page.click("button[data-confirm-send]")
        page.wait_for_url(f"{base}/sites/{SITE}#remote")
        # the controller accepts, runs the set for its minute and stops it: done
        wait_for(lambda: row_state(page, base, ("accepted", "done")), 20, "accepted")
        assert sim.plant.control_writes[0][0] == "genset"
        final = wait_for(lambda: row_state(page, base, ("done", "failed", "refused", "unknown")),
                         150, "the test run's final result", every=2)
        assert final == "done", page.inner_text("table.commands")
        assert "utfört / done" in page.inner_text("table.commands")
        page.screenshot(path=shot(tmp_path, "dashboard-command-done.png"), full_page=True)

        # someone on site turns the set to Manual: a remote start is refused, and the page says why
        sim.physics.set_control_mode("manual")
        wait_for(lambda: (gw.get(f"/api/sites/{SITE}").get("state") or {})
                 .get("genset", {}).get("mode") == "manual", 20, "the set in manual")
        page.goto(f"{base}/sites/{SITE}")
        page.click("button[data-cmd=gen_start]")
        assert "Starta elverket" in page.inner_text("p[data-confirm]")
        page.click("button[data-confirm-send]")
        page.wait_for_url(f"{base}/sites/{SITE}#remote")
        assert wait_for(lambda: row_state(page, base, ("refused", "done", "failed")), 20,
                        "the refusal") == "refused"
        row = page.inner_text("tr[data-command] >> nth=0")
        assert "vägrat / refused" in row and "mode:manual" in row
        assert "elverket står inte i AUTO" in row

    store = SqliteStore(tmp_path / "sot.sqlite3")  # the gateway's database, read beside it
    try:
        audit = [(a["actor"], a["action"], a["target"].split("/")[1], a["detail"])
                 for a in store.audit_log() if a["action"].startswith("cmd_")]
    finally:
        store.close()
    assert ("kim", "cmd_sent", "gen_test", '{"load": false, "minutes": 1}') in audit
    assert (SITE, "cmd_result", "gen_test", "done") in audit
    assert ("kim", "cmd_sent", "gen_start", "{}") in audit
    assert (SITE, "cmd_result", "gen_start", "refused mode:manual") in audit
