"""The JSON API, the CAP feed, the signage data and event stream, static files and the API
description. Every route and its role is in gateway/web/openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from ..alerts.cap import atom_feed, cap_document, feed_alerts, official_document, official_version
from ..alerts.cap import version as cap_version
from ..safetext import dumps, json_response
from ..signage import KEEPALIVE_S, RECHECK_S, comparable, signage_view
from ..store import MAX_EVENTS_LIMIT, AlertRecord
from . import actions
from .guard import (
    BASE_URL,
    BUS,
    CAP_SENDER,
    CLOCK,
    INGEST_STATS,
    SESSION_COOKIE,
    SESSIONS,
    STORE,
    needs,
    parse_id,
    public,
    session_of,
)

STATIC = Path(__file__).resolve().parent.parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
OPENAPI = Path(__file__).resolve().parent / "openapi.json"


def _not_found(site: str) -> web.Response:
    return json_response({"error": "unknown site", "site": site}, status=404)


# --- sites -------------------------------------------------------------------------------------


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


async def api_history(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    if app[STORE].site_overview(sid, app[CLOCK]()) is None:
        return _not_found(sid)
    try:
        since = float(request.query.get("since", "0"))
    except ValueError:
        return json_response({"error": "since must be a number"}, status=400)
    return json_response(app[STORE].state_history(sid, since=since, limit=2000))


async def api_stats(request: web.Request) -> web.Response:
    app = request.app
    return json_response({**app[INGEST_STATS](), "store": app[STORE].stats()})


# --- login -------------------------------------------------------------------------------------


@public
async def api_login(request: web.Request) -> web.Response:
    # JSON only: a cross-site form cannot send application/json without a CORS preflight,
    # which this server never grants.
    if request.content_type != "application/json":
        return json_response({"error": "send application/json"}, status=415)
    try:
        body = await request.json()
        user, password = str(body["user"])[:64], str(body["password"])[:1024]
    except (ValueError, KeyError, TypeError):
        return json_response({"error": "need user and password"}, status=400)
    row, err, status = await actions.authenticate(request, user, password)
    if row is None:
        return json_response({"error": err}, status=status)
    resp = json_response({"user": row["name"], "role": row["role"]})
    csrf = actions.start_session(request, resp, row)
    resp.text = json.dumps({"user": row["name"], "role": row["role"], "csrf": csrf})
    return resp


async def api_logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].drop(request.cookies.get(SESSION_COOKIE))
    resp = json_response({"ok": True})
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


async def api_me(request: web.Request) -> web.Response:
    s = session_of(request)
    assert s is not None
    return json_response({"user": s.user, "role": s.role, "csrf": s.csrf})


# --- alerts and the CAP feed -------------------------------------------------------------------


async def api_alerts(request: web.Request) -> web.Response:
    store = request.app[STORE]
    if request.query.get("all") == "1":
        rows = store.alerts(open_only=False, limit=MAX_EVENTS_LIMIT)
    else:
        rows = store.alerts()
    return json_response([actions.alert_json(a) for a in rows])


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
    return json_response({**actions.alert_json(a), "acks": store.acks(a.id),
                          "notifications": store.notifications(a.id)})


@needs("coordinator")
async def api_alert_ack(request: web.Request) -> web.Response:
    note = ""
    if request.can_read_body and request.content_type == "application/json":
        with contextlib.suppress(ValueError, AttributeError):
            note = str((await request.json()).get("note", ""))
    status, body = actions.ack(request, request.match_info["id"], note)
    return json_response(body, status=status)


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
                     base_url=_base_url(request), versions=store.cap_versions,
                     official=store.official_shown(),
                     official_versions=store.official_cap_versions)
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


@public
async def cap_official(request: web.Request) -> web.Response:
    """An official alert the gateway shows, as its CAP feed republishes it (naming the origin);
    404 once it is no longer shown anywhere."""
    app = request.app
    cid = request.match_info["id"]
    o = next((x for x in app[STORE].official_shown() if x["crisis_id"] == cid), None)
    if o is None:
        return json_response({"error": "official alert is not shown", "id": cid}, status=404)
    base, sender = _base_url(request), app[CAP_SENDER]
    v = official_version(o, app[STORE].official_cap_versions, app[CLOCK](), sender=sender)
    return web.Response(text=official_document(o, sender=sender, version=v, base_url=base),
                        content_type="application/cap+xml", charset="utf-8")


# --- crisis messages ---------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    if request.content_type != "application/json":
        return None
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _str_list(v: Any) -> list[str] | None:
    """A JSON list of strings (absent: empty); anything else is the client's error."""
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return None
    return list(v)


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if v is None or isinstance(v, str) else str(v))
            for k, v in ((k, body.get(k)) for k in actions.FIELDS)}


