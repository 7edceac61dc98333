"""The HTTP plumbing every route shares: the app's keys, the role of each handler, and one place
for each class of hostile input (docs/security.md, "The web"): `security_headers` (every
answer), `parse_id` (ids in URLs), `read_form` (POSTed forms), `safe_next` (the redirect after
login), `outer` (body time, unexpected errors) with gateway/httpguard.py (header and idle time,
connections per address), `security` (session, role, CSRF)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp import web
from multidict import MultiDict

from ..auth import LoginThrottle, Session, Sessions, csrf_ok, role_at_least
from ..commands import CommandSender
from ..crisis import CrisisSender
from ..httpguard import Limits, guard_of
from ..safetext import json_response
from ..signage import SiteBus
from ..store import Store

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
# Signed commands to the sites (gateway/commands.py): the keys and the gateway's MQTT session.
COMMANDS = web.AppKey("commands", CommandSender)
SECURE_COOKIE = web.AppKey("secure_cookie", bool)
LIMITS = web.AppKey("limits", Limits)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", frozenset[str])
# The sites' test-run schedules (gateway/exercise.py), set by the service from the site configs.
EXERCISE_SCHEDULES: web.AppKey[dict[str, Any]] = web.AppKey("exercise_schedules")

SESSION = web.RequestKey("session", Session)
SESSION_COOKIE = "sot_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# Handlers that need more than a logged-in viewer, or less (public); set by the decorators.
ROLES: dict[Any, str] = {}


def public(handler: Any) -> Any:
    ROLES[handler] = "public"
    return handler


def needs(role: str) -> Callable[[Any], Any]:
    def mark(handler: Any) -> Any:
        ROLES[handler] = role
        return handler
    return mark


def role_of(handler: Any) -> str:
    """The role a handler needs: public, viewer (the default), coordinator or admin."""
    return ROLES.get(handler, "viewer")


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def may(request: web.Request, role: str) -> bool:
    """Whether the request's session holds at least `role`."""
    s = session_of(request)
    return s is not None and role_at_least(s.role, role)


def is_api(request: web.Request) -> bool:
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
    """Authentication (the session is read from the store, so a login on any worker counts
    here; its user is looked up again on every request, so a removed, demoted or re-passworded
    user loses the old rights at once), role check, CSRF check."""
    app = request.app
    token = request.cookies.get(SESSION_COOKIE)
    session = app[SESSIONS].get(token)
    if session is not None:
        session = app[SESSIONS].recheck(token, app[STORE].user(session.user), session)
    if session is not None:
        request[SESSION] = session
    route = request.match_info.route
    need = role_of(getattr(route, "handler", None))
    if need != "public":
        if session is None:
            if is_api(request) or request.method != "GET":
                return json_response({"error": "login required / inloggning krävs"},
                                     status=401)
            target = request.path_qs if request.path != "/" else "/"
            raise web.HTTPSeeOther(f"/login?next={quote(target, safe='/')}")
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
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")


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
