"""The alert to coordinators when a feed of official alerts fails or goes stale (rule kind
`feed_failed`, scope "gateway"): one alert per feed, not tied to a site, told to the contacts of
municipality "*"; it clears when the feed works again; site rounds never touch it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from alert_rig import Rig

from gateway.alerts.kinds import GATEWAY_MUNICIPALITY
from gateway.alerts.rules import KINDS
from gateway.feeds.poller import FeedHealth


def health(name: str = "vma", **over: object) -> FeedHealth:
    h = FeedHealth(name=name, url="https://example.org/vma.xml", last_success=None,
                   last_attempt=None, consecutive_failures=0, last_error=None, stale=False,
                   counts={})
    return replace(h, **over)  # type: ignore[arg-type]


class FeedRig(Rig):
    """The alert rig with the feeds' health set by the test."""

    feeds: list[FeedHealth]


@pytest.fixture
def rig(tmp_path: Path):
    r = FeedRig(tmp_path / "sot.sqlite3")
    r.feeds = [health(last_success=r.clock.t, last_attempt=r.clock.t)]
    r.engine.feeds = lambda now: r.feeds
    yield r
    r.close()


def test_a_failing_feed_alerts_the_coordinators_once_and_clears(rig: FeedRig) -> None:
    assert KINDS["feed_failed"].scope == "gateway"
    rig.evaluate()
    assert not [k for k in rig.open_alerts() if k.startswith("feed_failed")]
    ok_at = rig.clock.t
    rig.feeds = [health(last_success=ok_at, last_attempt=rig.clock.t, consecutive_failures=2,
                        last_error="timeout")]
    rig.advance(30)
    assert not [k for k in rig.open_alerts() if k.startswith("feed_failed")]  # 2 < failures 3
    rig.feeds = [health(last_success=ok_at, last_attempt=rig.clock.t, consecutive_failures=3,
                        last_error="network")]
    rig.advance(30)
    a = rig.open_alerts()["feed_failed:gateway:vma"]
    assert a.status == "firing" and a.site is None and a.municipality == GATEWAY_MUNICIPALITY
    assert "vma" in a.sv and "servern går inte att nå" in a.sv
    assert "the server cannot be reached" in a.en
    told = rig.told("feed_failed:gateway:vma", "firing")
    assert len(told) == 1
    rig.advance(120)
    assert len(rig.told("feed_failed:gateway:vma", "firing")) == 1  # told once, not per round
    # A round for one site (a message came from it) leaves the gateway's alert as it is.
    rig.engine.evaluate_sites(["are-kall"])
    assert "feed_failed:gateway:vma" in rig.firing()
    rig.feeds = [health(last_success=rig.clock.t, last_attempt=rig.clock.t)]
    rig.advance(90)
    assert "feed_failed:gateway:vma" not in rig.open_alerts()
    assert rig.told("feed_failed:gateway:vma", "recovery")


def test_the_gateways_own_alert_has_no_place_and_stays_out_of_the_cap_feed(rig: FeedRig) -> None:
    from gateway.alerts.cap import feed_alerts

    rig.feeds = [health(stale=True, last_attempt=rig.clock.t)]
    rig.advance(30)
    a = rig.open_alerts()["feed_failed:gateway:vma"]
    assert a.data["lat"] is None and a.data["lon"] is None  # not at 0° N 0° E
    assert feed_alerts([a]) == []


def test_a_stale_feed_alerts_and_a_removed_feed_clears(rig: FeedRig) -> None:
    rig.feeds = [health(stale=True, last_attempt=rig.clock.t), health("kris")]
    rig.advance(30)
    a = rig.open_alerts()["feed_failed:gateway:vma"]
    assert "ingen lyckad hämtning på länge" in a.sv and "aldrig" in a.sv
    assert "feed_failed:gateway:kris" not in rig.open_alerts()
    rig.feeds = [health("kris")]  # the vma feed taken out of the configuration
    rig.advance(90)
    assert "feed_failed:gateway:vma" not in rig.open_alerts()


def test_without_a_feeds_source_the_rule_knows_nothing(tmp_path: Path) -> None:
    r = Rig(tmp_path / "sot.sqlite3")
    try:
        r.advance(120)
        assert not [k for k in r.open_alerts() if k.startswith("feed_failed")]
    finally:
        r.close()
