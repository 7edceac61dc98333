"""The gateway's CAP feed out names the origin of the official alerts it republishes
(docs/feeds.md, "The CAP feed out"): an alert shown on a site's panel is an entry of /cap.atom,
a CAP 1.2 message of this gateway whose source, senderName and note name the issuer and the
original message, with the official texts whole. Only what is shown is there: no Test, nothing
withdrawn. On SQLite and on PostgreSQL (the store keeps what the feed says)."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from feeds_fixtures import NOW, demo_sites, fixture
from gw_samples import SITES, present
from pg_cluster import (  # noqa: F401 - fixtures
    backend_fixture,
    pg_cluster_fixture,
    store_fixture,
)
from test_auth import FakeBroker
from test_notify_cap import ATOM, CAP, cap_schema

from gateway import crisis
from gateway.feeds import AlertSet, apply_all, load_policy, parse_cap
from gateway.feeds.publish import FeedPublisher, crisis_id
from gateway.store import Store
from gateway.web import make_app

ACTUAL = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
TEST = parse_cap(fixture("vma-are-test.xml"), feed="vma")
UPDATE = parse_cap(fixture("vma-are-update.xml"), feed="vma")
CANCEL = parse_cap(fixture("vma-are-cancel.xml"), feed="vma")
SENDER = "sot-gateway.jamtland"
CID = crisis_id(ACTUAL.key)


class Rig:
    def __init__(self, store: Store, policy: dict[str, object]) -> None:
        self.now = NOW
        self.store = store
        store.upsert_sites(SITES)
        self.broker = FakeBroker()
        self.sender = crisis.CrisisSender(store, self.broker, lambda: self.now)
        self.pub = FeedPublisher(self.sender, store, demo_sites(), load_policy(policy),
                                 lambda: self.now)
        self.state = AlertSet()

    def feed(self, *msgs: Any) -> None:
        b = apply_all(self.state, list(msgs), self.now)
        self.state = b.state
        self.pub.handle(b.changes)

    def fetch(self, *paths: str) -> dict[str, tuple[int, str]]:
        """GET each path from the gateway's web app on 127.0.0.1: path -> (status, body)."""

        async def main() -> dict[str, tuple[int, str]]:
            app = make_app(self.store, lambda: self.now, cap_sender=SENDER,
                           base_url="http://127.0.0.1:8080/")
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            out = {}
            try:
                async with aiohttp.ClientSession() as s:
                    for p in paths:
                        async with s.get(base + p) as r:
                            out[p] = (r.status, await r.text())
            finally:
                await runner.cleanup()
            return out

        return asyncio.run(main())

    def official_entries(self) -> list[ET.Element]:
        """The CAP messages in /cap.atom that republish an official alert."""
        status, feed = self.fetch("/cap.atom")["/cap.atom"]
        assert status == 200
        alerts = [present(e.find(f"{ATOM}content/{CAP}alert"))
                  for e in ET.fromstring(feed).iter(f"{ATOM}entry")]
        return [a for a in alerts if ".official." in (a.findtext(f"{CAP}identifier") or "")]


@pytest.fixture
def auto(store: Store) -> Iterator[Rig]:
    yield Rig(store, {"default": "approve", "municipalities": {"2321": "auto"}})


def test_a_vma_on_a_panel_is_in_the_cap_feed_naming_its_issuer(auto: Rig) -> None:
    schema = cap_schema()
    auto.feed(ACTUAL)
    [doc] = auto.official_entries()
    schema.validate(ET.tostring(doc, encoding="unicode"))
    assert doc.findtext(f"{CAP}sender") == SENDER
    assert doc.findtext(f"{CAP}identifier") == f"{SENDER}.official.{CID}"
    assert doc.findtext(f"{CAP}status") == "Actual" and doc.findtext(f"{CAP}msgType") == "Alert"
    # the origin: the issuer, the feed it came through, and the original message
    assert doc.findtext(f"{CAP}source") == "Räddningstjänsten Jämtland (feed:vma)"
    original = "vma@cap.example.se,TEST-VMA-2026-1205-001,2026-12-05T08:00:00+01:00"
    note = present(doc.findtext(f"{CAP}note"))
    assert note.startswith("Officiellt meddelande från Räddningstjänsten Jämtland")
    assert original in note
    assert present(doc.findtext(f"{CAP}references")).split() == [original]
    infos = doc.findall(f"{CAP}info")
    assert [i.findtext(f"{CAP}language") for i in infos] == ["sv-SE", "en-US"]
    sv, en = infos
    assert [c.text for c in sv.findall(f"{CAP}category")] == ["Met", "Infra"]
    assert sv.findtext(f"{CAP}senderName") == "Räddningstjänsten Jämtland"
    assert sv.findtext(f"{CAP}severity") == "Severe" and sv.findtext(f"{CAP}urgency") == "Immediate"
    assert sv.findtext(f"{CAP}expires") == "2026-12-05T20:00:00+01:00"
    # the official text whole (the panel shows what fits; the feed never cuts it)
    assert ACTUAL.sv is not None and ACTUAL.en is not None
    assert sv.findtext(f"{CAP}description") == ACTUAL.sv.description
    assert sv.findtext(f"{CAP}instruction") == ACTUAL.sv.instruction
    assert en.findtext(f"{CAP}headline") == ACTUAL.en.headline
    # where it is shown: Kall, not the other sites
    assert [a.findtext(f"{CAP}areaDesc") for a in sv.findall(f"{CAP}area")] == ["Kall, Åre kommun"]
    assert [a.findtext(f"{CAP}areaDesc") for a in en.findall(f"{CAP}area")] == [
        "Kall, Åre municipality"]
    # the entry's link is the single document, the same message
    status, feed = auto.fetch("/cap.atom")["/cap.atom"]
    href = next(x.get("href") for e in ET.fromstring(feed).iter(f"{ATOM}entry")
                for x in e.iter(f"{ATOM}link") if ".official." not in (x.get("href") or "")
                and "/cap/official/" in (x.get("href") or ""))
    assert href == f"http://127.0.0.1:8080/cap/official/{CID}.xml"
    status, one = auto.fetch(urlsplit(href).path)[urlsplit(href).path]
    assert status == 200
    schema.validate(one)
    assert ET.fromstring(one).findtext(f"{CAP}identifier") == doc.findtext(f"{CAP}identifier")


