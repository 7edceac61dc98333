"""The gateway (an asyncio service) on a background thread, for synchronous tests and tools."""

from __future__ import annotations

import http.cookiejar
import json
import secrets
import urllib.request
from pathlib import Path
from typing import Any

from gateway.service import Gateway

from .loopthread import LoopThread


class GatewayThread:
    def __init__(self, config: dict[str, Any], *, config_dir: Path | None = None) -> None:
        self.gateway = Gateway(config, config_dir=config_dir)
        self.thread = LoopThread("gateway")
        self.user = "hil-viewer"
        self.password = secrets.token_urlsafe(12)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self._logged_in = False

    def start(self, timeout: float = 15.0) -> GatewayThread:
        self.thread.start_loop(timeout)
        self.thread.call(self.gateway.start, timeout=timeout)
        self.add_user(self.user, "viewer", self.password)
        return self

    def add_user(self, name: str, role: str, password: str) -> None:
        """A dashboard user in the gateway's store (there are none by default)."""
        from gateway.auth import hash_password

        pwhash = hash_password(password)

        def put() -> None:
            assert self.gateway.store is not None
            self.gateway.store.put_user(name, role, pwhash, 0.0)

        self.thread.call(put)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}"

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON API path, as a script of the coordinator's would: logged in as a viewer."""
        if not self._logged_in:
            req = urllib.request.Request(
                self.url + "/api/login", method="POST",
                data=json.dumps({"user": self.user, "password": self.password}).encode(),
                headers={"Content-Type": "application/json"})
            with self._opener.open(req, timeout=timeout) as r:
                r.read()
            self._logged_in = True
        with self._opener.open(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def stop(self, timeout: float = 15.0) -> None:
        try:
            if self.thread.running:
                self.thread.call(self.gateway.stop, timeout=timeout)
        finally:
            self.thread.stop_loop(timeout)
