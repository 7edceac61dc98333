"""Time and connection bounds for the web server: a slow or idle client costs only itself.

aiohttp bounds the size of a request line and its headers, and the idle time between two
requests on a kept-alive connection (`keepalive_timeout`, 3630 s by default), but not the time a
client may take to send its headers or its body. A client that sends one header byte every 10 s,
or connects and says nothing, would hold a socket and a file descriptor for as long as it likes.
The public signage is on the open internet, so the server bounds (docs/security.md, "The web"):

    idle_s       a connection with no request in progress and no byte of a new one: closed
    header_s     from the first byte of a request to its complete headers (the handler starts)
    body_s       reading a request's body, enforced where it is read (`gateway.web.outer`)
    per_addr     open connections from one address; one more is closed at once
    max_conns    open connections in all; one more is closed at once

`Guard` wraps aiohttp's protocol object for each connection and keeps the idle/header deadline;
the web middleware tells it when a request's handler starts (headers done: no deadline while a
request is handled, so a server-sent event stream lives as long as the screen reads it) and
when it ends (the connection is idle again).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    header_s: float = 10.0
    body_s: float = 20.0
    idle_s: float = 60.0
    per_addr: int = 64
    max_conns: int = 1000


class _Book:
    """Open connections of one listening socket, per address and in all, and what was cut."""

    def __init__(self) -> None:
        self.by_addr: Counter[str] = Counter()
        self.total = 0
        self.refused = 0
        self.timed_out = 0

    def stats(self) -> dict[str, int]:
        return {"open": self.total, "refused": self.refused, "timed_out": self.timed_out}


# the guard of each open connection, by its transport (for the middleware)
_GUARDS: dict[Any, Guard] = {}


def guard_of(transport: Any) -> Guard | None:
    return _GUARDS.get(transport) if transport is not None else None


class Guard(asyncio.Protocol):
    def __init__(self, inner: Any, limits: Limits, book: _Book) -> None:
        self.inner = inner
        self.limits = limits
        self.book = book
        self.transport: asyncio.Transport | None = None
        self.addr = ""
        self.counted = False
        self.busy = False  # a request is being handled
        self.started = False  # a byte of the next request has arrived
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        b = self.book
        if b.total >= self.limits.max_conns or b.by_addr[self.addr] >= self.limits.per_addr:
            b.refused += 1
            if b.refused == 1 or b.refused % 10_000 == 0:
                log.warning("web: connection refused (too many open: %s from %s, %d in all); "
                            "%d refused so far", b.by_addr[self.addr], self.addr, b.total,
                            b.refused)
            transport.abort()
            return
        b.by_addr[self.addr] += 1
        b.total += 1
        self.counted = True
        _GUARDS[transport] = self
        self.inner.connection_made(transport)
        self._arm(self.limits.idle_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self.counted:
            return
        self.counted = False
        _GUARDS.pop(self.transport, None)
        b = self.book
        b.total -= 1
        b.by_addr[self.addr] -= 1
        if b.by_addr[self.addr] <= 0:
            del b.by_addr[self.addr]
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.busy and not self.started and data:
            self.started = True  # the headers of a request are coming: header_s from now
            self._arm(self.limits.header_s)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # --- told by the middleware ---------------------------------------------------------------

    def request_started(self) -> None:
        self.busy = True
        self._disarm()

    def request_done(self) -> None:
        self.busy = False
        self.started = False
        self._arm(self.limits.idle_s)

    # --- the deadline -------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        # No request in progress: nothing to answer, the socket is closed.
        b = self.book
        b.timed_out += 1
        if b.timed_out == 1:
            log.warning("web: closed a connection from %s that sent no complete request in "
                        "time (counted in /api/stats web.timed_out; logged once)", self.addr)
        self.transport.close()


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose every connection is wrapped in a `Guard` with `limits`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: Limits) -> None:
        super().__init__(runner, host, port)
        self._limits = limits
        self._book = _Book()

    @property
    def open_connections(self) -> int:
        return self._book.total

    def stats(self) -> dict[str, int]:
        return self._book.stats()

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        limits, book = self._limits, self._book
        self._server = await loop.create_server(
            lambda: Guard(server(), limits, book), self._host, self._port,
            backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]
