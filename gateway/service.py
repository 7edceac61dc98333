"""The running gateway: store, MQTT ingest and web site under one start/stop.

Configuration is the dict read from `config/gateway.toml` (see that file):

    [mqtt]  host, port, client_id, keepalive_s (30), user, password (optional)
    [http]  host, port (0 = any free port; the port taken is `Gateway.http_port`)
    [store] path (relative paths are taken from the repository root)
    [sites] dir  (the `config/sites` folder; device profiles are read from `devices/` beside it)

Missing keys take the defaults in `DEFAULTS`. Everything listens on what the configuration
names; the shipped file says 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .config import REPO_ROOT, load_sites
from .ingest import Ingest, MqttIngest
from .store import SiteInfo, SqliteStore
from .web import make_app

log = logging.getLogger(__name__)

DEFAULTS: dict[str, dict[str, Any]] = {
    "mqtt": {"host": "127.0.0.1", "port": 1883, "client_id": "sot-gateway", "keepalive_s": 30,
             "user": None, "password": None},
    "http": {"host": "127.0.0.1", "port": 8080},
    "store": {"path": "var/sot.sqlite3"},
    "sites": {"dir": "config/sites"},
}


def with_defaults(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"gateway config: unknown section [{unknown[0]}]")
    out = {}
    for section, defaults in DEFAULTS.items():
        given = config.get(section) or {}
        extra = sorted(set(given) - set(defaults))
        if extra:
            raise ValueError(f"gateway config: [{section}]: unknown key '{extra[0]}'")
        out[section] = {**defaults, **given}
    return out


def load_config(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _resolve(path: str | Path, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base / p


class Gateway:
    """`await start()`, then `http_port` is the port the web site listens on; `await stop()`."""

    def __init__(self, config: dict[str, Any], clock: Callable[[], float] = time.time, *,
                 base_dir: Path = REPO_ROOT, config_dir: Path | None = None) -> None:
        """`base_dir` anchors relative paths in `config`; `config_dir` (a folder holding
        `sites/` and `devices/`) overrides `[sites] dir`, as the demo and tests do."""
        self.config = with_defaults(config)
        self.clock = clock
        self.base_dir = base_dir
        self.config_dir = config_dir
        self.store: SqliteStore | None = None
        self.ingest: Ingest | None = None
        self.mqtt: MqttIngest | None = None
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        config_dir = self.config_dir or _resolve(cfg["sites"]["dir"], self.base_dir).parent
        sites = load_sites(config_dir)
        self.store = SqliteStore(_resolve(cfg["store"]["path"], self.base_dir))
        self.store.upsert_sites(
            SiteInfo(id=s.id, name=s.name, municipality=s.municipality, lat=s.lat, lon=s.lon,
                     heartbeat_s=s.mqtt.get("heartbeat_s")) for s in sites.values())
        self.ingest = Ingest(self.store, self.clock)

        app = make_app(self.store, self.clock, self.ingest.stats)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg["http"]["host"], int(cfg["http"]["port"]))
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])

        m = cfg["mqtt"]
        self.mqtt = MqttIngest(self.ingest, asyncio.get_running_loop(), host=m["host"],
                               port=int(m["port"]), client_id=m["client_id"],
                               keepalive_s=int(m["keepalive_s"]), username=m["user"],
                               password=m["password"], clock=self.clock)
        self.mqtt.start()
        log.info("gateway: %d sites, web on http://%s:%d/, MQTT %s:%d", len(sites),
                 cfg["http"]["host"], self.http_port, m["host"], m["port"])

    async def stop(self) -> None:
        if self.mqtt is not None:
            await asyncio.to_thread(self.mqtt.stop)
            self.mqtt = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Messages already handed to the loop run before the store closes.
        await asyncio.sleep(0)
        if self.store is not None:
            self.store.close()
            self.store = None

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(config: dict[str, Any], stop_event: asyncio.Event, *,
                clock: Callable[[], float] = time.time, base_dir: Path = REPO_ROOT,
                config_dir: Path | None = None) -> None:
    """Run the gateway until `stop_event` is set."""
    gateway = Gateway(config, clock, base_dir=base_dir, config_dir=config_dir)
    await gateway.start()
    try:
        await stop_event.wait()
    finally:
        await gateway.stop()


async def serve_forever(config_path: str | Path) -> int:
    """`sot gateway`: read the TOML, serve until SIGINT or SIGTERM, return the exit status."""
    config = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(config, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def run(config_path: str | Path) -> int:
    """Blocking form of `serve_forever`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve_forever(config_path))
