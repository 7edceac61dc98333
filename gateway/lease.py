"""Several gateway workers, one leader: the lease that says which worker runs the alert engine,
the notifier and the feed poller, and the relay that tells the leader which sites the other
workers filed messages for (docs/deploy.md, "Several workers").

`Lease` runs in the worker's asyncio loop. Every `renew_s` (a third of `ttl_s`) it renews the
lease it holds, or tries to take it when it holds none (the store's `acquire_lease`, one
conditional write: gateway/store/lease.py). Taking it calls `on_gain(epoch)` (the service starts
the engine and the feed poller); losing it calls `on_loss(why)` (they stop). The lease is lost
when a renewal is refused (another worker took it: this one was paused or cut off past the
expiry) or when no renewal succeeded for `ttl_s` minus a margin by this process's own monotonic
clock (the store is unreachable): the worker stops leading before another may take over, so two
engines never run on purpose. `valid()` says whether the lease is still good right now; the
engine asks it before each round and the notifier's claim is fenced by the epoch in the store,
so a holder that was paused does nothing more once it wakes up, even before its loop runs.

A renewal that starts late (the worker's event loop was busy: a long burst, a starved CPU) or
whose store call is slow is logged, at most once a minute with a count, and counted in
`stats()`: a lead that moves can then be told apart as the holder's own stall or a dead holder.

A holder killed outright (kill -9, power cut) stops renewing; another worker takes over once
the expiry passes: within `ttl_s` plus one renewal period (6 s + 2 s with the defaults). A clean
stop releases the lease, and another worker takes over at its next try (within `renew_s`).

`MarkRelay`: a message stored by a worker that is not the leader must still make the leader's
engine look at that site at once (not only at its next tick). On PostgreSQL every worker sends
the sites it filed, right after the commit, with `pg_notify` on the channel `CHANNEL`; the
leader listens on a connection of its own (a thread) and marks them in its engine. On SQLite
(one file, normally one worker) nothing is relayed: other workers' messages are evaluated at the
engine's tick (`[alerts] tick_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .store import LEADER, LeaseStore

log = logging.getLogger(__name__)

CHANNEL = "sot_marks"
NOTIFY_MAX = 7000  # bytes of site ids per pg_notify payload (PostgreSQL's limit is 8000)
MARGIN = 0.25  # of a renewal period: the holder gives up this much before the store's expiry
SLOW = 0.5  # of a renewal period: a renewal this late, or a store call this long, is logged
SLOW_LOG_S = 60.0  # at most one such line a minute


class Lease:
    """`await start()` (tries once at once), `valid()`, `leading`, `await stop()` (releases)."""

    def __init__(self, store: LeaseStore, holder: str, *, ttl_s: float = 6.0,
                 clock: Callable[[], float] = time.time,
                 on_gain: Callable[[int], Awaitable[None]] | None = None,
                 on_loss: Callable[[str], Awaitable[None]] | None = None,
                 name: str = LEADER) -> None:
        self.store = store
        self.holder = holder
        self.name = name
        self.ttl_s = ttl_s
        self.renew_s = ttl_s / 3
        self.clock = clock
        self.on_gain = on_gain
        self.on_loss = on_loss
        self.epoch: int | None = None
        self.gained = 0  # times this worker took the lease
        self.gained_at: float | None = None
        self._good_until = -math.inf  # monotonic
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # the store failed on the last try (logged once)
        self.slow = 0  # renewals that started late or whose store call was slow
        self.worst_delay_s = 0.0  # the longest such delay seen
        self._slow_logged_at = -math.inf

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    def valid(self) -> bool:
        """True while this worker holds the lease and its last renewal is recent enough."""
        return self.epoch is not None and time.monotonic() < self._good_until

    async def start(self) -> None:
        await self._step()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lease")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.epoch is not None:
            epoch = self.epoch
            await self._lose("stopping")
            try:
                self.store.release_lease(self.name, self.holder, epoch)
            except Exception:  # noqa: BLE001 - the lease then simply expires
                log.warning("could not release the leader lease; it expires in %.0f s",
                            self.ttl_s)

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + self.renew_s
            await asyncio.sleep(self.renew_s)
            self._slow("the renewal started %.1f s late", time.monotonic() - due)
            await self._step()

    def _slow(self, what: str, delay_s: float) -> None:
        if delay_s <= SLOW * self.renew_s:
            return
        self.slow += 1
        self.worst_delay_s = max(self.worst_delay_s, delay_s)
        now = time.monotonic()
        if now - self._slow_logged_at < SLOW_LOG_S:
            return
        log.warning("lease: %s: the worker's event loop or the store was busy (%d such "
                    "delays so far; the lease lasts %.0f s from each renewal)", what % delay_s,
                    self.slow, self.ttl_s)
        self._slow_logged_at = now

    async def _step(self) -> None:
        started = time.monotonic()
        now = self.clock()
        try:
            if self.epoch is not None:
                renewed = self.store.renew_lease(self.name, self.holder, self.epoch, now,
                                                 self.ttl_s)
                self._slow("the store took %.1f s to renew", time.monotonic() - started)
                if renewed:
                    self._good_until = started + self.ttl_s - MARGIN * self.renew_s
                else:
                    held = self.store.lease(self.name) or {}
                    await self._lose(f"taken by {held.get('holder')} (epoch {held.get('epoch')})")
                    return
            else:
                before = self.store.lease(self.name)
                epoch = self.store.acquire_lease(self.name, self.holder, now, self.ttl_s)
                if epoch is not None:
                    self._good_until = started + self.ttl_s - MARGIN * self.renew_s
                    await self._gain(epoch, before, now)
            if self._failing:
                log.info("lease: the store answers again")
            self._failing = False
        except Exception as e:  # noqa: BLE001 - the store failing: retried at the next period
            if not self._failing:
                log.warning("lease: the store failed (%s: %s); retrying every %.0f s",
                            type(e).__name__, str(e)[:200], self.renew_s)
            self._failing = True
            if self.epoch is not None and not self.valid():
                await self._lose("no renewal within the lease time")

    async def _gain(self, epoch: int, before: dict[str, Any] | None, now: float) -> None:
        self.epoch = epoch
        self.gained += 1
        self.gained_at = now
        if before is None or before.get("holder") == self.holder:
            log.info("worker %s leads (epoch %d)", self.holder, epoch)
        else:
            log.warning("worker %s took over the lead from %s (epoch %d; its lease ran out "
                        "%.1f s ago)", self.holder, before.get("holder"), epoch,
                        max(0.0, now - float(before.get("expires") or now)))
        if self.on_gain is not None:
            try:
                await self.on_gain(epoch)
            except Exception:
                log.exception("starting the leader's work failed; giving the lease up")
                await self._lose("could not start")
                with contextlib.suppress(Exception):
                    self.store.release_lease(self.name, self.holder, epoch)

    async def _lose(self, why: str) -> None:
        if self.epoch is None:
            return
        log.warning("worker %s no longer leads (epoch %d): %s", self.holder, self.epoch, why)
        self.epoch = None
        self._good_until = -math.inf
        if self.on_loss is not None:
            try:
                await self.on_loss(why)
            except Exception:
                log.exception("stopping the leader's work failed")

    def stats(self) -> dict[str, Any]:
        return {"worker": self.holder, "leading": self.leading, "epoch": self.epoch,
                "gained": self.gained, "gained_at": self.gained_at, "slow": self.slow,
                "worst_delay_s": round(self.worst_delay_s, 3)}


class MarkRelay:
    """Sites filed by this worker, told to the leader's engine (PostgreSQL only; see above).

    `add(site)` from the ingest's `on_stored` (inside the batch, before its commit); the sites
    are sent by a task that runs after the batch's callback returned, so after the commit.
    `listen(mark)` on the leader: `mark(site)` is called on the loop for every site told."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, store: Any) -> None:
        self.url = url
        self.loop = loop
        self.store = store
        self._pending: set[str] = set()
        self._scheduled = False
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self.sent = 0
        self.received = 0

    def add(self, site: str) -> None:
        self._pending.add(site)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        sites, self._pending = sorted(self._pending), set()
        for chunk in _chunks(sites, NOTIFY_MAX):
            try:
                self.store.notify(CHANNEL, chunk)
                self.sent += 1
            except Exception:  # noqa: BLE001 - the leader's tick evaluates them anyway
                log.debug("could not relay marks", exc_info=True)
                return

    def listen(self, mark: Callable[[str], None]) -> None:
        if self._listener is not None:
            return
        self._stop.clear()
        self._listener = threading.Thread(target=self._listen, args=(mark,), daemon=True,
                                          name="mark-relay")
        self._listener.start()

    def unlisten(self) -> None:
        t, self._listener = self._listener, None
        if t is not None:
            self._stop.set()
            t.join(5)

    def _listen(self, mark: Callable[[str], None]) -> None:
        import psycopg

        warned = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as c:
                    c.execute(f"LISTEN {CHANNEL}")
                    warned = False
                    while not self._stop.is_set():
                        for n in c.notifies(timeout=0.5):
                            self.received += 1
                            for site in n.payload.split(","):
                                if site:
                                    self.loop.call_soon_threadsafe(mark, site)
            except Exception as e:  # noqa: BLE001 - reconnect; the tick covers the meantime
                if not warned:
                    log.warning("mark relay: %s; reconnecting", str(e)[:200])
                    warned = True
                self._stop.wait(1.0)


def _chunks(sites: Iterable[str], limit: int) -> Iterable[str]:
    out: list[str] = []
    size = 0
    for s in sites:
        if out and size + len(s) + 1 > limit:
            yield ",".join(out)
            out, size = [], 0
        out.append(s)
        size += len(s) + 1
    if out:
        yield ",".join(out)
