"""The running gateway: store, MQTT ingest and web site under one start/stop.

Configuration is the dict read from `config/gateway.toml` (see that file):

    [mqtt]  host, port, client_id, keepalive_s (30), user, password (optional), ca (the CA
            certificate from `sot pki init`: TLS, verifying the broker against it; without it
            the connection is plaintext, which the project's brokers refuse)
            cmd_keys (the sites' command keys from `sot mqtt-auth`, default
            var/mqtt/cmd-keys.json: the dashboard's signed commands; none, no commands)
    [http]  host, port (0 = any free port; the port taken is `Gateway.http_port`)
    [store] path (SQLite; relative paths are taken from the repository root), or
            url = "postgresql://..." (PostgreSQL; docs/deploy.md)
    [sites] dir  (the `config/sites` folder; device profiles are read from `devices/` beside it)
    [alerts] enabled (true), rules, contacts (default: alerts.toml and contacts.toml beside
            `sites/`), tick_s (5: how often every site is evaluated, for the dead-man and the
            hold, repeat and escalation times), files_dir (where `file` contacts write, "var"),
            base_url (link in notifications and CAP; default the web site's own address),
            cap_sender (CAP <sender> and identifier prefix)
    [smtp]  host, port, sender, starttls, user, password: the e-mail notifier's server
    [[feeds]], [feed_policy]: official alerts (VMA, Krisinformation) polled and published to the
            panels and signage of the sites they apply to (gateway/feeds/run.py, docs/feeds.md);
            a failing feed never stops the gateway
    [web]   session_h (12: a login lasts this long, unless the user is removed, demoted or
            given a new password first); secure_cookie ("auto": Secure unless [http] host is a
            loopback address; true behind a TLS proxy; false is refused on any other host);
            trusted_proxies ([]: addresses of reverse proxies whose X-Forwarded-For is
            believed); login throttle (gateway/auth.py LoginThrottle): login_free_pair (5),
            login_free_addr (20), login_free_name (50) failures within login_window_s (900),
            then pauses doubling up to login_max_delay_s (900; login_name_delay_s, 60, for
            the per-name pause); slow clients (gateway/httpguard.py): header_s (10), body_s
            (20), idle_s (60), max_conns_per_addr (64), max_conns (1000)
    [metrics] token_file: a file holding the token a Prometheus presents to read /metrics
            (`Authorization: Bearer ...`, 16 characters or more); unset, /metrics answers only
            to clients on this machine that came through no proxy. /healthz and /readyz are
            open (docs/deploy.md, "Monitoring")

Dashboard users are kept in the store (`sot user add NAME --role ROLE`); there is no default.

Missing keys take the defaults in `DEFAULTS`; `gateway/settings.py` declares every key's type and
range, and `with_defaults` refuses anything else with an error naming file, section and key.
Everything listens on what the configuration names; the shipped file says 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .alerts.config import AlertConfig, default_rules, load_alert_config, load_rules
from .alerts.engine import AlertEngine
from .alerts.notify import EmailSender, FileSender, Sender, SmtpSettings, WebhookSender
from .auth import LoginThrottle
from .commands import CommandSender, load_keys
from .config import REPO_ROOT, load_sites
from .crisis import CrisisSender
from .exercise import FactsSource
from .feeds.policy import load_policy
from .feeds.poller import load_feeds
from .feeds.run import Feeds
from .httpguard import GuardedSite, Limits
from .ingest import CRISIS_ACK, Ingest, MqttIngest
from .metrics import GatewayOps
from .settings import DEFAULTS as DEFAULTS  # the schema lives in gateway/settings.py
from .settings import LOOPBACK
from .settings import with_defaults as with_defaults
from .signage import SiteBus
from .store import SiteInfo, Store, open_store
from .validate import load_toml
from .web import EXERCISE_SCHEDULES, make_app
from .web.feeds import FEEDS
from .web.ops import OPS

log = logging.getLogger(__name__)

def secure_cookie(config: dict[str, Any]) -> bool:
    """Whether the session cookie is Secure (sent over HTTPS only). "auto": yes unless the web
    listens on a loopback address only (the demo, tests, or a proxy on the same machine, which
    should set true). Plain HTTP on any other address is refused by `with_defaults`: passwords
    and sessions would cross the network in clear."""
    value = config["web"]["secure_cookie"]
    if value == "auto":
        return not str(config["http"]["host"]).startswith(LOOPBACK)
    return bool(value)


def load_config(path: str | Path) -> dict[str, Any]:
    """The TOML file as it is (`with_defaults` checks it); a broken file is a ConfigError."""
    return load_toml(path)


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
        self.store: Store | None = None
        self.ingest: Ingest | None = None
        self.mqtt: MqttIngest | None = None
        self.http_port: int | None = None
        self.engine: AlertEngine | None = None
        self._runner: web.AppRunner | None = None
        self._site: GuardedSite | None = None
        self.bus = SiteBus()
        self.crisis: CrisisSender | None = None
        self.feeds: Feeds | None = None

    def alert_config(self, config_dir: Path) -> AlertConfig:
        a = self.config["alerts"]
        rules = _resolve(a["rules"], self.base_dir) if a["rules"] else config_dir / "alerts.toml"
        contacts = (_resolve(a["contacts"], self.base_dir) if a["contacts"]
                    else config_dir / "contacts.toml")
        if a["rules"] or a["contacts"] or (rules.exists() and contacts.exists()):
            return load_alert_config(rules, contacts)
        # A configuration folder without alert files (tests, a fresh install): the shipped
        # rules, nobody to notify; said once in the log.
        log.warning("no %s or %s: default alert rules, no contacts", rules, contacts)
        if rules.exists():
            r, g = load_rules(rules)
            return AlertConfig(rules=r, grouping=g)
        return AlertConfig(rules=default_rules())

    def senders(self) -> dict[str, Sender]:
        m = self.config["smtp"]
        return {
            "email": EmailSender(SmtpSettings(
                host=m["host"], port=int(m["port"]), sender=m["sender"],
                starttls=bool(m["starttls"]), user=m["user"], password=m["password"])),
            "webhook": WebhookSender(),
            "file": FileSender(_resolve(self.config["alerts"]["files_dir"], self.base_dir)),
        }

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
        self.store = open_store(cfg["store"], self.base_dir)
        self.store.upsert_sites(
            SiteInfo(id=s.id, name=s.name, municipality=s.municipality, lat=s.lat, lon=s.lon,
                     heartbeat_s=s.mqtt.get("heartbeat_s")) for s in sites.values())
        self.ingest = Ingest(self.store, self.clock)
        a = cfg["alerts"]
        alert_config = self.alert_config(config_dir) if a["enabled"] else None

        w = cfg["web"]
        # The sender publishes through the MQTT session created below (`self.mqtt`).
        self.crisis = CrisisSender(self.store, _MqttRef(self), self.clock,
                                   on_change=self.bus.notify)
        ref = _MqttRef(self)

        def publish_cmd(topic: str, payload: str) -> None:
            if not ref.publish(topic, payload.encode(), retain=False):
                raise OSError("broker not connected")

        commands = CommandSender(self.store, publish_cmd,
                                 load_keys(_resolve(cfg["mqtt"]["cmd_keys"], self.base_dir)),
                                 self.clock, connected=ref.is_connected)
        throttle = LoginThrottle(self.clock, window_s=float(w["login_window_s"]),
                                 free_pair=int(w["login_free_pair"]),
                                 free_addr=int(w["login_free_addr"]),
                                 free_name=int(w["login_free_name"]),
                                 max_delay_s=float(w["login_max_delay_s"]),
                                 name_delay_s=float(w["login_name_delay_s"]))
        limits = Limits(header_s=float(w["header_s"]), body_s=float(w["body_s"]),
                        idle_s=float(w["idle_s"]), per_addr=int(w["max_conns_per_addr"]),
                        max_conns=int(w["max_conns"]))
        app = make_app(self.store, self.clock, self._stats, cap_sender=a["cap_sender"],
                       base_url=a["base_url"] or "", crisis=self.crisis, commands=commands,
                       bus=self.bus,
                       throttle=throttle, session_s=float(w["session_h"]) * 3600,
                       secure_cookie=secure_cookie(cfg), limits=limits,
                       trusted_proxies=frozenset(str(x) for x in w["trusted_proxies"]))
        app[EXERCISE_SCHEDULES] = {s.id: s.exercise for s in sites.values()}
        app[FEEDS] = lambda: self.feeds  # started below, after MQTT
        metrics_token = cfg["metrics"]["token_file"]
        gw_ops = GatewayOps(self, _resolve(metrics_token, self.base_dir) if metrics_token
                            else None)
        app[OPS] = lambda: gw_ops
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = GuardedSite(self._runner, cfg["http"]["host"], int(cfg["http"]["port"]), limits)
        await site.start()
        self._site = site
        self.http_port = int(self._runner.addresses[0][1])

        engine: AlertEngine | None = None
        if alert_config is not None:
            base_url = a["base_url"] or f"http://{cfg['http']['host']}:{self.http_port}/"
            self.engine = engine = AlertEngine(self.store, alert_config, self.clock,
                                               senders=self.senders(), tick_s=float(a["tick_s"]),
                                               base_url=base_url, name=a["cap_sender"],
                                               exercise=FactsSource(self.store, {
                                                   s.id: s.exercise for s in sites.values()}))
        bus = self.bus

        def on_stored(site: str, subtopic: str) -> None:
            if subtopic in ("state", "status", "birth", CRISIS_ACK):
                if engine is not None:
                    engine.mark(site)
                bus.notify(site)  # the site's signage streams look again

        self.ingest.on_stored = on_stored
        if engine is not None:
            engine.start()

        m = cfg["mqtt"]
        self.mqtt = MqttIngest(self.ingest, asyncio.get_running_loop(), host=m["host"],
                               port=int(m["port"]), client_id=m["client_id"],
                               keepalive_s=int(m["keepalive_s"]), username=m["user"],
                               password=m["password"], clock=self.clock,
                               ca=_resolve(m["ca"], self.base_dir) if m.get("ca") else None)
        if self.engine is not None:
            self.mqtt.on_listening = self.engine.listening
        self.mqtt.start()
        # After MQTT: what a first poll publishes goes through the session (Feeds.resend
        # catches up on anything that came while it was not connected yet).
        self.feeds = Feeds(load_feeds(cfg["feeds"]), load_policy(cfg["feed_policy"]),
                           self.crisis, self.store, sites, self.clock)
        if self.engine is not None:
            self.engine.feeds = self.feeds.health  # the feed_failed rule (gateway scope)
        self.feeds.start()
        log.info("gateway: %d sites, web on http://%s:%d/, MQTT %s:%d", len(sites),
                 cfg["http"]["host"], self.http_port, m["host"], m["port"])

    async def stop(self) -> None:
        if self.feeds is not None:
            await self.feeds.stop()
            self.feeds = None
        if self.mqtt is not None:
            await asyncio.to_thread(self.mqtt.stop)
            self.mqtt = None
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Messages already handed to the loop run before the store closes.
        await asyncio.sleep(0)
        if self.store is not None:
            self.store.close()
            self.store = None

    def _stats(self) -> dict[str, Any]:
        out = self.ingest.stats() if self.ingest is not None else {}
        if self.engine is not None:
            out["alerts"] = self.engine.stats()
        if self._site is not None:
            out["web"] = self._site.stats()
        if self.feeds is not None:
            out["feeds"] = self.feeds.stats()
        return out

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _MqttRef:
    """The gateway's MQTT session as the crisis sender sees it: publishing goes through the one
    client the gateway owns (one owner per connection), whichever session object is current."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def is_connected(self) -> bool:
        m = self.gateway.mqtt
        return m is not None and m.is_connected()

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        m = self.gateway.mqtt
        return m is not None and m.publish(topic, payload, retain=retain)


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
    config = with_defaults(load_config(config_path), config_path)
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
