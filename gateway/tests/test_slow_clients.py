"""Slow and idle clients against the real server (GuardedSite) on 127.0.0.1 over raw sockets,
with short limits configured: a socket that says nothing, headers that never end or come one
byte at a time, a body that stalls, an idle kept-alive connection, and too many connections
from one address are all closed by the server, while a signage event stream stays open."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gw_samples import SITES
from web_login import add_user

from gateway.httpguard import GuardedSite, Limits
from gateway.store import SqliteStore
from gateway.web import make_app
from hil_tests.rig.loopthread import LoopThread

SAFETY_S = 10.0  # how long a test waits for the server to act: far beyond every limit below


@contextlib.contextmanager
def server(tmp_path: Path, limits: Limits) -> Iterator[tuple[int, GuardedSite]]:
    from aiohttp import web

    t = LoopThread("web")
    t.start_loop()
    holder: dict[str, object] = {}

    async def up() -> tuple[int, GuardedSite]:
        db = SqliteStore(tmp_path / "sot.sqlite3")
        db.upsert_sites(SITES)
        add_user(db, "anna", "viewer")
        holder["db"] = db
        runner = web.AppRunner(make_app(db, limits=limits), access_log=None)
        await runner.setup()
        site = GuardedSite(runner, "127.0.0.1", 0, limits)
        await site.start()
        holder["runner"] = runner
        return site.port, site

    async def down() -> None:
        await holder["runner"].cleanup()  # type: ignore[attr-defined]
        holder["db"].close()  # type: ignore[attr-defined]

    try:
        yield t.call(up)
    finally:
        try:
            t.call(down)
        finally:
            t.stop_loop()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_S)
    return s


def closed_by_server(s: socket.socket, timeout: float = SAFETY_S) -> bytes:
    """Read until the server closes; returns what it sent. Fails if it never closes."""
    s.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {timeout} s; got {got[:200]!r}")


LIMITS = Limits(header_s=0.6, body_s=0.6, idle_s=0.8, per_addr=200, max_conns=500)


def test_silent_partial_and_dripping_headers_are_cut_off(tmp_path: Path):
    with server(tmp_path, LIMITS) as (port, site):
        silent = connect(port)
        partial = connect(port)
        partial.sendall(b"GET /signage/are-kall HTTP/1.1\r\nHost: x\r\n")
        assert closed_by_server(silent) == b""
        assert closed_by_server(partial) == b""
        # one byte every 0.2 s: each byte is "activity", the headers never complete in time
        drip = connect(port)
        request = b"GET /api/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + \
            b"a" * 40 + b"\r\n\r\n"
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in request:
                drip.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.2)
        assert sent < len(request)
        # many at once: every one is closed, none is left holding a file descriptor
        many = [connect(port) for _ in range(100)]
        for s in many:
            s.sendall(b"GET / HTTP/1.1\r\n")
        for s in many:
            closed_by_server(s)
            s.close()
        for s in (silent, partial, drip):
            s.close()
        deadline = time.monotonic() + SAFETY_S
        while site.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert site.open_connections == 0
        assert site.stats()["timed_out"] >= 103  # counted (and logged once)


def test_a_stalled_body_gets_408_and_an_idle_kept_alive_connection_is_closed(tmp_path: Path):
    with server(tmp_path, LIMITS) as (port, _):
        s = connect(port)
        s.sendall(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"user\": ")
        answer = closed_by_server(s)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert b"Content-Security-Policy" in answer
        s.close()
        # a complete request is answered; the connection then idles and is closed
        k = connect(port)
        k.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = closed_by_server(k)
        assert answer.startswith(b"HTTP/1.1 200") and b'"openapi"' in answer
        k.close()


def test_the_signage_stream_outlives_every_limit(tmp_path: Path):
    with server(tmp_path, LIMITS) as (port, site):
        s = connect(port)
        s.sendall(b"GET /signage/are-kall/events HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(SAFETY_S)
        got = b""
        while b"event: state" not in got:
            got += s.recv(4096)
        s.settimeout(3 * max(LIMITS.header_s, LIMITS.idle_s, LIMITS.body_s))
        with pytest.raises(TimeoutError):
            extra = s.recv(4096)  # nothing new to say, and the server does not hang up
            assert extra, "the server closed the stream"
        assert site.open_connections == 1
        s.close()


def test_connections_per_address_are_bounded(tmp_path: Path):
    limits = Limits(header_s=30, body_s=30, idle_s=30, per_addr=5, max_conns=500)
    with server(tmp_path, limits) as (port, site):
        held = [connect(port) for _ in range(5)]
        extra = connect(port)
        assert closed_by_server(extra) == b""  # refused at once
        assert site.open_connections == 5 and site.stats()["refused"] == 1
        for s in held:
            s.close()
        deadline = time.monotonic() + SAFETY_S
        while site.open_connections and time.monotonic() < deadline:
            time.sleep(0.05)
        ok = connect(port)  # room again
        ok.sendall(b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert closed_by_server(ok).startswith(b"HTTP/1.1 200")
        ok.close()
