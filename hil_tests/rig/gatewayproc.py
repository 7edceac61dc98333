"""The gateway (an asyncio service) on a background thread, for synchronous tests and tools."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

from gateway.service import Gateway


class GatewayThread:
    def __init__(self, config: dict[str, Any], *, config_dir: Path | None = None) -> None:
        self.gateway = Gateway(config, config_dir=config_dir)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> GatewayThread:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.call_soon(ready.set)
            try:
                self.loop.run_forever()
            finally:
                self.loop.close()

        self._thread = threading.Thread(target=run, name="gateway", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        self.call(self.gateway.start(), timeout)
        return self

    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON API path, as a browser or a script of the coordinator's would."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 15.0) -> None:
        if self.loop is None or self._thread is None:
            return
        try:
            self.call(self.gateway.stop(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            self._thread = None
