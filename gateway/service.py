"""The running gateway: store, MQTT ingest and web site under one start/stop.

Configuration is the dict read from `config/gateway.toml` (see that file):

    [mqtt]  host, port, client_id, keepalive_s (30), user, password (optional), ca (the CA
            certificate from `sot pki init`: TLS, verifying the broker against it; without it
            the connection is plaintext, which the project's brokers refuse)
            session_expiry_s (0: the broker keeps the gateway's session until it returns, MQTT
            3.1.1; N: MQTT 5, the session ends N s after the connection is lost. With several
            workers set it (10): the broker shares messages out to a dead worker's session
            until it ends; docs/deploy.md, "Several workers")
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
    [worker] name ("main": unique per gateway process; the MQTT client id is
            `<[mqtt] client_id>-<name>` for any other name, and the name is the holder in the
            leader lease), lease_ttl_s (6: the leader lease's lifetime, renewed every third of
            it; another worker takes over within about 1.3 times this after the leader dies).
            Several workers share one PostgreSQL store and one broker; each has its own MQTT
            account (`sot mqtt-auth --gateway-workers N`) and [http] port; every worker ingests
            its share of the uplink and serves the web, the leader alone runs the alert
            engine, the notifier and the feed poller (gateway/lease.py; docs/deploy.md,
            "Several workers")

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
from .lease import Lease, MarkRelay
from .metrics import GatewayOps
from .settings import DEFAULTS as DEFAULTS  # the schema lives in gateway/settings.py
from .settings import LOOPBACK
from .settings import with_defaults as with_defaults
from .signage import SiteBus
from .store import LEADER, PgStore, SiteInfo, Store, open_store
from .validate import load_toml
from .web import EXERCISE_SCHEDULES, make_app
from .web.feeds import FEEDS
from .web.ops import OPS

log = logging.getLogger(__name__)

# How long the leader's notifier holds a notification it is sending (the sender's own time
# limit is 60 s): if it dies meanwhile, the next leader sends it once this has passed.
CLAIM_HOLD_S = 90.0

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
        self.lease: Lease | None = None
        self._relay: MarkRelay | None = None
        self._alert_config: AlertConfig | None = None
        self._sites: dict[str, Any] = {}
        self._exercise: dict[str, Any] = {}
        self._listening_since: float | None = None

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

        self._alert_config = alert_config
        self._sites = sites
        self._exercise = {s.id: s.exercise for s in sites.values()}
        bus = self.bus
        worker = cfg["worker"]
        relay = (MarkRelay(self.store.url, asyncio.get_running_loop(), self.store)
                 if isinstance(self.store, PgStore) else None)
        self._relay = relay

        def on_stored(site: str, subtopic: str) -> None:
            if subtopic in ("state", "status", "birth", CRISIS_ACK):
                if self.engine is not None:
                    self.engine.mark(site)
                elif relay is not None:
                    relay.add(site)  # the leader's engine, in another worker
                bus.notify(site)  # the site's signage streams look again

        self.ingest.on_stored = on_stored
        # Built on every worker (the web shows them), polled only by the leader.
        self.feeds = self._new_feeds()
        self.lease = Lease(self.store, str(worker["name"]), ttl_s=float(worker["lease_ttl_s"]),
                           clock=self.clock, on_gain=self._lead, on_loss=self._follow)
        await self.lease.start()  # leads at once when no other worker does

        m = cfg["mqtt"]
        client_id = m["client_id"] if worker["name"] == "main" else \
            f"{m['client_id']}-{worker['name']}"
        self.mqtt = MqttIngest(self.ingest, asyncio.get_running_loop(), host=m["host"],
                               port=int(m["port"]), client_id=client_id,
                               keepalive_s=int(m["keepalive_s"]), username=m["user"],
                               password=m["password"], clock=self.clock,
                               ca=_resolve(m["ca"], self.base_dir) if m.get("ca") else None,
                               group=m["client_id"], leading=self.lease.leading,
                               session_expiry_s=int(m["session_expiry_s"]))
        self.mqtt.on_listening = self._listening
        self.mqtt.start()
        # After MQTT: what a first poll publishes goes through the session (Feeds.resend
        # catches up on anything that came while it was not connected yet).
        if self.lease.leading:
            self.feeds.start()
        log.info("gateway worker %s: %d sites, web on http://%s:%d/, MQTT %s:%d as %s%s",
                 worker["name"], len(sites), cfg["http"]["host"], self.http_port, m["host"],
                 m["port"], client_id, " (leader)" if self.lease.leading else "")

    def _new_feeds(self) -> Feeds:
        cfg = self.config
        assert self.crisis is not None and self.store is not None
        return Feeds(load_feeds(cfg["feeds"]), load_policy(cfg["feed_policy"]), self.crisis,
                     self.store, self._sites, self.clock)

    def _listening(self, since: float | None) -> None:
        """The MQTT session came up at `since` (None: went down): the engine's silence clock."""
        self._listening_since = since
        if self.engine is not None:
            self.engine.listening(since)

    async def _lead(self, epoch: int) -> None:
        """This worker took the lease: start the alert engine and notifier (from what the store
        holds: every site evaluated at once) and the feed poller."""
        assert self.store is not None and self.lease is not None
        cfg = self.config
        a = cfg["alerts"]
        if self._alert_config is not None:
            base_url = a["base_url"] or f"http://{cfg['http']['host']}:{self.http_port}/"
            engine = AlertEngine(self.store, self._alert_config, self.clock,
                                 senders=self.senders(), tick_s=float(a["tick_s"]),
                                 base_url=base_url, name=a["cap_sender"],
                                 exercise=FactsSource(self.store, self._exercise))
            store, lease = self.store, self.lease
            engine.active = lease.valid
            engine.claim = lambda nid, now: store.claim_notification(
                nid, LEADER, lease.holder, epoch, now, CLAIM_HOLD_S)
            engine.listening_since = self._listening_since
            if self.feeds is not None:
                engine.feeds = self.feeds.health  # the feed_failed rule (gateway scope)
            self.engine = engine
            engine.start()
            engine.mark_all()
            if self._relay is not None:
                self._relay.listen(engine.mark)
        if self.mqtt is not None:
            self.mqtt.set_leading(True)
            if self.feeds is not None and not self.feeds.running:
                self.feeds.start()

    async def _follow(self, why: str) -> None:
        """This worker lost (or gave up) the lease: stop the engine, the notifier and the feed
        poller before anything more is done; ingest and web go on."""
        engine, self.engine = self.engine, None
        if self._relay is not None:
            await asyncio.to_thread(self._relay.unlisten)
        if engine is not None:
            await engine.stop()
        if self.mqtt is not None:
            self.mqtt.set_leading(False)
        if self.feeds is not None and self.feeds.running:
            await self.feeds.stop()
            self.feeds = self._new_feeds()

    async def stop(self) -> None:
        if self.lease is not None:
            await self.lease.stop()  # stops the engine and the feeds; the lease is released
            self.lease = None
        if self.feeds is not None:
            await self.feeds.stop()
            self.feeds = None
        if self.mqtt is not None:
            await asyncio.to_thread(self.mqtt.stop)
            self.mqtt = None
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        if self._relay is not None:
            await asyncio.to_thread(self._relay.unlisten)
            self._relay = None
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
        if self.lease is not None:
            out["worker"] = self.lease.stats()
            try:
                held = self.store.lease(LEADER) if self.store is not None else None
            except Exception:  # noqa: BLE001 - the store is down: say so, not fail the page
                held = None
            out["worker"]["leader"] = held["holder"] if held and \
                float(held["expires"]) > self.clock() else None
        if self.mqtt is not None:
            out["mqtt"] = {"reannounced": self.mqtt.reannounced,
                           "gap_rebirths": self.mqtt.gap_rebirths}
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
