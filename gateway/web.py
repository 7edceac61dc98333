"""The gateway's HTTP side: the coordinators' dashboard, the public signage pages and the JSON
API behind both. Every route is listed, with its role, in `gateway/openapi.json` (served at
`/api/openapi.json`; a test keeps the two in step).

Who may do what (gateway/auth.py):
    public       /login, /signage/<site> (+ /events, /api/signage/<site>), /static/*, the CAP
                 feed (/cap.atom, /cap/<id>.xml: made for other alerting systems to read),
                 /api/openapi.json, POST /api/login
    viewer       everything else that reads: overview, site pages, alerts, crisis messages, API
    coordinator  acknowledge alerts, send, update and withdraw crisis messages
    admin        the audit log

Every POST needs the session's CSRF token (form field `csrf` or header `X-CSRF-Token`); a
missing session gives 401 (API) or a redirect to /login (pages). The session's user is looked
up on every request (removed: logged out; demoted: the new role at once). Pages are rendered on
the server; everything that came from MQTT, configuration or a user is HTML-escaped, and every
output is cleaned of what it cannot carry (gateway/safetext.py). The only scripts are files
under /static/, so the Content-Security-Policy allows no inline script at all.

One of each, so a class of hostile input is handled at one place (docs/security.md, "The web"):
`security_headers` (every answer), `parse_id` (ids in URLs), `read_form` (POSTed forms),
`safe_next` (the redirect after login), `outer` (body time, unexpected errors) with
gateway/httpguard.py (header and idle time, connections per address).
A stale or lost site still shows its last known values, greyed and labelled, never as current
(unavailable is a value: docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp import web
from multidict import MultiDict

from .alerts.cap import atom_feed, cap_document, feed_alerts
from .alerts.cap import version as cap_version
from .auth import LoginThrottle, Session, Sessions, csrf_ok, role_at_least
from .crisis import CrisisSender
from .httpguard import Limits, guard_of
from .safetext import json_response
from .signage import SiteBus
from .store import MAX_EVENTS_LIMIT, AlertRecord, SiteSummary, Store

log = logging.getLogger(__name__)

REFRESH_S = 5

STORE = web.AppKey("store", Store)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
INGEST_STATS: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("ingest_stats")
CAP_SENDER = web.AppKey("cap_sender", str)
BASE_URL = web.AppKey("base_url", str)
SESSIONS = web.AppKey("sessions", Sessions)
THROTTLE = web.AppKey("throttle", LoginThrottle)
BUS = web.AppKey("bus", SiteBus)
CRISIS = web.AppKey("crisis", CrisisSender)
SECURE_COOKIE = web.AppKey("secure_cookie", bool)
LIMITS = web.AppKey("limits", Limits)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", frozenset[str])

SESSION = web.RequestKey("session", Session)
SESSION_COOKIE = "sot_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# Handlers that need more than a logged-in viewer, or less (public); set by the decorators.
_ROLE: dict[Any, str] = {}


def public(handler: Any) -> Any:
    _ROLE[handler] = "public"
    return handler


def needs(role: str) -> Callable[[Any], Any]:
    def mark(handler: Any) -> Any:
        _ROLE[handler] = role
        return handler
    return mark


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


@web.middleware
async def outer(request: web.Request, handler: Any) -> web.StreamResponse:
    """The connection's clock (gateway/httpguard.py), the body read within `body_s`, and an
    unexpected error answered as a plain 500 (with the security headers like every answer)."""
    guard = guard_of(request.transport)
    if guard is not None:
        guard.request_started()
    try:
        if request.body_exists:
            try:
                await asyncio.wait_for(request.read(), request.app[LIMITS].body_s)
            except TimeoutError:
                resp = json_response({"error": "request body too slow / för långsam begäran"},
                                     status=408)
                resp.force_close()
                return resp
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("web: %s %s failed", request.method, request.path)
        return json_response({"error": "internal error / internt fel"}, status=500)
    finally:
        if guard is not None:
            guard.request_done()


@web.middleware
async def security(request: web.Request, handler: Any) -> web.StreamResponse:
    """Authentication (the session's user is looked up again on every request, so a removed,
    demoted or re-passworded user loses the old rights at once), role check, CSRF check."""
    app = request.app
    token = request.cookies.get(SESSION_COOKIE)
    session = app[SESSIONS].get(token)
    if session is not None:
        session = app[SESSIONS].recheck(token, app[STORE].user(session.user))
    if session is not None:
        request[SESSION] = session
    route = request.match_info.route
    need = _ROLE.get(getattr(route, "handler", None), "viewer")
    if need != "public":
        if session is None:
            if _is_api(request) or request.method != "GET":
                return json_response({"error": "login required / inloggning krävs"},
                                     status=401)
            target = request.path_qs if request.path != "/" else "/"
            raise web.HTTPSeeOther(f"/login?next={_quote(target)}")
        if not role_at_least(session.role, need):
            return json_response({"error": f"needs role {need} / kräver rollen {need}"},
                                 status=403)
        if request.method == "POST":
            csrf = request.headers.get("X-CSRF-Token")
            if csrf is None and request.content_type == "application/x-www-form-urlencoded":
                csrf = str((await read_form(request)).get("csrf", ""))
            if not csrf_ok(session, csrf):
                return json_response(
                    {"error": "bad or missing CSRF token / ogiltig CSRF-token"}, status=403)
    return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer the app sends (pages, API, redirects, errors, the event
    stream) carries the security headers; a handler's own Cache-Control is kept."""
    _headers(response)


