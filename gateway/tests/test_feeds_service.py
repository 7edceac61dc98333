"""The feeds in the running gateway: `[[feeds]]` and `[feed_policy]` in the settings, one poller
per feed started and stopped with the service, bad input counted in /api/stats, and a failing
feed that never stops the gateway."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
import pytest
from feeds_fixtures import fixture
from web_login import add_user, login

from gateway.service import Gateway, with_defaults
from gateway.validate import ConfigError
from hil_tests.rig.broker import free_port
from hil_tests.rig.feedserver import FeedServer, retimed


def test_feed_sections_are_read_and_kept_as_written():
    raw = {"feeds": [{"name": "vma", "kind": "cap", "url": "https://example.org/vma.xml",
                      "interval_s": 30}],
           "feed_policy": {"default": "off", "municipalities": {"2321": "auto"}}}
    cfg = with_defaults(raw)
    assert cfg["feeds"] == raw["feeds"] and cfg["feed_policy"] == raw["feed_policy"]
    assert with_defaults(cfg) == cfg  # the service checks the checked settings again
    empty = with_defaults({})
    assert empty["feeds"] == [] and empty["feed_policy"]["default"] == "approve"


@pytest.mark.parametrize(("raw", "entry", "key", "says"), [
    ({"feeds": [{"name": "vma", "kind": "cap", "url": "ftp://x"}]},
     "[[feeds]] 'vma'", "url", "http(s) URL"),
    ({"feeds": [{"name": "vma", "kind": "rss", "url": "https://x/"}]},
     "[[feeds]] 'vma'", "kind", "one of cap, krisinformation"),
    ({"feeds": [{"kind": "cap", "url": "https://x/"}]}, "[[feeds]] #1", "name", "letters"),
    ({"feeds": [{"name": "a", "kind": "cap", "url": "https://x/", "intervall": 5}]},
     "[[feeds]] #1", None, "unknown key 'intervall'"),
    ({"feed_policy": {"default": "sometimes"}}, "[feed_policy]", None, "default must be"),
    ({"feed_policy": {"municipalities": {"Åre": "auto"}}}, "[feed_policy]", None,
     "four-digit"),
])
def test_feed_errors_name_file_entry_and_key(raw, entry, key, says):
    with pytest.raises(ConfigError) as e:
        with_defaults(raw, "config/gateway.toml")
    assert e.value.entry == entry and e.value.key == key and says in e.value.message
    assert str(e.value).startswith("config/gateway.toml: " + entry)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_gateway_polls_its_feeds_counts_bad_input_and_survives(tmp_path: Path):
    server = FeedServer().start()
    server.set("/vma.xml", retimed(fixture("vma-are-actual.xml")))
    server.set("/broken.xml", fixture("broken.xml"))
    feeds = [
        {"name": "vma", "kind": "cap", "url": server.url("/vma.xml"), "interval_s": 10},
        {"name": "broken", "kind": "cap", "url": server.url("/broken.xml"), "interval_s": 10},
        {"name": "gone", "kind": "cap", "url": f"http://127.0.0.1:{_dead_port()}/x.xml",
         "interval_s": 10, "timeout_s": 1},
    ]
    cfg = {"mqtt": {"port": free_port()}, "http": {"host": "127.0.0.1", "port": 0},
           "store": {"path": str(tmp_path / "sot.sqlite3")},
           "alerts": {"files_dir": str(tmp_path)}, "feeds": feeds,
           "feed_policy": {"default": "auto"}}

    async def main() -> dict:
        gw = Gateway(cfg)
        await gw.start()
        try:
            assert gw.feeds is not None and gw.store is not None
            for _ in range(100):
                if gw.feeds.alerts() and all(h.last_attempt for h in gw.feeds.health()):
                    break
                await asyncio.sleep(0.1)
            add_user(gw.store)
            base = f"http://127.0.0.1:{gw.http_port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                await login(s, base)
                async with s.get(base + "/api/stats") as r:
                    stats = await r.json()
            assert [a.identifier for a in gw.feeds.alerts()] == ["TEST-VMA-2026-1205-001"]
            health = {h.name: h for h in gw.feeds.health()}
            assert health["vma"].consecutive_failures == 0
            assert health["broken"].last_error == "xml"
            assert health["gone"].last_error == "network"
            return stats
        finally:
            await gw.stop()

    try:
        stats = asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        server.stop()
    feeds_stats = stats["feeds"]
    assert feeds_stats["feeds"]["broken"]["counts"]["xml"] >= 1
    assert feeds_stats["feeds"]["gone"]["counts"]["network"] >= 1
    assert feeds_stats["counts"]["xml"] >= 1 and feeds_stats["alerts"] == 1
    # No broker: the VMA could not go out yet; it is not lost (Feeds.resend).
    assert feeds_stats["published"].get("sent", 0) == 0


class Broker:
    """The MQTT session as the crisis sender sees it, up or down."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[tuple[str, bytes]] = []

    def is_connected(self) -> bool:
        return self.up

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        if not self.up:
            return False
        self.sent.append((topic, payload))
        return True


