"""Polling feeds (gateway/feeds/poller.py) against a real aiohttp server on 127.0.0.1 that
serves the fixtures: conditional GET, a hanging feed, 5 MB, broken XML, HTTP and network
errors, backoff and recovery, health, Atom/RSS links, and the run loop."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from feeds_fixtures import FIXTURES, fixture, oversized

from gateway.feeds import FeedConfig, FeedPoller, PollResult
from hil_tests.rig.broker import free_port


class FeedServer:
    """Serves gateway/tests/feeds/<name> with an ETag, or a Last-Modified only (?lm=1), and
    answers a matching conditional GET with 304. Special paths: /hang, /big, /big-cl,
    /flaky/<n>/<name> (HTTP 500 n times first), /status/<code>, /changing (new body each
    time, no validators)."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.not_modified = 0
        self.conditional: list[dict[str, str]] = []
        self.flaky: Counter[str] = Counter()
        self.bodies: dict[str, bytes] = {}
        self.port = 0
        self.runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.hits[path] += 1
        if path == "hang":
            await asyncio.sleep(60)
        if path == "big":  # 5 MB, chunked: no Content-Length to refuse it by
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(80):
                await resp.write(b"x" * 65536)
            return resp
        if path == "big-cl":
            return web.Response(body=oversized(), content_type="application/cap+xml")
        if path.startswith("status/"):
            return web.Response(status=int(path.split("/")[1]))
        if path.startswith("flaky/"):
            _, n, name = path.split("/", 2)
            self.flaky[path] += 1
            if self.flaky[path] <= int(n):
                return web.Response(status=500)
            path = name
        body = self.bodies.get(path)
        if body is None:
            if not (FIXTURES / path).is_file():
                return web.Response(status=404)
            body = fixture(path)
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        lm = "Sat, 05 Dec 2026 07:00:00 GMT"
        use_lm = request.query.get("lm") == "1"
        cond = {k: v for k, v in request.headers.items()
                if k in ("If-None-Match", "If-Modified-Since")}
        if cond:
            self.conditional.append(cond)
        if (not use_lm and request.headers.get("If-None-Match") == etag) or (
                use_lm and request.headers.get("If-Modified-Since") == lm):
            self.not_modified += 1
            return web.Response(status=304)
        headers = {"Last-Modified": lm} if use_lm else {"ETag": etag}
        ctype = "application/json" if path.endswith(".json") else "application/xml"
        return web.Response(body=body, headers=headers, content_type=ctype)


@asynccontextmanager
async def feed_server() -> AsyncIterator[FeedServer]:
    srv = FeedServer()
    app = web.Application()
    app.router.add_get("/{path:.+}", srv.handle)
    srv.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await srv.runner.setup()
    site = web.TCPSite(srv.runner, "127.0.0.1", 0)
    await site.start()
    srv.port = srv.runner.addresses[0][1]
    try:
        yield srv
    finally:
        await srv.runner.cleanup()


def run(fn: Callable[[FeedServer], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with feed_server() as srv:
            return await fn(srv)

    return asyncio.run(asyncio.wait_for(main(), 60))


def cap_feed(srv: FeedServer, path: str, **kw: Any) -> FeedPoller:
    return FeedPoller(FeedConfig(name="t", kind=kw.pop("kind", "cap"), url=srv.url(path), **kw))


def test_conditional_get_304_does_no_work() -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, "vma-are-actual.xml")
        try:
            first = await p.poll_once()
            assert first.ok and [a.identifier for a in first.alerts] == ["TEST-VMA-2026-1205-001"]
            second = await p.poll_once()
            assert second.ok and second.not_modified and second.alerts == []
            assert srv.not_modified == 1 and p.counts["parsed"] == 1
            assert "If-None-Match" in srv.conditional[0]
            assert p.health().consecutive_failures == 0
        finally:
            await p.close()
        lm = cap_feed(srv, "vma-are-actual.xml?lm=1")
        try:
            await lm.poll_once()
            assert (await lm.poll_once()).not_modified
            assert "If-Modified-Since" in srv.conditional[-1] and lm.counts["parsed"] == 1
        finally:
            await lm.close()

    run(go)


def test_hanging_feed_times_out() -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, "hang", timeout_s=0.5)
        t0 = time.monotonic()
        r = await p.poll_once()
        await p.close()
        assert time.monotonic() - t0 < 5
        assert r.error is not None and r.error.reason == "timeout" and r.alerts == []
        h = p.health()
        assert h.consecutive_failures == 1 and h.last_error == "timeout" and h.failing
        assert p.counts["timeout"] == 1

    run(go)


@pytest.mark.parametrize("path", ["big", "big-cl"])
def test_five_megabytes_refused(path: str) -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, path)
        r = await p.poll_once()
        await p.close()
        assert r.error is not None and r.error.reason == "too_large" and r.alerts == []
        assert p.counts["too_large"] == 1 and p.counts["parsed"] == 0  # never parsed

    run(go)


def test_broken_xml_and_wrong_namespace_counted_and_not_remembered() -> None:
    async def go(srv: FeedServer) -> None:
        for name, reason in [("broken.xml", "xml"), ("cap-wrong-namespace.xml", "namespace"),
                             ("doctype.xml", "doctype")]:
            p = cap_feed(srv, name)
            r1 = await p.poll_once()
            r2 = await p.poll_once()
            await p.close()
            assert r1.error is not None and r1.error.reason == reason
            # its ETag was not kept: the next poll fetches and refuses it again, no 304
            assert r2.error is not None and not r2.not_modified
            assert p.counts[reason] == 2 and p.health().consecutive_failures == 2

    run(go)


