"""Official alerts through the crisis sender to the sites' topics (gateway/feeds/publish.py):
per the municipality's policy, only where they apply, updates in place, cancels withdrawn, and
the whole way from a feed served on 127.0.0.1 to the retained MQTT message."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from feeds_fixtures import NOW, demo_sites, fixture
from gw_samples import SITES
from test_auth import FakeBroker

from gateway import crisis
from gateway.feeds import AlertSet, apply_all, load_policy, parse_cap, parse_krisinformation
from gateway.feeds.poller import FeedConfig, FeedPoller
from gateway.feeds.publish import FeedPublisher, crisis_id, panel_text
from gateway.store import SqliteStore

ACTUAL = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
TEST = parse_cap(fixture("vma-are-test.xml"), feed="vma")
UPDATE = parse_cap(fixture("vma-are-update.xml"), feed="vma")
CANCEL = parse_cap(fixture("vma-are-cancel.xml"), feed="vma")


class Rig:
    def __init__(self, tmp_path: Path, policy: dict[str, object]) -> None:
        self.now = NOW
        self.store = SqliteStore(tmp_path / "sot.sqlite3")
        self.store.upsert_sites(SITES)
        self.broker = FakeBroker()
        self.sender = crisis.CrisisSender(self.store, self.broker, lambda: self.now)
        self.pub = FeedPublisher(self.sender, self.store, demo_sites(), load_policy(policy),
                                 lambda: self.now)
        self.state = AlertSet()

    def feed(self, *msgs) -> None:
        b = apply_all(self.state, list(msgs), self.now)
        self.state = b.state
        self.pub.handle(b.changes)

    def out(self) -> dict[str, dict[str, object] | None]:
        """topic -> the last retained payload (None: withdrawn)."""
        last: dict[str, dict[str, object] | None] = {}
        for topic, payload, retain in self.broker.sent:
            assert retain
            last[topic] = json.loads(payload) if payload else None
        return last


def topic(site: str, alert=ACTUAL) -> str:
    return crisis.topic(site, crisis_id(alert.key))


@pytest.fixture
def auto(tmp_path: Path) -> Rig:
    return Rig(tmp_path, {"default": "approve", "municipalities": {"2321": "auto"}})


def test_vma_goes_to_kall_only(auto: Rig) -> None:
    auto.feed(ACTUAL)
    out = auto.out()
    assert list(out) == [topic("are-kall")]
    msg = out[topic("are-kall")]
    assert msg is not None
    assert str(msg["sv"]).startswith("VMA: Storm och långvarigt elavbrott i Åre kommun Håll dig")
    assert str(msg["en"]).startswith("VMA: Storm and long power cut")
    assert msg["severity"] == "severe" and msg["from"] == "Räddningstjänsten Jämtland"
    assert ACTUAL.expires is not None
    assert 0 <= int(str(msg["expires"])) - ACTUAL.expires < 60
    # filed like a coordinator's message, with the feed as the actor
    assert auto.store.crisis_sites(crisis_id(ACTUAL.key)) == ["are-kall"]
    assert auto.store.crisis_message(crisis_id(ACTUAL.key)) is not None
    # polling again sends nothing more
    n = len(auto.broker.sent)
    auto.feed(ACTUAL)
    assert len(auto.broker.sent) == n


def test_test_message_never_reaches_a_panel(auto: Rig) -> None:
    auto.feed(TEST)
    assert auto.broker.sent == [] and auto.pub.pending == {}
    assert [a.identifier for a in auto.state.active(NOW)] == [TEST.identifier]


def test_update_in_place_then_cancel_withdraws(auto: Rig) -> None:
    auto.feed(ACTUAL)
    first = auto.out()[topic("are-kall")]
    auto.now += 3600
    auto.feed(UPDATE)
    upd = auto.out()[topic("are-kall")]  # the same id: the panel replaces the text
    assert first is not None and upd is not None
    assert int(str(upd["ts"])) > int(str(first["ts"]))
    assert str(upd["sv"]).startswith("VMA: Elavbrottet i Åre kommun väntas vara över ett dygn")
    auto.now += 3600
    auto.feed(CANCEL)
    assert auto.out()[topic("are-kall")] is None
    m = auto.store.crisis_message(crisis_id(ACTUAL.key))
    assert m is not None and m.get("withdrawn")


def test_policy_approve_waits_for_a_coordinator(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"default": "approve"})
    rig.feed(ACTUAL)
    assert rig.broker.sent == [] and list(rig.pub.pending) == [ACTUAL.key]
    assert rig.pub.pending[ACTUAL.key].sites == ("are-kall",)
    assert rig.pub.approve(ACTUAL.key, "anna") == ["are-kall"]
    assert rig.out()[topic("are-kall")] is not None
    # withdrawn by its Cancel like any other
    rig.feed(UPDATE, CANCEL)
    assert rig.out()[topic("are-kall")] is None


def test_an_approval_may_add_a_local_note_after_the_official_text(tmp_path: Path) -> None:
    from gateway.feeds.publish import NoteTooLong, note_room

    rig = Rig(tmp_path, {"default": "approve"})
    assert ACTUAL.sv is not None and ACTUAL.en is not None
    short = replace(ACTUAL, sv=replace(ACTUAL.sv, description="", instruction="Håll dig inne."),
                    en=replace(ACTUAL.en, description="", instruction="Stay indoors."))
    rig.feed(short)
    official_sv = panel_text(short.sv)
    room = note_room(short)
    with pytest.raises(NoteTooLong):
        rig.pub.approve(short.key, "anna", "x" * (room + 1))
    assert rig.broker.sent == [] and short.key in rig.pub.pending  # nothing sent, still waiting
    assert rig.pub.approve(short.key, "anna", "Värmestuga i Kalls skola.") == ["are-kall"]
    msg = rig.out()[topic("are-kall", short)]
    assert msg is not None and official_sv is not None
    assert msg["sv"] == f"{official_sv} Kommunen: Värmestuga i Kalls skola."
    assert str(msg["en"]).endswith("Municipality: Värmestuga i Kalls skola.")
    assert rig.pub.pending == {}


def test_policy_off(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"default": "auto", "municipalities": {"2321": "off"}})
    rig.feed(ACTUAL)
    assert rig.broker.sent == [] and rig.pub.pending == {}


def test_polygon_and_county(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"default": "auto"})
    poly = parse_cap(fixture("cap-polygon-kall.xml"))
    news, _ = parse_krisinformation(fixture("krisinformation-news.json")).alerts
    rig.feed(poly, news)
    assert list(rig.out()) == [topic("are-kall", poly)]  # Severe/Expected: straight out
    # news for the whole county is information: it waits, for all three sites
    assert rig.pub.pending[news.key].sites == ("are-kall", "harjedalen-hede", "krokom-follinge")


def test_panel_text_never_edits_only_leaves_out() -> None:
    assert ACTUAL.sv is not None
    text = panel_text(ACTUAL.sv)
    assert text is not None and len(text) <= crisis.MAX_TEXT
    long = replace(ACTUAL.sv, description="x " * 300)
    assert panel_text(long) == panel_text(replace(ACTUAL.sv, description=""))
    huge = replace(ACTUAL.sv, headline="Ord " * 100)
    t = panel_text(huge)
    assert t is not None and len(t) <= crisis.MAX_TEXT and t.endswith("Ord…")


def test_from_a_served_feed_to_kalls_topic(tmp_path: Path) -> None:
    """The whole way: a feed on 127.0.0.1 serves the Atom feed (a polygon alert inline, the VMA
    linked); the poller fetches, the reducer decides, the publisher sends to Kall only. A
    second poll (304) sends nothing."""
    from test_feeds_poller import feed_server

    rig = Rig(tmp_path, {"default": "auto"})

    async def go() -> None:
        async with feed_server() as srv:
            p = FeedPoller(FeedConfig(name="vma", kind="cap", url=srv.url("atom-inline.xml")))
            for _ in range(2):
                r = await p.poll_once()
                assert r.ok
                rig.feed(*r.alerts)
            await p.close()

    asyncio.run(asyncio.wait_for(go(), 30))
    poly = parse_cap(fixture("cap-polygon-kall.xml"))
    assert sorted(rig.out()) == sorted([topic("are-kall"), topic("are-kall", poly)])
    assert len(rig.broker.sent) == 2


def test_after_a_restart_an_approved_alert_stays_and_its_cancel_withdraws_it(
        tmp_path: Path) -> None:
    """Should the feeds' saved state be lost, the publisher's memory is empty after a restart;
    the store still says what is out. The first poll must neither ask again for what a
    coordinator approved nor resend it (the local note stays), and its Update and Cancel must
    reach the panel. (With the saved state, test_feeds_service.py.)"""
    rig = Rig(tmp_path, {"default": "approve"})
    rig.feed(ACTUAL)
    rig.pub.approve(ACTUAL.key, "anna", "Värmestuga i skolan.")
    shown = rig.out()[topic("are-kall")]
    assert shown is not None and str(shown["sv"]).endswith("Kommunen: Värmestuga i skolan.")
    sent = len(rig.broker.sent)
    # restart: a new publisher and reducer on the same store and broker
    rig.pub = FeedPublisher(rig.sender, rig.store, demo_sites(),
                            load_policy({"default": "approve"}), lambda: rig.now)
    rig.state = AlertSet()
    rig.feed(ACTUAL)
    assert rig.pub.pending == {}  # approved once is approved
    assert len(rig.broker.sent) == sent  # nothing resent: the note is still on the panel
    rig.now += 3600
    rig.feed(UPDATE)  # the authority's update replaces it in place
    upd = rig.out()[topic("are-kall")]
    assert upd is not None and str(upd["sv"]).startswith("VMA: Elavbrottet i Åre kommun")
    rig.pub = FeedPublisher(rig.sender, rig.store, demo_sites(),
                            load_policy({"default": "approve"}), lambda: rig.now)
    rig.state = AlertSet()
    rig.feed(UPDATE)  # known by its reference to the message out
    rig.feed(CANCEL)
    assert rig.out()[topic("are-kall")] is None