@needs("coordinator")
async def api_crisis_send(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None:
        return json_response({"error": "send a JSON object"}, status=400)
    sites, munis = _str_list(body.get("sites")), _str_list(body.get("municipalities"))
    if sites is None or munis is None:
        return json_response({"error": "sites and municipalities are lists of strings"},
                             status=400)
    status, out, _ = actions.send(request, _fields(body), sites, munis)
    return json_response(out, status=status)


@needs("coordinator")
async def api_crisis_update(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None:
        return json_response({"error": "send a JSON object"}, status=400)
    status, out, _ = actions.update(request, request.match_info["id"], _fields(body))
    return json_response(out, status=status)


@needs("coordinator")
async def api_crisis_withdraw(request: web.Request) -> web.Response:
    status, body, _ = actions.withdraw(request, request.match_info["id"])
    return json_response(body, status=status)


async def api_crisis_list(request: web.Request) -> web.Response:
    store = request.app[STORE]
    delivery = store.crisis_deliveries()
    return json_response([{**m, "delivery": delivery.get(m["id"], [])}
                          for m in store.crisis_messages()])


async def api_crisis_one(request: web.Request) -> web.Response:
    store = request.app[STORE]
    m = store.crisis_message(request.match_info["id"])
    if m is None:
        return json_response({"error": "unknown message"}, status=404)
    return json_response({**m, "delivery": store.crisis_delivery(crisis_id=m["id"])})


# --- audit -------------------------------------------------------------------------------------


@needs("admin")
async def api_audit(request: web.Request) -> web.Response:
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        return json_response({"error": "limit must be 1..1000"}, status=400)
    return json_response(request.app[STORE].audit_log(limit))


# --- signage -----------------------------------------------------------------------------------


@public
async def api_signage(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    view = signage_view(app[STORE], sid, app[CLOCK]())
    if view is None:
        return _not_found(sid)
    return json_response(view)


@public
async def signage_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `event: state` with the whole view on connect and on every change;
    a comment line every KEEPALIVE_S so proxies and the browser know the stream is alive."""
    app, sid = request.app, request.match_info["id"]
    store, bus, clock = app[STORE], app[BUS], app[CLOCK]
    view = signage_view(store, sid, clock())
    if view is None:
        return _not_found(sid)
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store",
               "X-Accel-Buffering": "no"}
    if request.method == "HEAD":
        return web.Response(headers=headers)  # what a GET would answer, without the stream
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    seen = bus.version[sid]
    last = comparable(view)
    last_sent = asyncio.get_running_loop().time()

    async def send(v: dict[str, Any]) -> None:
        await resp.write(b"event: state\ndata: " + dumps(v).encode() + b"\n\n")

    try:
        await resp.write(b"retry: 3000\n\n")
        await send(view)
        while True:
            seen = await bus.wait(sid, seen, RECHECK_S)
            transport = request.transport
            if bus.closed or transport is None or transport.is_closing():
                break  # shutting down, or the screen went away: end within RECHECK_S
            view = signage_view(store, sid, clock())
            if view is None:
                break
            now = asyncio.get_running_loop().time()
            if comparable(view) != last:
                last = comparable(view)
                await send(view)
                last_sent = now
            elif now - last_sent >= KEEPALIVE_S:
                await resp.write(b": keepalive\n\n")
                last_sent = now
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return resp


# --- static files and the API description ------------------------------------------------------


@public
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES \
            or not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix],
                        charset="utf-8", headers={"Cache-Control": "max-age=300"})


@public
async def api_openapi(request: web.Request) -> web.Response:
    return web.Response(text=OPENAPI.read_text(encoding="utf-8"),
                        content_type="application/json", charset="utf-8")



# --- signed commands ---------------------------------------------------------------------------


async def api_commands(request: web.Request) -> web.Response:
    app, site = request.app, request.match_info["id"]
    now = app[CLOCK]()
    if app[STORE].site_overview(site, now) is None:
        return _not_found(site)
    return json_response({"site": site, "commands": [
        actions.command_json(r, now) for r in app[STORE].commands(site, 20)]})


@needs("coordinator")
async def api_command_send(request: web.Request) -> web.Response:
    """No confirm step here: a script means what it sends (the dashboard asks first)."""
    body = await _json_body(request)
    if body is None:
        return json_response({"error": "send a JSON object"}, status=400)
    status, out, _ = actions.command_send(request, request.match_info["id"],
                                          str(body.get("name", "")), body)
    return json_response(out, status=status)
