"""The feeds' state outlives the process that runs them (gateway/feeds/run.py, the store's
feeds.py): a restarted gateway, or another worker taking the feeds over, knows what the panels
show; an approval made on any worker is carried out by the one running the feeds; every
worker's /feeds page shows the same. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from feeds_fixtures import NOW, demo_sites, fixture
from gw_samples import SITES
from pg_cluster import (  # noqa: F401 - fixtures
    backend_fixture,
    pg_cluster_fixture,
    store_fixture,
)
from test_auth import FakeBroker
from web_login import add_user, login

from gateway import crisis
from gateway.feeds import parse_cap
from gateway.feeds.policy import load_policy
from gateway.feeds.poller import FeedConfig, PollResult
from gateway.feeds.publish import crisis_id
from gateway.feeds.run import Feeds
from gateway.store import Store
from gateway.web import make_app

ACTUAL = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
TEST = parse_cap(fixture("vma-are-test.xml"), feed="vma")
UPDATE = parse_cap(fixture("vma-are-update.xml"), feed="vma")
CANCEL = parse_cap(fixture("vma-are-cancel.xml"), feed="vma")
TOPIC = crisis.topic("are-kall", crisis_id(ACTUAL.key))


class Worker:
    """One gateway process's feeds over the shared store and broker."""

    def __init__(self, store: Store, broker: FakeBroker, now: list[float]) -> None:
        sender = crisis.CrisisSender(store, broker, lambda: now[0])
        self.feeds = Feeds([FeedConfig("vma", "cap", "http://127.0.0.1:9/vma.xml")],
                           load_policy({"default": "approve"}), sender, store, demo_sites(),
                           lambda: now[0])


@pytest.fixture
def shared(store: Store) -> Iterator[tuple[Store, FakeBroker, list[float]]]:
    store.upsert_sites(SITES)
    yield store, FakeBroker(), [NOW]


def last(broker: FakeBroker) -> dict[str, object] | None:
    payload = [p for t, p, _ in broker.sent if t == TOPIC][-1]
    return json.loads(payload) if payload else None


def test_a_restart_keeps_what_was_approved_and_its_cancel_withdraws_it(shared) -> None:
    store, broker, now = shared
    a = Worker(store, broker, now)
    a.feeds.handle("vma", PollResult(alerts=[ACTUAL, TEST]))
    assert list(a.feeds.publisher.pending) == [ACTUAL.key] and broker.sent == []
    req = store.request_feed_approval(ACTUAL.key, "kim", "Värmestuga i skolan.", now[0])
    assert a.feeds.process_approvals() == 1
    assert store.feed_approval(req)["outcome"] == "done"
    shown = last(broker)
    assert shown is not None and str(shown["sv"]).endswith("Kommunen: Värmestuga i skolan.")
    sent = len(broker.sent)

    b = Worker(store, broker, now)  # a restart, or another worker taking the feeds over
    assert b.feeds.publisher.pending == {}
    assert b.feeds.publisher.published == {ACTUAL.key: crisis_id(ACTUAL.key)}
    assert {x.identifier for x in b.feeds.alerts(now[0])} == {ACTUAL.identifier,
                                                               TEST.identifier}
    b.feeds.handle("vma", PollResult(alerts=[ACTUAL, TEST]))  # the same feed again
    assert len(broker.sent) == sent and b.feeds.publisher.pending == {}
    now[0] += 3600
    b.feeds.handle("vma", PollResult(alerts=[ACTUAL, TEST, UPDATE, CANCEL]))  # one poll
    assert last(broker) is None  # withdrawn from Kall's panel
    c = Worker(store, broker, now)
    c.feeds.handle("vma", PollResult(alerts=[ACTUAL]))  # the original, still in the feed
    assert last(broker) is None and c.feeds.publisher.pending == {}  # withdrawn stays so


def test_approvals_from_any_worker_are_carried_out_once_with_their_outcome(shared) -> None:
    store, broker, now = shared
    runner = Worker(store, broker, now)
    runner.feeds.handle("vma", PollResult(alerts=[ACTUAL]))
    too_long = store.request_feed_approval(ACTUAL.key, "kim", "x" * 400, now[0])
    unknown = store.request_feed_approval("cap nobody 1", "kim", None, now[0])
    assert runner.feeds.process_approvals() == 2
    assert str(store.feed_approval(too_long)["outcome"]).startswith("too_long:")
    assert store.feed_approval(unknown)["outcome"] == "gone"
    assert broker.sent == [] and list(runner.feeds.publisher.pending) == [ACTUAL.key]
    ok = store.request_feed_approval(ACTUAL.key, "kim", None, now[0])
    again = store.request_feed_approval(ACTUAL.key, "lo", None, now[0])  # a double click
    assert runner.feeds.process_approvals() == 2
    assert store.feed_approval(ok)["outcome"] == "done"
    assert store.feed_approval(again)["outcome"] == "gone"
    assert len(broker.sent) == 1 and runner.feeds.process_approvals() == 0
    audit = [x for x in store.audit_log(20) if x["action"] == "feed_approved"]
    assert [(x["actor"], x["target"]) for x in audit] == [("kim", ACTUAL.id)]


def test_a_worker_without_the_feeds_shows_the_page_and_takes_an_approval(shared) -> None:
    """Worker B serves the web only (another worker runs the feeds): its /feeds page shows the
    saved state, and an approval posted to it is carried out by the feeds' worker."""
    store, broker, now = shared
    add_user(store, "kim", "coordinator")
    runner = Worker(store, broker, now)
    runner.feeds.handle("vma", PollResult(alerts=[ACTUAL, TEST]))

    async def main() -> str:
        app = make_app(store, lambda: now[0])  # no feeds of its own
        web_runner = web.AppRunner(app, access_log=None)
        await web_runner.setup()
        await web.TCPSite(web_runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{web_runner.addresses[0][1]}"

        async def feeds_worker() -> None:  # the other process, polling for approvals
            while not runner.feeds.process_approvals():
                await asyncio.sleep(0.05)

        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                csrf = await login(s, base, "kim")
                async with s.get(base + "/feeds") as r:
                    page = html.unescape(await r.text())
                assert "VMA: Storm och långvarigt elavbrott i Åre kommun" in page
                assert page.count('class="approve"') == 1 and 'id="saved"' in page
                async with s.post(base + "/feeds/approve", allow_redirects=False,
                                  data={"csrf": csrf, "key": ACTUAL.key, "note": "x" * 400}) as r:
                    assert r.status == 400  # checked here already: nothing asked of the runner
                assert store.open_feed_approvals() == []
                task = asyncio.create_task(feeds_worker())
                async with s.post(base + "/feeds/approve", allow_redirects=False,
                                  data={"csrf": csrf, "key": ACTUAL.key}) as r:
                    assert r.status == 303
                await task
                async with s.get(base + "/feeds") as r:
                    return html.unescape(await r.text())
        finally:
            await web_runner.cleanup()

    page = asyncio.run(asyncio.wait_for(main(), 30))
    assert "Inget larm väntar på godkännande" in page and "visas på" in page
    assert last(broker) is not None
