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

The state outlives the process (`save()` after every poll and approval, read back when a
`Feeds` is made; gateway/store/feeds.py): the alerts held, what each is out as, what awaits
approval, the feeds' health. So a restarted gateway, or another worker that takes the feeds
over, knows what the panels show: an approved alert is not asked for again, and its Update
replaces it and its Cancel withdraws it. Every worker's `/feeds` page reads the same state
(`view.feeds_page`). A coordinator's approval is a request in the store, carried out by the
process that runs the feeds (`process_approvals`, at once when that is the worker the
coordinator reached, else within `APPROVAL_POLL_S`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import aiohttp

from .. import crisis
from ..store import AuditStore, CrisisStore, FeedStateStore
from .model import OfficialAlert
from .policy import PolicyConfig
from .poller import FeedConfig, FeedHealth, FeedPoller, PollResult
from .publish import FeedPublisher, NoteTooLong, Pending, Site
from .reduce import IGNORED, AlertSet, Change, apply_all

log = logging.getLogger("gateway.feeds")

# Reducer outcomes that are what polling normally looks like, not bad input.
QUIET = ("repeat", "stale", "withdrawn")
APPROVAL_POLL_S = 1.0  # how often the feeds' process looks for approvals made on other workers
STATE_VERSION = 1


class FeedsStore(CrisisStore, FeedStateStore, AuditStore, Protocol):
    """What the feeds keep: crisis messages, their own state, the audit of approvals."""


class Feeds:
    """`start()` in the gateway's loop, `await stop()`; `health()` and `stats()` at any time."""

    def __init__(self, configs: Sequence[FeedConfig], policy: PolicyConfig,
                 sender: crisis.CrisisSender, store: FeedsStore, sites: Mapping[str, Site],
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
        self.store = store
        self.restore()

    @property
    def running(self) -> bool:
        """Polling (started and not stopped): on the leading gateway worker only."""
        return bool(self._tasks)

    def start(self) -> None:
        if not self.pollers:
            return
        self.restore()  # what the process that ran the feeds before saved last
        self._session = aiohttp.ClientSession()
        for p in self.pollers:
            p.use_session(self._session)
            self._tasks.append(asyncio.create_task(self._run(p), name=f"feed:{p.cfg.name}"))
        self._tasks.append(asyncio.create_task(self._approvals(), name="feed:approvals"))

    async def _approvals(self) -> None:
        while not self._stop.is_set():
            try:
                self.process_approvals()
            except Exception:  # noqa: BLE001 - the store may be away for a moment
                log.exception("feeds: approvals not handled")
            try:
                await asyncio.wait_for(self._stop.wait(), APPROVAL_POLL_S)
            except TimeoutError:
                pass

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
            self.save()
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
        try:
            return self.publisher.approve(key, actor, note)
        finally:
            self.save()

    def process_approvals(self) -> int:
        """Carry out the approvals coordinators asked for (on any worker), oldest first; each
        gets its outcome in the store and, when done, an audit entry. Returns how many."""
        reqs = self.store.open_feed_approvals()
        for r in reqs:
            now = self.clock()
            key, actor, note = str(r["key"]), str(r["actor"]), r["note"]
            p = self.publisher.pending.get(key)
            if p is None:
                self.store.finish_feed_approval(r["id"], "gone", now)
                continue
            try:
                sites = self.publisher.approve(key, actor, note)
            except NoteTooLong as e:
                self.store.finish_feed_approval(r["id"], f"too_long:{e.room}", now)
                continue
            detail = f"sites={','.join(sites)}" + (f" note={note}" if note else "")
            self.store.add_audit(now, actor, "feed_approved", p.alert.id, detail)
            self.store.finish_feed_approval(r["id"], "done", now)
        if reqs:
            self.save()
        return len(reqs)

    # --- the state in the store ----------------------------------------------------------

    def state_json(self) -> dict[str, Any]:
        now = self.clock()
        pub = self.publisher
        return {"version": STATE_VERSION, "set": self.state.as_json(),
                "published": dict(pub.published),
                "pending": {k: list(p.sites) for k, p in pub.pending.items()},
                "applies": {a.key: sorted(pub.decisions(a)) for a in self.alerts(now)},
                "health": [asdict(h) for h in self.health(now)]}

    def save(self) -> None:
        try:
            self.store.save_feed_state(self.state_json(), self.clock())
        except Exception:  # noqa: BLE001 - the next poll saves again
            log.exception("feeds: state not saved")

    def restore(self) -> None:
        """Start from the state the last process saved (nothing saved: from scratch)."""
        try:
            got = self.store.feed_state()
        except Exception:  # noqa: BLE001 - a store without the state: start from scratch
            log.exception("feeds: saved state not read")
            return
        if got is None or got[0].get("version") != STATE_VERSION:
            return
        doc = got[0]
        self.state = AlertSet.from_json(doc.get("set", {}))
        self.publisher.published.clear()
        self.publisher.pending.clear()
        self.publisher.published.update(doc.get("published", {}))
        for key, sites in doc.get("pending", {}).items():
            if key in self.state.alerts:
                self.publisher.pending[key] = Pending(self.state.alerts[key], tuple(sites))

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