def _headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


_ID = re.compile(r"[0-9]{1,18}")


def parse_id(text: str) -> int | None:
    """A numeric id from a URL: ASCII digits only, at most 18 (fits SQLite's 64-bit integer);
    anything else (other Unicode digits such as "²", signs, 23 digits) is no id at all."""
    return int(text) if _ID.fullmatch(text) else None


def safe_next(value: str) -> str:
    r"""Where to go after login: a path on this site, else "/". Browsers drop tab, CR and LF
    from a URL and read a backslash as a slash, so "/\t/evil" or "/\evil" would leave the
    site: any control character, space, backslash, or a second leading slash gives "/"."""
    if not value.startswith("/") or len(value) > 2000:
        return "/"
    if any(c <= " " or c.isspace() or c in "\\\x7f" for c in value) or value.startswith("//"):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return quote(value, safe="/?&=%#:@!$'()*+,;~-._")


async def read_form(request: web.Request) -> MultiDict[str]:
    """The fields of a POSTed form. Only application/x-www-form-urlencoded (every form here);
    bytes that are not UTF-8 and malformed bodies are the client's error (400), never a 500."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise web.HTTPUnsupportedMediaType(
            text='{"error": "send application/x-www-form-urlencoded"}',
            content_type="application/json")
    body = await request.read()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=200)
    except ValueError:  # UnicodeDecodeError is one
        raise web.HTTPBadRequest(text='{"error": "malformed form / felaktigt formulär"}',
                                 content_type="application/json") from None
    return MultiDict(pairs)


def _quote(path: str) -> str:
    return quote(path, safe="/")


def _local_tz() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo("Europe/Stockholm")
    except Exception:  # no tz database on this system: show UTC and say so
        return UTC


TZ = _local_tz()

# (css class, Swedish, English)
MODES: dict[str, tuple[str, str, str]] = {
    "normal": ("ok", "Normal drift", "Normal operation"),
    "grid_lost": ("warn", "Nätström borta – väntar på reservkraft",
                  "Grid lost – waiting for backup"),
    "on_backup": ("backup", "Reservkraft i drift", "On backup power"),
    "backup_failed": ("alarm", "Reservkraft har inte startat", "Backup power failed"),
    "degraded": ("degraded", "Begränsad övervakning", "Degraded monitoring"),
}
GRID: dict[str, tuple[str, str]] = {
    "ok": ("Ok", "OK"),
    "lost": ("Borta", "Lost"),
    "rejected": ("Utanför gränsvärden", "Out of limits"),
    "unknown": ("Okänd", "Unknown"),
}
GENSET: dict[str, tuple[str, str]] = {
    "stopped": ("Stoppad", "Stopped"),
    "starting": ("Startar", "Starting"),
    "running": ("I drift", "Running"),
    "cooling": ("Kyls ned", "Cooling down"),
    "fault": ("Fel", "Fault"),
    "unknown": ("Okänd", "Unknown"),
}


def make_app(store: Store, clock: Callable[[], float] = time.time,
             ingest_stats: Callable[[], dict[str, Any]] = dict, *,
             cap_sender: str = "sot-gateway", base_url: str = "",
             crisis: CrisisSender | None = None, bus: SiteBus | None = None,
             throttle: LoginThrottle | None = None, session_s: float = 12 * 3600,
             secure_cookie: bool = False, limits: Limits | None = None,
             trusted_proxies: frozenset[str] = frozenset()) -> web.Application:
    """The whole web side. `crisis` publishes crisis messages (None: the send form answers 503,
    as does a gateway without a broker connection); `bus` wakes the signage streams."""
    from . import pages

    app = web.Application(middlewares=[outer, security], client_max_size=64 * 1024)
    app.on_response_prepare.append(security_headers)
    app[LIMITS] = limits or Limits()
    app[TRUSTED_PROXIES] = frozenset(trusted_proxies)
    app[STORE] = store
    app[CLOCK] = clock
    app[INGEST_STATS] = ingest_stats
    app[CAP_SENDER] = cap_sender
    app[BASE_URL] = base_url
    app[SESSIONS] = Sessions(clock, session_s)
    app[THROTTLE] = throttle or LoginThrottle(clock)
    app[BUS] = bus or SiteBus()

    async def end_streams(app: web.Application) -> None:
        await app[BUS].close()

    app.on_shutdown.append(end_streams)
    app[CRISIS] = crisis or CrisisSender(store, None, clock)
    app[SECURE_COOKIE] = secure_cookie
    r = app.router
    r.add_get("/api/alerts", api_alerts)
    r.add_get("/api/alerts/{id}", api_alert)
    r.add_get("/cap.atom", cap_feed)
    r.add_get("/cap/{id}.xml", cap_one)
    r.add_get("/", pages.overview_page)
    r.add_get("/api/sites", api_sites)
    r.add_get("/api/sites/{id}", api_site)
    r.add_get("/api/sites/{id}/events", api_events)
    r.add_get("/api/stats", api_stats)
    pages.add_routes(app)
    return app


# --- JSON API --------------------------------------------------------------------------------


def _not_found(site: str) -> web.Response:
    return json_response({"error": "unknown site", "site": site}, status=404)


async def api_sites(request: web.Request) -> web.Response:
    app = request.app
    return json_response([s.as_json() for s in app[STORE].sites_overview(app[CLOCK]())])


async def api_site(request: web.Request) -> web.Response:
    app, site = request.app, request.match_info["id"]
    summary = app[STORE].site_overview(site, app[CLOCK]())
    if summary is None:
        return _not_found(site)
    latest = app[STORE].latest(site) or {"status": None, "birth": None, "state": None}
    return json_response({"site": summary.as_json(), **latest})


async def api_events(request: web.Request) -> web.Response:
    app, site = request.app, request.match_info["id"]
    if app[STORE].site_overview(site, app[CLOCK]()) is None:
        return _not_found(site)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        return json_response({"error": f"limit must be 1..{MAX_EVENTS_LIMIT}"}, status=400)
    return json_response(app[STORE].events(site, limit))


async def api_stats(request: web.Request) -> web.Response:
    app = request.app
    return json_response({**app[INGEST_STATS](), "store": app[STORE].stats()})


def alert_json(a: AlertRecord) -> dict[str, Any]:
    return {"id": a.id, "key": a.key, "rule": a.rule, "site": a.site,
            "municipality": a.municipality, "detail": a.detail, "severity": a.severity,
            "status": a.status, "started": a.started, "fired": a.fired, "resolved": a.resolved,
            "resolve_reason": a.resolve_reason, "level": a.level, "notified": a.notified,
            "notify_count": a.notify_count, "incident": a.incident, "acked_by": a.acked_by,
            "acked_at": a.acked_at, "ack_note": a.ack_note, "sv": a.sv, "en": a.en,
            "data": a.data}


async def api_alerts(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if request.query.get("all") == "1":
        rows = store.alerts(open_only=False, limit=MAX_EVENTS_LIMIT)
    else:
        rows = store.alerts()
    return json_response([alert_json(a) for a in rows])


def _alert_or_404(request: web.Request) -> AlertRecord | web.Response:
    ref = request.match_info["id"]
    n = parse_id(ref)
    a = request.app[STORE].alert(n) if n is not None else None
    if a is None:
        return json_response({"error": "unknown alert", "id": ref}, status=404)
    return a


async def api_alert(request: web.Request) -> web.Response:
    a = _alert_or_404(request)
    if isinstance(a, web.Response):
        return a
    store = request.app[STORE]
    return json_response({**alert_json(a), "acks": store.acks(a.id),
                              "notifications": store.notifications(a.id)})


_HOST = re.compile(r"(?:(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}|\[[0-9A-Fa-f:.]{2,45}\])"
                   r"(?::([0-9]{1,5}))?")


def _base_url(request: web.Request) -> str:
    """Absolute links for the CAP feed: the configured base URL; else the Host the reader used
    if it is a plain host[:port]; else the address of the socket it came in on (a Host header
    is the client's text: never a 500, never user info or a path in a link)."""
    if request.app[BASE_URL]:
        return request.app[BASE_URL]
    scheme = "https" if request.transport is not None and \
        request.transport.get_extra_info("sslcontext") else "http"
    host = request.headers.get("Host", "")
    m = _HOST.fullmatch(host)
    if m and (m.group(1) is None or int(m.group(1)) <= 65535):
        return f"{scheme}://{host}"
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sock, tuple) or len(sock) < 2:
        return f"{scheme}://localhost"
    addr = f"[{sock[0]}]" if ":" in str(sock[0]) else str(sock[0])
    return f"{scheme}://{addr}:{sock[1]}"


