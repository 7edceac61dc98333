"""The gateway (an asyncio service) on a background thread, for synchronous tests and tools."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from gateway.service import Gateway

from .loopthread import LoopThread


class GatewayThread:
    def __init__(self, config: dict[str, Any], *, config_dir: Path | None = None) -> None:
        self.gateway = Gateway(config, config_dir=config_dir)
        self.thread = LoopThread("gateway")

    def start(self, timeout: float = 15.0) -> GatewayThread:
        self.thread.start_loop(timeout)
        self.thread.call(self.gateway.start, timeout=timeout)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON API path, as a browser or a script of the coordinator's would."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 15.0) -> None:
        try:
            if self.thread.running:
                self.thread.call(self.gateway.stop, timeout=timeout)
        finally:
            self.thread.stop_loop(timeout)
