"""The coordinators' page of official alerts (/feeds): real and test alerts (test marked), the
feeds' health, and approving an alert that waits, with a local note after the official text,
through the CSRF-protected form; the approval is in the audit log; a viewer sees but cannot
approve."""

from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path

import aiohttp
from aiohttp import web
from feeds_fixtures import NOW, demo_sites, fixture
from gw_samples import SITES
from test_auth import FakeBroker
from web_login import add_user, login

from gateway import crisis
from gateway.feeds import parse_cap
from gateway.feeds.policy import load_policy
from gateway.feeds.poller import FeedConfig, PollResult
from gateway.feeds.run import Feeds
from gateway.store import SqliteStore
from gateway.web import make_app
from gateway.web.feeds import FEEDS

ACTUAL = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
TEST = parse_cap(fixture("vma-are-test.xml"), feed="vma")


def test_the_page_lists_marks_and_approves(tmp_path: Path) -> None:
    db = SqliteStore(tmp_path / "sot.sqlite3")
    db.upsert_sites(SITES)
    add_user(db, "anna", "viewer")
    add_user(db, "kim", "coordinator")
    broker = FakeBroker()
    sender = crisis.CrisisSender(db, broker, lambda: NOW)
    feeds = Feeds([FeedConfig("vma", "cap", "https://cap.example.se/vma.xml")],
                  load_policy({"default": "approve"}), sender, db, demo_sites(), lambda: NOW)
    feeds.handle("vma", PollResult(alerts=[ACTUAL, TEST]))

    async def main() -> None:
        app = make_app(db, lambda: NOW, crisis=sender)
        app[FEEDS] = lambda: feeds
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        jar = aiohttp.CookieJar(unsafe=True)

        async def carry_out() -> None:  # what the running feeds do (Feeds._approvals)
            while True:
                feeds.process_approvals()
                await asyncio.sleep(0.05)

        worker = asyncio.create_task(carry_out())
        try:
            async with aiohttp.ClientSession(cookie_jar=jar) as viewer:
                csrf = await login(viewer, base, "anna")
                async with viewer.get(base + "/feeds") as r:
                    assert r.status == 200
                    page = html.unescape(await r.text())
                assert "VMA: Storm och långvarigt elavbrott i Åre kommun" in page
                assert page.count('data-status="Test"') == 1
                assert "TEST, visas inte publikt" in page  # the test one is marked
                assert "Räddningstjänsten Jämtland" in page
                assert 'action="/feeds/approve"' not in page  # a viewer cannot approve
                async with viewer.post(base + "/feeds/approve", allow_redirects=False,
                                       data={"csrf": csrf, "key": ACTUAL.key}) as r:
                    assert r.status == 403
            assert broker.sent == []
            async with aiohttp.ClientSession(
                    cookie_jar=aiohttp.CookieJar(unsafe=True)) as coord:
                csrf = await login(coord, base, "kim")
                async with coord.get(base + "/feeds") as r:
                    page = await r.text()
                assert 'action="/feeds/approve"' in page and page.count('class="approve"') == 1
                async with coord.post(base + "/feeds/approve", allow_redirects=False,
                                      data={"key": ACTUAL.key}) as r:
                    assert r.status == 403  # no CSRF token
                async with coord.post(base + "/feeds/approve", allow_redirects=False,
                                      data={"csrf": csrf, "key": ACTUAL.key,
                                            "note": "x" * 400}) as r:
                    assert r.status == 400
                    assert "får inte plats" in html.unescape(await r.text())
                assert broker.sent == []  # refused: nothing sent, still waiting
                async with coord.post(base + "/feeds/approve", allow_redirects=False,
                                      data={"csrf": csrf, "key": ACTUAL.key,
                                            "note": "Värmestuga i skolan"}) as r:
                    assert r.status == 303 and r.headers["Location"] == "/feeds"
                async with coord.get(base + "/feeds") as r:
                    page = html.unescape(await r.text())
                assert "Inget larm väntar på godkännande" in page and "visas på" in page
        finally:
            worker.cancel()
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert len(broker.sent) == 1
    topic, payload, _ = broker.sent[0]
    msg = json.loads(payload)
    assert "/are-kall/" in topic and msg["sv"].endswith("Kommunen: Värmestuga i skolan")
    assert msg["sv"].startswith("VMA: Storm och långvarigt elavbrott i Åre kommun")
    audit = [a for a in db.audit_log(50) if a["action"] == "feed_approved"]
    assert [(a["actor"], a["target"]) for a in audit] == [("kim", ACTUAL.id)]
    assert "note=Värmestuga i skolan" in audit[0]["detail"]
    db.close()
