"""What the coordinators' feeds page shows (`/feeds`): every official alert the gateway holds,
real and test (marked), the feeds' health, and the alerts awaiting approval. Plain data for a
template: no HTML, no store access; times are epoch seconds for the page to format.

It is built from the feeds' saved state (`Feeds.state_json`, kept in the store), not from the
running feeds, so every gateway worker shows the same page, whichever one runs the feeds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..texts import Text
from .model import OfficialAlert
from .poller import FeedHealth
from .publish import crisis_id, note_room
from .reduce import AlertSet


@dataclass(frozen=True)
class AlertRow:
    key: str
    real: bool  # status Actual: the only ones that can reach a panel
    status: str  # Actual, Test, Exercise, System, Draft
    msg_type: str
    level: str  # info | warning | severe
    headline: Text  # Swedish first; the other language where the source gave none
    origin: str
    feed: str
    sent: float
    expires: float | None
    areas: str
    sites: tuple[str, ...]  # the sites it applies to
    shown: tuple[str, ...]  # ... and those whose panel and signage have it
    awaiting: tuple[str, ...]  # ... and those waiting for a coordinator's approval
    note_room: int  # characters a local note may have beside the official text
    web: str = ""


@dataclass(frozen=True)
class FeedRow:
    name: str
    url: str
    ok: bool
    stale: bool
    failures: int
    last_error: str | None
    last_success: float | None
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedsPage:
    alerts: list[AlertRow]
    feeds: list[FeedRow]
    saved: float | None = None  # when the feeds' process last saved what this shows

    @property
    def pending(self) -> list[AlertRow]:
        return [a for a in self.alerts if a.awaiting]


def _headline(a: OfficialAlert) -> Text:
    sv = a.sv.headline or a.sv.event if a.sv else ""
    en = a.en.headline or a.en.event if a.en else ""
    return Text(sv or en, en if sv else "")


def alert_row(a: OfficialAlert, state: Mapping[str, Any], shown: tuple[str, ...]) -> AlertRow:
    awaiting = state.get("pending", {}).get(a.key) or ()
    return AlertRow(
        key=a.key, real=a.actual, status=a.status, msg_type=a.msg_type, level=a.level,
        headline=_headline(a), origin=a.origin, feed=a.feed, sent=a.sent, expires=a.expires,
        areas=", ".join(x.description for x in a.areas if x.description),
        sites=tuple(state.get("applies", {}).get(a.key) or ()), shown=shown,
        awaiting=tuple(awaiting), note_room=note_room(a), web=a.web)


def feeds_page(state: Mapping[str, Any], saved: float, now: float,
               shown: Mapping[str, tuple[str, ...]]) -> FeedsPage:
    """`state`: the feeds' saved state (`Feeds.state_json`), saved at `saved`; `shown`: crisis
    message id -> the sites it is out at (the store's crisis_sites)."""
    published = state.get("published", {})
    rows = [alert_row(a, state, shown.get(published.get(a.key) or crisis_id(a.key), ()))
            for a in AlertSet.from_json(state.get("set", {})).active(now)]
    health = [FeedHealth(**h) for h in state.get("health", ())]
    feeds = [FeedRow(name=h.name, url=h.url, stale=h.stale,
                     ok=h.last_success is not None and not h.failing and not h.stale,
                     failures=h.consecutive_failures, last_error=h.last_error,
                     last_success=h.last_success, counts=h.counts)
             for h in health]
    return FeedsPage(alerts=rows, feeds=feeds, saved=saved)