def _feeds(tmp_path: Path, broker: Broker, policy: str = "auto"):
    from feeds_fixtures import NOW, demo_sites
    from gw_samples import SITES

    from gateway import crisis
    from gateway.feeds.policy import load_policy
    from gateway.feeds.poller import FeedConfig
    from gateway.feeds.run import Feeds
    from gateway.store import SqliteStore

    store = SqliteStore(tmp_path / "sot.sqlite3")
    store.upsert_sites(SITES)
    sender = crisis.CrisisSender(store, broker, lambda: NOW)
    return Feeds([FeedConfig("vma", "cap", "http://127.0.0.1:9/x.xml")],
                 load_policy({"default": policy}), sender, store, demo_sites(), lambda: NOW)


def test_a_cancel_for_nothing_is_counted_and_logged_once(tmp_path: Path, caplog):
    from gateway.feeds import parse_cap
    from gateway.feeds.poller import PollResult

    feeds = _feeds(tmp_path, Broker())
    unknown = parse_cap(fixture("vma-cancel-unknown.xml"), feed="vma")
    for _ in range(3):  # the feed lists it on every poll
        feeds.handle("vma", PollResult(alerts=[unknown]))
    assert feeds.stats()["feeds"]["vma"]["counts"]["cancel_unknown"] == 1
    assert len([r for r in caplog.records if "changed nothing" in r.message]) == 1
    assert feeds.alerts() == [] and not feeds.publisher.published


def test_what_came_while_the_broker_was_down_goes_out_once_it_is_up(tmp_path: Path):
    from gateway.feeds import parse_cap
    from gateway.feeds.poller import PollResult

    broker = Broker()
    broker.up = False
    feeds = _feeds(tmp_path, broker)
    actual = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
    feeds.handle("vma", PollResult(alerts=[actual]))
    assert broker.sent == [] and len(feeds.alerts()) == 1
    feeds.handle("vma", PollResult(not_modified=True))  # still down
    assert broker.sent == []
    broker.up = True
    feeds.handle("vma", PollResult(not_modified=True))  # the next poll: up again
    assert all("/are-kall/" in t for t, _ in broker.sent)
    assert len(broker.sent) == 1 and feeds.publisher.counts["sent"] == 1
    feeds.handle("vma", PollResult(alerts=[actual]))  # a repeat: nothing more
    assert len(broker.sent) == 1


def test_the_feeds_page_lists_real_and_test_alerts_and_what_awaits_approval(tmp_path: Path):
    from feeds_fixtures import NOW

    from gateway.feeds import parse_cap
    from gateway.feeds.poller import PollResult
    from gateway.feeds.view import feeds_page

    broker = Broker()
    feeds = _feeds(tmp_path, broker, "approve")
    actual = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
    test = parse_cap(fixture("vma-are-test.xml"), feed="vma")
    feeds.handle("vma", PollResult(alerts=[actual, test]))
    page = feeds_page(feeds.state_json(), NOW, NOW, {})
    rows = {r.status: r for r in page.alerts}
    assert set(rows) == {"Actual", "Test"} and rows["Actual"].real and not rows["Test"].real
    assert rows["Actual"].headline.sv.startswith("VMA: Storm och långvarigt elavbrott")
    assert rows["Actual"].origin == "Räddningstjänsten Jämtland"
    assert rows["Actual"].sites == ("are-kall",) and rows["Actual"].awaiting == ("are-kall",)
    assert rows["Test"].awaiting == () and [r.key for r in page.pending] == [actual.key]
    assert [(f.name, f.ok) for f in page.feeds] == [("vma", False)]  # not polled yet
    assert feeds.approve(actual.key, "anna") == ["are-kall"]
    assert feeds_page(feeds.state_json(), NOW, NOW, {}).pending == [] and len(broker.sent) == 1