def test_refused_entry_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def go(srv: FeedServer) -> None:
        bad = fixture("atom-inline.xml").replace(b"<status>Actual</status>",
                                                 b"<status>Nope</status>")
        p = cap_feed(srv, "changing")
        for i in range(3):  # a new body each poll (no validators): the entry is seen 3 times
            srv.bodies["changing"] = bad + f"<!-- {i} -->".encode()
            r = await p.poll_once()
            assert r.ok and [e.reason for e in r.refused] == ["bad_value"]
            assert [a.identifier for a in r.alerts] == ["TEST-VMA-2026-1205-001"]  # linked one
        await p.close()
        assert p.counts["bad_value"] == 1
        assert srv.hits["vma-are-actual.xml"] == 1  # the linked CAP document fetched once

    with caplog.at_level(logging.WARNING, logger="gateway.feeds"):
        run(go)
    assert len([r for r in caplog.records if "bad_value" in r.getMessage()]) == 1


def test_cap_without_area_changes_nothing_and_the_feed_is_healthy() -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, "cap-no-area.xml")
        r = await p.poll_once()
        await p.close()
        assert r.ok and r.alerts == [] and [e.reason for e in r.refused] == ["no_area"]
        assert p.counts["no_area"] == 1 and p.health().consecutive_failures == 0

    run(go)


def test_http_and_network_errors() -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, "status/503")
        r = await p.poll_once()
        await p.close()
        assert r.error is not None and r.error.reason == "http"
        closed = FeedPoller(FeedConfig(name="t", kind="cap",
                                       url=f"http://127.0.0.1:{free_port()}/x", timeout_s=2))
        r = await closed.poll_once()
        await closed.close()
        assert r.error is not None and r.error.reason == "network"

    run(go)


def test_backoff_and_recovery() -> None:
    async def go(srv: FeedServer) -> None:
        clock = [1000.0]
        p = FeedPoller(FeedConfig(name="t", kind="cap", url=srv.url("flaky/3/vma-are-actual.xml"),
                                  interval_s=30, max_backoff_s=200, stale_s=100),
                       clock=lambda: clock[0])
        delays = []
        for _ in range(3):
            r = await p.poll_once()
            assert r.error is not None and r.error.reason == "http"
            delays.append(p.next_delay())
            clock[0] += delays[-1]
        assert delays == [60, 120, 200]  # doubling, capped
        h = p.health()
        assert h.consecutive_failures == 3 and h.last_success is None and h.stale
        r = await p.poll_once()
        await p.close()
        assert r.ok and [a.identifier for a in r.alerts] == ["TEST-VMA-2026-1205-001"]
        h = p.health()
        assert h.consecutive_failures == 0 and h.last_success == clock[0] and not h.stale
        assert p.next_delay() == 30 and h.counts["http"] == 3
        assert p.health(clock[0] + 101).stale  # no success for stale_s: stale

    run(go)


def test_krisinformation_feed_with_area_filter() -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, "krisinformation-news.json", kind="krisinformation", area=("23",))
        r = await p.poll_once()
        await p.close()
        assert r.ok and [a.identifier for a in r.alerts] == ["TEST-KI-2026-1205-JMT"]
        assert p.counts["filtered"] == 1
        p = cap_feed(srv, "broken.xml", kind="krisinformation")
        r = await p.poll_once()
        await p.close()
        assert r.error is not None and r.error.reason == "json"

    run(go)


def test_rss_links_resolved_against_the_feed() -> None:
    async def go(srv: FeedServer) -> None:
        p = cap_feed(srv, "rss-links.xml")
        r = await p.poll_once()
        await p.close()
        assert r.ok
        assert sorted(a.identifier for a in r.alerts) == ["TEST-CAP-CIRCLE-001",
                                                          "TEST-VMA-2026-1205-T01"]

    run(go)


def test_links_to_other_hosts_are_not_followed() -> None:
    async def go(srv: FeedServer) -> None:
        other = free_port()
        srv.bodies["rss"] = fixture("rss-links.xml").replace(
            b"<link>vma-are-test.xml</link>",
            f"<link>http://127.0.0.1:{other}/vma-are-test.xml</link>".encode())
        p = cap_feed(srv, "rss")
        r = await p.poll_once()
        await p.close()
        assert r.ok and [a.identifier for a in r.alerts] == ["TEST-CAP-CIRCLE-001"]
        assert [e.reason for e in r.refused] == ["foreign_link"]

    run(go)


def test_run_loop_polls_until_stopped_and_survives_a_failing_handler() -> None:
    async def go(srv: FeedServer) -> None:
        p = FeedPoller(FeedConfig(name="t", kind="cap", url=srv.url("vma-are-actual.xml"),
                                  interval_s=0.05))
        stop = asyncio.Event()
        seen: list[PollResult] = []

        async def on_result(r: PollResult) -> None:
            seen.append(r)
            if len(seen) == 2:
                raise RuntimeError("a handler bug must not stop the polling")
            if len(seen) >= 4:
                stop.set()

        await asyncio.wait_for(p.run(on_result, stop), 10)
        assert len(seen) == 4 and seen[0].alerts and all(r.not_modified for r in seen[1:])

    run(go)