@public
async def cap_feed(request: web.Request) -> web.Response:
    app = request.app
    store = app[STORE]
    body = atom_feed(store.alerts(), sender=app[CAP_SENDER], now=app[CLOCK](),
                     base_url=_base_url(request), versions=store.cap_versions)
    return web.Response(text=body, content_type="application/atom+xml", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


@public
async def cap_one(request: web.Request) -> web.Response:
    a = _alert_or_404(request)
    if isinstance(a, web.Response):
        return a
    if not feed_alerts([a]):
        return json_response({"error": "alert is not active", "id": a.id}, status=404)
    app = request.app
    base, sender = _base_url(request), app[CAP_SENDER]
    v = cap_version(a, app[STORE].cap_versions, app[CLOCK](), sender=sender)
    return web.Response(text=cap_document(a, sender=sender, version=v, base_url=base),
                        content_type="application/cap+xml", charset="utf-8")


# --- overview page ---------------------------------------------------------------------------


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def both(sv: str, en: str) -> str:
    return f'{e(sv)} <span class="en">/ {e(en)}</span>'


def _num(value: Any, decimals: int) -> str:
    """Swedish number format: decimal comma."""
    if not isinstance(value, int | float):
        return "–"
    return f"{value:.{decimals}f}".replace(".", ",")


def _age(seconds: float) -> tuple[str, str]:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s", f"{s} s"
    if s < 7200:
        return f"{s // 60} min", f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} tim", f"{s // 3600} h"
    return f"{s // 86400} dygn", f"{s // 86400} days"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).strftime("%Y-%m-%d %H:%M:%S")


