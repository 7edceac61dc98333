"""`make_app`: the whole web side, and the table of its routes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..auth import LoginThrottle, Sessions
from ..commands import CommandSender
from ..crisis import CrisisSender
from ..httpguard import Limits
from ..signage import SiteBus
from ..store import Store
from . import api, feeds, ops, pages
from .guard import (
    BASE_URL,
    BUS,
    CAP_SENDER,
    CLOCK,
    COMMANDS,
    CRISIS,
    INGEST_STATS,
    LIMITS,
    SECURE_COOKIE,
    SESSIONS,
    STORE,
    THROTTLE,
    TRUSTED_PROXIES,
    outer,
    security,
    security_headers,
)

GET, POST = "GET", "POST"
ROUTES: list[tuple[str, str, Any]] = [
    # pages
    (GET, "/", pages.overview_page),
    (GET, "/login", pages.login_page),
    (POST, "/login", pages.login_post),
    (POST, "/logout", pages.logout_post),
    (GET, "/sites/{id}", pages.site_page),
    (POST, "/sites/{id}/cmd/{name}", pages.command_confirm_post),
    (POST, "/sites/{id}/cmd/{name}/confirm", pages.command_send_post),
    (GET, "/alerts", pages.alerts_page),
    (POST, "/alerts/{id}/ack", pages.alert_ack_post),
    (GET, "/crisis", pages.crisis_page),
    (POST, "/crisis", pages.crisis_post),
    (GET, "/crisis/{id}", pages.crisis_detail_page),
    (POST, "/crisis/{id}", pages.crisis_update_post),
    (POST, "/crisis/{id}/withdraw", pages.crisis_withdraw_post),
    (GET, "/feeds", feeds.feeds_page_get),
    (POST, "/feeds/approve", feeds.feeds_approve_post),
    (GET, "/audit", pages.audit_page),
    (GET, "/signage/{id}", pages.signage_page),
    # the signage stream, static files, the CAP feed
    (GET, "/signage/{id}/events", api.signage_events),
    (GET, "/static/{name}", api.static_file),
    (GET, "/cap.atom", api.cap_feed),
    (GET, "/cap/{id}.xml", api.cap_one),
    (GET, "/cap/official/{id}.xml", api.cap_official),
    # the JSON API
    (GET, "/api/openapi.json", api.api_openapi),
    (POST, "/api/login", api.api_login),
    (POST, "/api/logout", api.api_logout),
    (GET, "/api/me", api.api_me),
    (GET, "/api/sites", api.api_sites),
    (GET, "/api/sites/{id}", api.api_site),
    (GET, "/api/sites/{id}/events", api.api_events),
    (GET, "/api/sites/{id}/history", api.api_history),
    (GET, "/api/sites/{id}/commands", api.api_commands),
    (POST, "/api/sites/{id}/commands", api.api_command_send),
    (GET, "/api/stats", api.api_stats),
    (GET, "/api/alerts", api.api_alerts),
    (GET, "/api/alerts/{id}", api.api_alert),
    (POST, "/api/alerts/{id}/ack", api.api_alert_ack),
    (GET, "/api/crisis", api.api_crisis_list),
    (POST, "/api/crisis", api.api_crisis_send),
    (GET, "/api/crisis/{id}", api.api_crisis_one),
    (POST, "/api/crisis/{id}", api.api_crisis_update),
    (POST, "/api/crisis/{id}/withdraw", api.api_crisis_withdraw),
    (GET, "/api/audit", api.api_audit),
    (GET, "/api/signage/{id}", api.api_signage),
    # operations: Prometheus, liveness, readiness (gateway/web/ops.py)
    (GET, "/metrics", ops.metrics),
    (GET, "/healthz", ops.healthz),
    (GET, "/readyz", ops.readyz),
]


def make_app(store: Store, clock: Callable[[], float] = time.time,
             ingest_stats: Callable[[], dict[str, Any]] = dict, *,
             cap_sender: str = "sot-gateway", base_url: str = "",
             crisis: CrisisSender | None = None, commands: CommandSender | None = None,
             bus: SiteBus | None = None,
             throttle: LoginThrottle | None = None, session_s: float = 12 * 3600,
             secure_cookie: bool = False, limits: Limits | None = None,
             trusted_proxies: frozenset[str] = frozenset()) -> web.Application:
    """The whole web side. `crisis` publishes crisis messages (None: the send form answers 503,
    as does a gateway without a broker connection); `commands` signs and publishes commands
    (None: no site can be commanded, the site page says why); `bus` wakes the signage streams.
    `throttle` gives the login throttle's numbers; its counters are kept in `store` whatever
    it had, as are the sessions (lasting `session_s`)."""
    app = web.Application(middlewares=[outer, security], client_max_size=64 * 1024)
    app.on_response_prepare.append(security_headers)
    app[LIMITS] = limits or Limits()
    app[TRUSTED_PROXIES] = frozenset(trusted_proxies)
    app[STORE] = store
    app[CLOCK] = clock
    app[INGEST_STATS] = ingest_stats
    app[CAP_SENDER] = cap_sender
    app[BASE_URL] = base_url
    # Sessions and the throttle's counters live in the store, so that every worker serving
    # this database knows every login and counts every failure.
    app[SESSIONS] = Sessions(store, clock, session_s)
    app[THROTTLE] = dataclasses.replace(throttle or LoginThrottle(clock), counters=store)
    app[BUS] = bus or SiteBus()

    async def end_streams(app: web.Application) -> None:
        await app[BUS].close()

    app.on_shutdown.append(end_streams)
    app[CRISIS] = crisis or CrisisSender(store, None, clock)
    app[COMMANDS] = commands or CommandSender(store, None, {}, clock)
    app[SECURE_COOKIE] = secure_cookie
    app[feeds.FEEDS] = lambda: None  # the service sets its running feeds (gateway/feeds/run.py)
    app[ops.OPS] = lambda: None  # the service sets its operations view (gateway/metrics.py)
    for method, path, handler in ROUTES:
        if method == GET:
            app.router.add_get(path, handler)  # and HEAD, as for any GET
        else:
            app.router.add_post(path, handler)
    return app
