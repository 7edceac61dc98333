"""Headless Chromium for tests, driven by Playwright: always the Debian browser at
/usr/bin/chromium (Playwright never downloads one here), always on 127.0.0.1 pages.

`browser()` yields a Playwright `Browser`; `serve(make)` runs the aiohttp app that `make()`
builds on 127.0.0.1 in a thread of its own (Playwright's sync API must not share a thread with
a running event loop). `make` runs in that thread, so a SQLite store it opens is used from the
thread that created it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from .loopthread import LoopThread

CHROMIUM = os.environ.get("SOT_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", "--disable-quic"]


def available() -> bool:
    if not os.access(CHROMIUM, os.X_OK):
        return False
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def serve(make: Callable[[], web.Application]) -> Iterator[str]:
    """Serve `make()` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    t = LoopThread("web")
    t.start_loop()
    runner: web.AppRunner | None = None

    async def up() -> str:
        nonlocal runner
        runner = web.AppRunner(make(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield t.call(up)
    finally:
        try:
            if runner is not None:
                t.call(runner.cleanup)
        finally:
            t.stop_loop()


def login(page: Any, base: str, user: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("form.login button[type=submit]")