def test_an_update_is_a_new_message_and_a_cancel_takes_it_out(auto: Rig) -> None:
    schema = cap_schema()
    auto.feed(ACTUAL)
    [first] = auto.official_entries()
    auto.now += 3600
    auto.feed(UPDATE)
    [doc] = auto.official_entries()
    schema.validate(ET.tostring(doc, encoding="unicode"))
    assert doc.findtext(f"{CAP}identifier") == f"{SENDER}.official.{CID}.2"
    assert doc.findtext(f"{CAP}msgType") == "Update"
    refs = present(doc.findtext(f"{CAP}references")).split()
    # the authority's update, then this gateway's earlier message of the same alert
    assert refs[0].startswith(f"vma@cap.example.se,{UPDATE.identifier},")
    assert refs[1:] == [f"{SENDER},{first.findtext(f'{CAP}identifier')},"
                        f"{first.findtext(f'{CAP}sent')}"]
    assert UPDATE.sv is not None
    assert doc.findtext(f"{CAP}info/{CAP}headline") == UPDATE.sv.headline
    # unchanged: the same message again, no new version
    assert [d.findtext(f"{CAP}identifier") for d in auto.official_entries()] == [
        f"{SENDER}.official.{CID}.2"]
    auto.now += 3600
    auto.feed(CANCEL)
    assert auto.official_entries() == []
    status, _ = auto.fetch(f"/cap/official/{CID}.xml")[f"/cap/official/{CID}.xml"]
    assert status == 404


def test_a_test_message_or_one_awaiting_approval_is_not_in_the_feed(store: Store) -> None:
    rig = Rig(store, {"default": "approve"})
    rig.feed(TEST, ACTUAL)
    assert rig.official_entries() == []  # Test never shown; Actual waits for a coordinator
    rig.pub.approve(ACTUAL.key, "anna", "Värmestuga i Kalls skola.")
    [doc] = rig.official_entries()
    note = present(doc.findtext(f"{CAP}note"))
    assert note.endswith("Kommunens notering / municipality's note: Värmestuga i Kalls skola.")
    assert "anna" not in ET.tostring(doc, encoding="unicode")  # account names stay private


def test_hostile_official_text_keeps_the_feed_valid(auto: Rig) -> None:
    from dataclasses import replace

    assert ACTUAL.sv is not None
    evil = replace(ACTUAL, origin="<b>Ond</b> & \x07 co", sv=replace(
        ACTUAL.sv, description="]]></description><x>", instruction="a\x1bb"))
    auto.feed(evil)
    [doc] = auto.official_entries()
    cap_schema().validate(ET.tostring(doc, encoding="unicode"))
    assert present(doc.findtext(f"{CAP}source")).startswith("<b>Ond</b> &")


def test_the_store_lists_only_what_is_shown(store: Store) -> None:
    store.upsert_sites(SITES)
    store.save_crisis({"id": "feed-1", "ts": 1, "sv": "x"}, "feed:vma", NOW)
    store.save_official("feed-1", {"origin": "SMHI", "texts": []}, NOW)
    assert store.official_shown() == []  # saved, but on no site
    store.record_crisis_sent("are-kall", "feed-1", NOW)
    store.record_crisis_sent("harjedalen-hede", "feed-1", NOW)
    [o] = store.official_shown()
    assert o["crisis_id"] == "feed-1" and o["alert"] == {"origin": "SMHI", "texts": []}
    assert [s["id"] for s in o["sites"]] == ["are-kall", "harjedalen-hede"]
    assert json.dumps(o)  # plain data
    assert store.official_cap_versions("feed-1", "a", NOW) == [(1, NOW)]
    assert store.official_cap_versions("feed-1", "a", NOW + 5) == [(1, NOW)]
    assert store.official_cap_versions("feed-1", "b", NOW + 9) == [(1, NOW), (2, NOW + 9)]
    store.mark_crisis_withdrawn("feed-1", NOW + 10)
    assert store.official_shown() == []
