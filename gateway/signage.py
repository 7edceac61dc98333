"""The public screen at a shop: what it shows, and how it learns of a change.

`signage_view(store, site, now)` is everything the screen needs as one JSON object (also served
at `/api/signage/<site>`): shop open, power source, fuel for sale per product, hours of backup
left, the active crisis messages, when the site was last heard and whether that is stale (the
site's data is stale, or its link is lost: `gateway.model.site_status`, docs/mqtt.md "Site
status", the same judgement as the dashboard and the alert rules). Stale values are sent with
`stale: true` and shown greyed with their age, never as a current "all clear" (docs/alerts.md, A6).

`SiteBus` wakes the server-sent-event streams when the ingest files something for a site or a
crisis message is sent or withdrawn; each stream also re-checks every `RECHECK_S` so a site that
goes silent turns stale on the screen without any message arriving.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Protocol

from .store import CrisisStore, TelemetryStore


class SignageStore(TelemetryStore, CrisisStore, Protocol):
    """What the signage reads: the site's summary and latest state, and its crisis messages."""


RECHECK_S = 2.0
KEEPALIVE_S = 15.0


class SiteBus:
    """One version counter per site; waiters are woken when it moves. Used on the loop only."""

    def __init__(self) -> None:
        self._cond: dict[str, asyncio.Condition] = {}
        self.version: dict[str, int] = defaultdict(int)
        self.closed = False

    async def close(self) -> None:
        """The web side is shutting down: every stream ends now, not at its next write."""
        self.closed = True
        for c in list(self._cond.values()):
            await self._wake(c)

    def _c(self, site: str) -> asyncio.Condition:
        c = self._cond.get(site)
        if c is None:
            c = self._cond[site] = asyncio.Condition()
        return c

    def notify(self, site: str) -> None:
        self.version[site] += 1
        c = self._cond.get(site)
        if c is not None:
            asyncio.ensure_future(self._wake(c))

    @staticmethod
    async def _wake(c: asyncio.Condition) -> None:
        async with c:
            c.notify_all()

    async def wait(self, site: str, seen: int, timeout: float) -> int:
        """Return the site's version once it differs from `seen`, or after `timeout`."""
        c = self._c(site)
        async with c:
            try:
                await asyncio.wait_for(
                    c.wait_for(lambda: self.closed or self.version[site] != seen), timeout)
            except TimeoutError:
                pass
        return self.version[site]


def active_messages(store: CrisisStore, site: str, now: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    delivery = store.crisis_delivery(site=site)
    messages = store.crisis_messages_by_id(d["crisis_id"] for d in delivery)  # one query
    for d in delivery:
        m = messages.get(d["crisis_id"])
        if m is None or m.get("withdrawn"):
            continue
        if m.get("expires") is not None and m["expires"] <= now:
            continue
        out.append({k: m.get(k) for k in ("id", "sv", "en", "severity", "from", "ts",
                                           "expires")})
    rank = {"severe": 2, "warning": 1, "info": 0}
    out.sort(key=lambda m: (rank.get(m["severity"], 0), m["ts"]), reverse=True)
    return out


def signage_view(store: SignageStore, site: str, now: float) -> dict[str, Any] | None:
    summary = store.site_overview(site, now)
    if summary is None:
        return None
    latest = store.latest(site) or {}
    state = latest.get("state") or {}
    cap = state.get("capability") or {}
    return {
        "site": {"id": summary.id, "name": summary.name, "municipality": summary.municipality},
        "now": now,
        "has_data": summary.has_data,
        "updated_ts": summary.updated_ts,
        "age_s": summary.age_s,
        "stale": summary.stale or summary.lost,
        "lost": summary.lost,
        "stale_after_s": summary.stale_after_s,
        "mode": summary.mode,
        "shop_open": cap.get("shop_open"),
        "info_point": cap.get("info_point"),
        "power": cap.get("power"),
        "hours_left": cap.get("hours_left"),
        "fuel_for_sale": cap.get("fuel_for_sale") or {},
        "messages": active_messages(store, site, now),
    }


def comparable(view: dict[str, Any]) -> dict[str, Any]:
    """The view without what changes every second by itself (the screen ticks the age)."""
    return {k: v for k, v in view.items() if k not in ("now", "age_s")}