def _row(site: SiteSummary) -> str:
    has_state = site.mode is not None
    lost = site.status == "lost"
    stale = bool(site.stale)
    current = has_state and not lost and not stale

    place = (f'<td class="site"><span class="name">{e(site.name)}</span>'
             f'<span class="muni">{e(site.municipality)}</span></td>')

    if lost:
        contact = f'<td class="contact lost">{both("Förlorad kontakt", "Connection lost")}</td>'
    elif not has_state:
        contact = f'<td class="contact nodata">{both("Ingen data", "No data")}</td>'
    elif stale:
        contact = f'<td class="contact stale">{both("Inaktuell", "Stale")}</td>'
    else:
        contact = f'<td class="contact ok">{both("Ansluten", "Online")}</td>'

    if has_state:
        key = site.mode or ""
        cls, sv, en = MODES.get(key, ("unknown", key, key))
        note = "" if current else \
            f'<span class="note">{both("senast kända", "last known")}</span>'
        mode = f'<td class="mode {e(cls)}">{both(sv, en)}{note}</td>'
    else:
        mode = '<td class="mode nodata">–</td>'

    grid_sv, grid_en = GRID.get(site.grid_state or "", (site.grid_state or "–", ""))
    genset_sv, genset_en = GENSET.get(site.genset_state or "",
                                      (site.genset_state or "–", ""))
    grid = f'<td class="grid">{both(grid_sv, grid_en) if grid_en else e(grid_sv)}</td>'
    genset = f'<td class="genset">{both(genset_sv, genset_en) if genset_en else e(genset_sv)}</td>'

    pct = site.fuel_pct
    fuel = f'<td class="num">{_num(pct, 0)} %</td>' if pct is not None else \
        '<td class="num">–</td>'
    hours = site.hours_left
    low = isinstance(hours, int | float) and hours < 24
    hours_cell = (f'<td class="num{" low" if low else ""}">'
                  f'{_num(hours, 1 if isinstance(hours, float) and hours < 10 else 0)} h</td>'
                  if hours is not None else '<td class="num">–</td>')

    devices = site.devices or {}
    offline = sorted(name for name, s in devices.items() if s not in ("online", "mismatch"))
    wrong = sorted(name for name, s in devices.items() if s == "mismatch")
    parts = []
    if offline:
        parts.append(f'{both("Ur drift", "Offline")}: {", ".join(e(n) for n in offline)}')
    if wrong:
        # It answers, but is not the device its profile describes: never trusted, never written.
        parts.append(f'{both("Fel enhet", "Wrong device")}: {", ".join(e(n) for n in wrong)}')
    if not devices:
        dev = "<td>–</td>"
    elif parts:
        dev = f'<td class="devices bad">{"<br>".join(parts)}</td>'
    else:
        dev = f'<td class="devices">{both("Alla svarar", "All online")} ({len(devices)})</td>'

    if site.updated_ts is not None and site.age_s is not None:
        age_sv, age_en = _age(site.age_s)
        updated = (f'<td class="when">{e(_when(site.updated_ts))}'
                   f'<span class="age">{both(f"för {age_sv} sedan", f"{age_en} ago")}</span></td>')
    else:
        updated = "<td>–</td>"

    row_cls = "current" if current else "notcurrent"
    return (f'<tr class="{row_cls}" data-site="{e(site.id)}">{place}{contact}{mode}{grid}'
            f'{genset}{fuel}{hours_cell}{dev}{updated}</tr>')
