"""A local official-alert feed: an aiohttp server on 127.0.0.1 (a free port) in its own thread,
serving documents the test or the demo sets (gateway/feeds/, docs/feeds.md).

The documents are the project's own fixtures (gateway/tests/feeds/), written from the public
format descriptions; `retimed` moves a fixture's times so that it is current now (the fixtures
are dated during the storm of 5 December 2026). Each document has an ETag, so the gateway's
conditional GET gets 304 until `set` changes it. `changed_at[path]` is when the document last
changed (time.time()), for latency measurements.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[2] / "gateway" / "tests" / "feeds"
CAP_TYPE = "application/cap+xml"

# Every fixture time is of the storm; this one (the VMA's `sent`) becomes "now".
FIXTURE_NOW = datetime.fromisoformat("2026-12-05T08:00:00+01:00")
_ISO = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:\d\d|Z)")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def retimed(doc: bytes, now: float | None = None, *, base: datetime = FIXTURE_NOW) -> bytes:
    """The document with every ISO time moved by the same amount, so that `base` is `now`."""
    shift = datetime.fromtimestamp(time.time() if now is None else now, UTC) - base

    def move(m: re.Match[bytes]) -> bytes:
        t = datetime.fromisoformat(m.group().decode().replace("Z", "+00:00")) + shift
        return t.astimezone(UTC).replace(microsecond=0).strftime(
            "%Y-%m-%dT%H:%M:%S+00:00").encode()

    return _ISO.sub(move, doc)


_PROLOGUE = re.compile(rb"<\?xml[^>]*\?>|<!--.*?-->", re.S)


def atom(*caps: bytes, now: float | None = None) -> bytes:
    """An Atom feed (RFC 4287) carrying the CAP documents inline, one entry each; no documents:
    an empty feed (a feed with nothing to say, not a failure)."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S+00:00")
    entries = []
    for i, doc in enumerate(caps):
        body = _PROLOGUE.sub(b"", doc).strip()
        entries.append(b"  <entry>\n    <id>urn:sot-demo:entry:%d</id>\n    <title>CAP</title>\n"
                       b"    <updated>%s</updated>\n    <content type=\"application/cap+xml\">\n"
                       b"%s\n    </content>\n  </entry>\n" % (i, stamp.encode(), body))
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<feed xmlns="http://www.w3.org/2005/Atom">\n  <id>urn:sot-demo:feed</id>\n'
            b"  <title>SOT-punkt demo: officiella larm</title>\n  <updated>%s</updated>\n"
            % stamp.encode() + b"".join(entries) + b"</feed>\n")


class FeedServer:
    """`start()`, `set(path, body)`, `url(path)`, `stop()`; usable from sync and async code."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.docs: dict[str, tuple[bytes, str, str]] = {}  # path -> (body, type, etag)
        self.changed_at: dict[str, float] = {}
        self.requests = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def set(self, path: str, body: bytes, content_type: str = CAP_TYPE) -> None:
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        with self._lock:
            self.docs[path] = (body, content_type, etag)
            self.changed_at[path] = time.time()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        with self._lock:
            self.requests += 1
            doc = self.docs.get(request.path)
        if doc is None:
            return web.Response(status=404)
        body, ctype, etag = doc
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type=ctype.split(";")[0],
                            headers={"ETag": etag})

    def start(self) -> FeedServer:
        ready = threading.Event()
        failed: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                app = web.Application()
                app.router.add_get("/{tail:.*}", self._handle)
                self._runner = web.AppRunner(app, access_log=None)
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, 0)
                loop.run_until_complete(site.start())
                self.port = int(self._runner.addresses[0][1])
            except BaseException as e:  # noqa: BLE001 - reported to start()
                failed.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, name="feed-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
