"""The gateway (an asyncio service) on a background thread, for synchronous tests and tools."""

from __future__ import annotations

import http.cookiejar
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import mqttauth
from gateway.service import Gateway

from .loopthread import LoopThread

if TYPE_CHECKING:
    from .broker import Broker


def rig_config(broker: Broker, workdir: Path, *, mqtt: dict[str, Any] | None = None,
               **sections: Any) -> dict[str, Any]:
    """A test's gateway settings: the rig's broker with the gateway's account, HTTP on a free
    loopback port, its store and alert files in `workdir`, and a command-key file of its own
    (absent unless the test writes it), so no test picks up the checkout's var/mqtt keys.
    `mqtt` adds to the [mqtt] section; other sections are added as given."""
    return {
        "mqtt": {"host": broker.host, "port": broker.port,
                 "cmd_keys": str(workdir / "cmd-keys.json"),
                 **broker.login(mqttauth.GATEWAY_USER), **(mqtt or {})},
        "http": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(workdir / "sot.sqlite3")},
        "alerts": {"files_dir": str(workdir)},
        **sections,
    }


@contextmanager
def running_gateway(config: dict[str, Any]) -> Iterator[GatewayThread]:
    """The gateway started, and subscribed once it has heard its own retained `online` status
    (counted as ignored: the TLS handshake makes its connect slower than a test's first
    publish); stopped when the block ends."""
    gw = GatewayThread(config)
    gw.start()
    try:
        deadline = time.monotonic() + 15
        while gw.get("/api/stats")["ignored"] < 1:
            if time.monotonic() > deadline:
                raise AssertionError("the gateway did not subscribe within 15 s")
            time.sleep(0.1)
        yield gw
    finally:
        gw.stop()


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
