"""The feeds as the running gateway owns them: one poller per `[[feeds]]`, the alert set and the
publisher, as asyncio tasks in the gateway's loop (gateway/service.py starts and stops them).

Each poll's messages go through the reducer (reduce.apply_all, which also expires what has run
out) and the visible changes to the publisher (publish.py), which applies the municipality's
policy per site. A feed that fails never stops the gateway: the poller counts and logs its
failures (poller.py) and keeps trying; an exception while handling a poll is logged and the next
poll comes as usual.

Bad input is logged once with its reason and counted per reason:
- refused by the poller (broken XML, wrong namespace, too large, a hang, no area, ...:
  parse.REASONS), in the poller's own counts;
- changing nothing in the reducer (a Cancel for something unknown, a stale or repeated
  message: reduce.IGNORED), counted here. A repeat is the normal case of polling and neither
  logged nor counted as bad.
`stats()` gives both per feed and in total; it is part of `/api/stats` under "feeds".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from .. import crisis
from ..store import CrisisStore
from .model import OfficialAlert
from .policy import PolicyConfig
from .poller import FeedConfig, FeedHealth, FeedPoller, PollResult
from .publish import FeedPublisher, Site
from .reduce import IGNORED, AlertSet, Change, apply_all

log = logging.getLogger("gateway.feeds")

# Reducer outcomes that are what polling normally looks like, not bad input.
QUIET = ("repeat", "stale", "withdrawn")


class Feeds:
    """`start()` in the gateway's loop, `await stop()`; `health()` and `stats()` at any time."""

    def __init__(self, configs: Sequence[FeedConfig], policy: PolicyConfig,
                 sender: crisis.CrisisSender, store: CrisisStore, sites: Mapping[str, Site],
                 clock: Callable[[], float] = time.time,
                 on_health: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.pollers = [FeedPoller(c, clock=clock) for c in configs]
        self.publisher = FeedPublisher(sender, store, sites, policy, clock)
        self.state = AlertSet()
        self.ignored: dict[str, Counter[str]] = {c.name: Counter() for c in configs}
        self._told: set[tuple[str, str, str]] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.on_health = on_health  # after every poll: the alert engine looks at health()
        self._missed = False  # something was to be sent while the broker was not connected

    @property
    def running(self) -> bool:
        """Polling (started and not stopped): on the leading gateway worker only."""
        return bool(self._tasks)

    def start(self) -> None:
        if not self.pollers:
            return
        self._session = aiohttp.ClientSession()
        for p in self.pollers:
            p.use_session(self._session)
            self._tasks.append(asyncio.create_task(self._run(p), name=f"feed:{p.cfg.name}"))

    async def _run(self, p: FeedPoller) -> None:
        async def handle(result: PollResult) -> None:
            self.handle(p.cfg.name, result)

        try:
            await p.run(handle, self._stop)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one feed: never the gateway
            log.exception("feed %s: poller stopped", p.cfg.name)

    def _connected(self) -> bool:
        return self.publisher.sender.connected()

    def handle(self, feed: str, result: PollResult) -> None:
        """One poll's result: reduce, publish, count what changed nothing."""
        try:
            if not self._connected():
                self._missed = True
            elif self._missed:
                self._missed = False
                self.resend()
            if result.ok and not result.not_modified:
                now = self.clock()
                out = apply_all(self.state, result.alerts, now)
                self.state = out.state
                for reason, msg in out.ignored:
                    self._ignored(feed, reason, msg)
                self.publisher.handle(out.changes)
            elif self.state.alerts:  # expiry goes on while a feed is quiet or failing
                out = apply_all(self.state, [], self.clock())
                self.state = out.state
                self.publisher.handle(out.changes)
        finally:
            if self.on_health is not None:
                self.on_health()

    def resend(self) -> None:
        """Publish the real alerts in force that should be out but are not (the broker was
        not connected when they came): the reducer has them, so polling alone would not."""
        pub = self.publisher
        for a in self.state.public(self.clock()):
            if a.key in pub.published or a.key in pub.pending:
                continue
            if "publish" in pub.decisions(a).values():
                pub.handle([Change("added", a)])

    def _ignored(self, feed: str, reason: str, msg: OfficialAlert) -> None:
        if reason in QUIET:
            return
        key = (feed, reason, msg.id)
        if key in self._told:
            return
        if len(self._told) > 10000:
            self._told.clear()
        self._told.add(key)
        self.ignored[feed][reason] += 1
        log.warning("feed %s: %s %s changed nothing: %s", feed, msg.msg_type, msg.id,
                    IGNORED.get(reason, reason))

    async def stop(self) -> None:
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def approve(self, key: str, actor: str, note: str | None = None) -> list[str]:
        """A coordinator approves a pending alert (publish.FeedPublisher.approve: NoteTooLong
        when the note does not fit beside the official text)."""
        return self.publisher.approve(key, actor, note)

    # --- what the pages, the alert rules and /api/stats read -----------------------------

    def health(self, now: float | None = None) -> list[FeedHealth]:
        return [p.health(now) for p in self.pollers]

    def alerts(self, now: float | None = None) -> list[OfficialAlert]:
        """Every alert in force, real and test (coordinators see both)."""
        return self.state.active(self.clock() if now is None else now)

    def stats(self) -> dict[str, Any]:
        per: dict[str, Any] = {}
        total: Counter[str] = Counter()
        for p in self.pollers:
            h = p.health()
            counts = {**h.counts, **self.ignored[p.cfg.name]}
            total.update(counts)
            per[p.cfg.name] = {"counts": counts, "failures": h.consecutive_failures,
                               "last_error": h.last_error, "stale": h.stale,
                               "last_success": h.last_success}
        return {"feeds": per, "counts": dict(total), "alerts": len(self.state.alerts),
                "pending": len(self.publisher.pending),
                "published": dict(self.publisher.counts)}
