"""The dashboard's pages, the signage page, and the JSON API for login, crisis messages, alert
acknowledgement, audit and signage. Registered by `gateway.web.make_app`; the rules of who may
call what are in `gateway/web.py`'s docstring and `gateway/openapi.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from pathlib import Path
from typing import Any

from aiohttp import web

from . import crisis as crisis_mod
from .auth import check_login, role_at_least
from .model import SiteSummary
from .safetext import clean, dumps, json_response
from .signage import KEEPALIVE_S, RECHECK_S, comparable, signage_view
from .web import (
    BUS,
    CLOCK,
    CRISIS,
    MODES,
    REFRESH_S,
    SECURE_COOKIE,
    SESSION_COOKIE,
    SESSIONS,
    STORE,
    THROTTLE,
    TRUSTED_PROXIES,
    TZ,
    _num,
    _row,
    _when,
    alert_json,
    both,
    e,
    needs,
    parse_id,
    public,
    read_form,
    safe_next,
    session_of,
)

log = logging.getLogger(__name__)
_XFF_IGNORED = False  # logged once

STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
OPENAPI = Path(__file__).resolve().parent / "openapi.json"
LOGIN_CSRF_COOKIE = "sot_login"
SEVERITY_TEXT = {"info": ("Information", "Information"), "warning": ("Varning", "Warning"),
                 "severe": ("Allvarligt", "Severe")}
PRODUCTS = {"diesel": "Diesel", "petrol": "Bensin", "hvo": "HVO", "e85": "E85"}
POWER_TEXT = {"grid": ("Nätström", "Grid power"), "backup": ("Reservkraft", "Backup power"),
              "none": ("Ingen ström", "No power")}


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login_post)
    r.add_post("/logout", logout_post)
    r.add_get("/sites/{id}", site_page)
    r.add_get("/alerts", alerts_page)
    r.add_post("/alerts/{id}/ack", alert_ack_post)
    r.add_get("/crisis", crisis_page)
    r.add_post("/crisis", crisis_post)
    r.add_get("/crisis/{id}", crisis_detail_page)
    r.add_post("/crisis/{id}", crisis_update_post)
    r.add_post("/crisis/{id}/withdraw", crisis_withdraw_post)
    r.add_get("/audit", audit_page)
    r.add_get("/signage/{id}", signage_page)
    r.add_get("/signage/{id}/events", signage_events)
    r.add_get("/static/{name}", static_file)
    r.add_get("/api/openapi.json", api_openapi)
    r.add_post("/api/login", api_login)
    r.add_post("/api/logout", api_logout)
    r.add_get("/api/me", api_me)
    r.add_get("/api/sites/{id}/history", api_history)
    r.add_post("/api/alerts/{id}/ack", api_alert_ack)
    r.add_get("/api/crisis", api_crisis_list)
    r.add_post("/api/crisis", api_crisis_send)
    r.add_get("/api/crisis/{id}", api_crisis_one)
    r.add_post("/api/crisis/{id}", api_crisis_update)
    r.add_post("/api/crisis/{id}/withdraw", api_crisis_withdraw)
    r.add_get("/api/audit", api_audit)
    r.add_get("/api/signage/{id}", api_signage)


# --- layout ----------------------------------------------------------------------------------


def html_response(body: str, status: int = 200) -> web.Response:
    """Every HTML page goes out through here: cleaned of what no page may carry
    (gateway/safetext.py), so a lone surrogate or a control character from a site cannot break
    the page."""
    return web.Response(text=clean(body), status=status, content_type="text/html",
                        charset="utf-8")


def layout(request: web.Request, title_sv: str, title_en: str, body: str, *,
           refresh: bool = False) -> web.Response:
    s = session_of(request)
    nav = ""
    if s is not None:
        links = [("/", "Översikt", "Overview"), ("/alerts", "Larm", "Alerts"),
                 ("/crisis", "Krismeddelanden", "Crisis messages")]
        if role_at_least(s.role, "admin"):
            links.append(("/audit", "Logg", "Audit log"))
        items = "".join(f'<a href="{h}"{" class=cur" if request.path == h else ""}>'
                        f'{both(sv, en)}</a>' for h, sv, en in links)
        nav = (f'<nav>{items}<span class="who">{e(s.user)} ({e(s.role)})'
               f'<form method="post" action="/logout" class="inline">'
               f'<input type="hidden" name="csrf" value="{e(s.csrf)}">'
               f'<button type="submit">{both("Logga ut", "Log out")}</button></form></span>'
               f'</nav>')
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return html_response(f"""<!DOCTYPE html>
<html lang="sv">
<head>
<meta charset="utf-8">
{meta}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title_sv)} / {e(title_en)} – SOT-punkter</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head>
<body>
{nav}
<main>
<h1>{both(title_sv, title_en)}</h1>
{body}
</main>
</body>
</html>
""")


def csrf_field(request: web.Request) -> str:
    s = session_of(request)
    return f'<input type="hidden" name="csrf" value="{e(s.csrf if s else "")}">'


# --- login -----------------------------------------------------------------------------------


def _client_ip(request: web.Request) -> str:
    """The client's address for the login throttle and the audit log. Behind a reverse proxy
    every request comes from the proxy; only when the peer is one of the configured
    `trusted_proxies` is the last address of its X-Forwarded-For taken (the one that proxy
    added), never a header from anyone else."""
    global _XFF_IGNORED
    peer = request.remote or "unknown"
    forwarded = request.headers.getall("X-Forwarded-For", [])
    if peer in request.app[TRUSTED_PROXIES]:
        hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    elif forwarded and not _XFF_IGNORED:
        _XFF_IGNORED = True
        log.warning("web: X-Forwarded-For from %s ignored; if that is your reverse proxy, list "
                    "it in [web] trusted_proxies (else every client shares its login throttle)",
                    peer)
    return peer


def _login_form(next_url: str, token: str, message: str = "") -> str:
    msg = f'<p class="error" role="alert">{message}</p>' if message else ""
    sub = both("Kommunens översikt över SOT-punkterna", "The municipality's SOT-point dashboard")
    return f"""<p class="sub">{sub}</p>{msg}
<form method="post" action="/login" class="login">
<input type="hidden" name="login_csrf" value="{e(token)}">
<input type="hidden" name="next" value="{e(next_url)}">
<label>{both("Användarnamn", "User name")}<input name="user" autocomplete="username" required
 autofocus></label>
<label>{both("Lösenord", "Password")}<input name="password" type="password"
 autocomplete="current-password" required></label>
<button type="submit">{both("Logga in", "Log in")}</button>
</form>"""


def _login_token(request: web.Request) -> str:
    """The login form's double-submit token: the one the browser already holds, if any, so a
    second GET of /login (a favicon redirected there, another tab) does not void the form."""
    import secrets

    old = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return old if 24 <= len(old) <= 64 and old.replace("-", "").replace("_", "").isalnum() \
        else secrets.token_urlsafe(24)


@public
async def login_page(request: web.Request) -> web.Response:
    token = _login_token(request)
    resp = layout(request, "Logga in", "Log in",
                  _login_form(safe_next(request.query.get("next", "/")), token))
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                    secure=request.app[SECURE_COOKIE])
    return resp


async def _authenticate(request: web.Request, user: str, password: str
                        ) -> tuple[dict[str, Any] | None, str, int]:
    """(user row, error text, status). Applies the throttle before looking at the password."""
    app = request.app
    ip = _client_ip(request)
    throttle = app[THROTTLE]
    wait = throttle.locked_for(ip, user)
    if wait > 0:
        if wait < 120:
            sv = en = f"{math.ceil(wait)} s"
        else:
            sv = en = f"{math.ceil(wait / 60)} min"
        return None, (f"För många misslyckade inloggningar. Försök igen om {sv}. / "
                      f"Too many failed logins. Try again in {en}."), 429
    row = app[STORE].user(user) if user else None
    # scrypt takes ~50 ms: off the loop, so signage streams keep flowing meanwhile
    ok = await asyncio.to_thread(check_login, row["pwhash"] if row else None, password)
    if not ok:
        throttle.failed(ip, user)
        app[STORE].add_audit(app[CLOCK](), user[:64] or "-", "login_failed", ip)
        return None, "Fel användarnamn eller lösenord. / Wrong user name or password.", 401
    throttle.succeeded(ip, user)
    return row, "", 200


def _start_session(request: web.Request, resp: web.StreamResponse,
                   row: dict[str, Any]) -> str:
    old = request.cookies.get(SESSION_COOKIE)
    request.app[SESSIONS].drop(old)  # a new id at login: no session fixation
    s = request.app[SESSIONS].create(row["name"], row["role"], row.get("pwhash", ""))
    resp.set_cookie(SESSION_COOKIE, s.token, httponly=True, samesite="Strict", path="/",
                    secure=request.app[SECURE_COOKIE])
    request.app[STORE].add_audit(request.app[CLOCK](), s.user, "login", _client_ip(request))
    return s.csrf


@public
async def login_post(request: web.Request) -> web.StreamResponse:
    import hmac

    form = await read_form(request)
    next_url = safe_next(str(form.get("next", "/")))
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not token or not hmac.compare_digest(token, str(form.get("login_csrf", ""))):
        return json_response({"error": "bad or missing CSRF token / ogiltig CSRF-token"},
                             status=403)
    row, err, status = await _authenticate(request, str(form.get("user", ""))[:64],
                                           str(form.get("password", ""))[:1024])
    if row is None:
        new = _login_token(request)
        resp = layout(request, "Logga in", "Log in", _login_form(next_url, new, e(err)))
        resp.set_status(status)
        resp.set_cookie(LOGIN_CSRF_COOKIE, new, httponly=True, samesite="Strict", path="/login",
                        secure=request.app[SECURE_COOKIE])
        return resp
    resp = web.HTTPSeeOther(next_url)
    _start_session(request, resp, row)
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise resp


async def logout_post(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].drop(request.cookies.get(SESSION_COOKIE))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


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
    row, err, status = await _authenticate(request, user, password)
    if row is None:
        return json_response({"error": err}, status=status)
    resp = json_response({"user": row["name"], "role": row["role"]})
    csrf = _start_session(request, resp, row)
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


# --- overview: table and map -----------------------------------------------------------------


def site_map(sites: list[SiteSummary], width: int = 560, height: int = 420) -> str:
    """The sites placed by latitude/longitude on a plain SVG (no tiles, nothing fetched):
    equirectangular with longitude scaled by cos(mid latitude), which is true to shape over a
    county. Colour by mode; grey with a dashed ring when stale or lost."""
    if not sites:
        return ""
    lats = [float(s.lat) for s in sites]
    lons = [float(s.lon) for s in sites]
    kx = math.cos(math.radians(sum(lats) / len(lats)))
    pad = 0.15
    x0, x1 = min(lons) * kx, max(lons) * kx
    y0, y1 = min(lats), max(lats)
    span = max(x1 - x0, y1 - y0, 0.05) * (1 + 2 * pad)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = min(width, height) / span

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (width / 2 + (lon * kx - cx) * scale, height / 2 - (lat - cy) * scale)

    colours = {"ok": "#2e8b3d", "warn": "#e08a00", "backup": "#c7a600", "alarm": "#c62828",
               "degraded": "#7b5ea7"}
    marks = []
    for s in sites:
        x, y = xy(float(s.lat), float(s.lon))
        current = s.mode is not None and not s.stale and s.status != "lost"
        cls = MODES.get(s.mode or "", ("unknown", "", ""))[0]
        fill = colours.get(cls, "#999") if current else "#9e9e9e"
        ring = "" if current else \
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="17" fill="none" stroke="#555" ' \
            f'stroke-dasharray="4 3"/>'
        state = "" if current else " (inaktuell / stale)"
        marks.append(
            f'<a href="/sites/{e(s.id)}" class="mapsite" data-site="{e(s.id)}">'
            f'<title>{e(s.name)}{state}</title>{ring}'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="12" fill="{fill}" stroke="#fff" '
            f'stroke-width="2"/>'
            f'<text x="{x + 18:.1f}" y="{y + 5:.1f}" font-size="15" font-weight="600" '
            f'fill="#1b1b1b">{e(s.name)}</text>'
            f'<text x="{x + 18:.1f}" y="{y + 22:.1f}" font-size="12" fill="#555">'
            f'{e(s.municipality)}{e(state)}</text></a>')
    # a graticule every 0.5 degrees, so distances can be judged
    grid = []
    lat_min, lat_max = cy - span / 2, cy + span / 2
    for i in range(math.floor(lat_min * 2), math.ceil(lat_max * 2) + 1):
        _, y = xy(i / 2, cx / kx)
        if 0 < y < height:
            grid.append(f'<line x1="0" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="#dde3ea"/>'
                        f'<text x="4" y="{y - 3:.1f}" font-size="10" fill="#8894a3">'
                        f'{i / 2:.1f}° N</text>')
    lon_min, lon_max = (cx - span / 2) / kx, (cx + span / 2) / kx
    for i in range(math.floor(lon_min * 2), math.ceil(lon_max * 2) + 1):
        x, _ = xy(cy, i / 2)
        if 0 < x < width:
            grid.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#dde3ea"/>'
                        f'<text x="{x + 3:.1f}" y="{height - 4}" font-size="10" fill="#8894a3">'
                        f'{i / 2:.1f}° E</text>')
    return (f'<svg class="map" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="Karta över platserna / Map of the sites">'
            f'<rect width="{width}" height="{height}" fill="#f3f6f9"/>{"".join(grid)}'
            f'{"".join(marks)}</svg>')


def _fuel_for_sale(store: Any, site: str) -> str:
    state = (store.latest(site) or {}).get("state") or {}
    sale = (state.get("capability") or {}).get("fuel_for_sale") or {}
    if not sale:
        return "–"
    return "<br>".join(f"{e(PRODUCTS.get(k, k))} {_num(v, 0)} l" for k, v in sorted(sale.items()))


def overview_table(request: web.Request, sites: list[SiteSummary]) -> str:
    store = request.app[STORE]
    head = "".join(f"<th>{both(sv, en)}</th>" for sv, en in (
        ("Plats", "Site"), ("Kontakt", "Connection"), ("Läge", "Mode"),
        ("Nätström", "Grid"), ("Reservkraft", "Backup power"), ("Bränsle", "Fuel"),
        ("Timmar kvar", "Hours left"), ("Enheter", "Devices"),
        ("Senast uppdaterad", "Last update"), ("Till salu", "For sale")))
    rows = []
    for s in sites:
        row = _row(s)
        link = f'<a href="/sites/{e(s.id)}">{e(s.name)}</a>'
        row = row.replace(f'<span class="name">{e(s.name)}</span>',
                          f'<span class="name">{link}</span>', 1)
        row = row.replace("</tr>", f'<td class="sale">{_fuel_for_sale(store, s.id)}</td></tr>')
        rows.append(row)
    body = "\n".join(rows) or \
        f'<tr><td colspan="10">{both("Inga platser konfigurerade", "No sites configured")}' \
        '</td></tr>'
    return f'<table class="sites"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


async def overview_page(request: web.Request) -> web.Response:
    app = request.app
    now = app[CLOCK]()
    sites = app[STORE].sites_overview(now)
    open_alerts = [a for a in app[STORE].alerts() if a.status == "firing"]
    banner = ""
    if open_alerts:
        n = len(open_alerts)
        text = both(f"{n} okvitterade larm", f"{n} unacknowledged alerts")
        banner = f'<p class="banner alarm"><a href="/alerts">{text}</a></p>'
    tz_name = e(_when_tz(now))
    body = f"""{banner}
<p class="sub">{both("Service- och trygghetspunkter: ström, reservkraft och bränsle",
                     "Service and safety points: power, backup power and fuel")}</p>
<div class="overview">
{overview_table(request, sites)}
<figure>{site_map(sites)}<figcaption>{both("Grå = inaktuell: senast kända läge, inte nuläge",
                                            "Grey = stale: last known state, not current")}
</figcaption></figure>
</div>
<footer>{both(f"Uppdateras var {REFRESH_S}:e sekund", f"Refreshes every {REFRESH_S} seconds")}
· {both("Sidan skapad", "Generated")} {e(_when(now))} {tz_name}</footer>"""
    return layout(request, "SOT-punkter – översikt", "Overview", body, refresh=True)


def _when_tz(now: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(now, TZ).tzname() or ""


# --- site page -------------------------------------------------------------------------------


def history_chart(rows: list[dict[str, Any]], width: int = 760, height: int = 260) -> str:
    """Fuel % (left axis, blue) and hours of backup left (right axis, orange) over time, from
    the state history. A gap in the data is a gap in the line, never a bridge."""
    pts = [r for r in rows if r.get("fuel_pct") is not None or r.get("hours_left") is not None]
    if len(pts) < 2:
        text = both("För lite historik för ett diagram ännu", "Not enough history for a chart yet")
        return f'<p class="muted">{text}</p>'
    left, right, top, bottom = 48, 56, 16, 34
    w, h = width - left - right, height - top - bottom
    t0, t1 = pts[0]["ts"], pts[-1]["ts"]
    tspan = max(t1 - t0, 1)
    hmax = max([r["hours_left"] for r in pts if r.get("hours_left") is not None] or [1])
    hmax = max(24.0, math.ceil(hmax / 24) * 24)

    def x(ts: float) -> float:
        return left + (ts - t0) / tspan * w

    def lines(key: str, top_value: float) -> str:
        segs: list[list[str]] = []
        cur: list[str] = []
        for r in pts:
            v = r.get(key)
            if v is None:
                if len(cur) > 1:
                    segs.append(cur)
                cur = []
                continue
            cur.append(f"{x(r['ts']):.1f},{top + h - min(v, top_value) / top_value * h:.1f}")
        if len(cur) > 1:
            segs.append(cur)
        return "".join(f'<polyline points="{" ".join(s)}"/>' for s in segs)

    axes = []
    for i in range(5):
        y = top + h - i * h / 4
        axes.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" '
                    f'class="grid"/><text x="{left - 6}" y="{y + 4:.1f}" class="ax l">'
                    f'{25 * i} %</text><text x="{left + w + 6}" y="{y + 4:.1f}" class="ax r">'
                    f'{hmax * i / 4:.0f} h</text>')
    for ts in (t0, (t0 + t1) / 2, t1):
        axes.append(f'<text x="{x(ts):.1f}" y="{height - 10}" class="ax m">'
                    f'{e(_when(ts)[5:16])}</text>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="Bränsle och timmar kvar / Fuel and hours left">{"".join(axes)}'
            f'<g class="fuel">{lines("fuel_pct", 100.0)}</g>'
            f'<g class="hours">{lines("hours_left", hmax)}</g></svg>'
            f'<p class="legend"><span class="k fuel"></span>'
            f'{both("Bränsle i tanken (%)", "Fuel in tank (%)")} <span class="k hours"></span>'
            f'{both("Timmar reservkraft kvar", "Hours of backup left")}</p>')


def _event_text(ev: dict[str, Any]) -> str:
    data = ev.get("data")
    detail = dumps(data) if data else ""
    return f'<code>{e(ev["type"])}</code> <span class="muted">{e(detail[:200])}</span>'


# Why a controller refused a crisis message (the `why` of its `crisis_refused` event).
REFUSAL_TEXT = {
    "full": ("panelen har redan fyra meddelanden", "the panel already holds four messages"),
    "memory": ("minnet räckte inte", "out of memory"),
    "flash": ("kunde inte spara", "could not save it"),
    "sv": ("svensk text saknas eller är för lång", "Swedish text missing or too long"),
    "en": ("engelsk text för lång", "English text too long"),
    "from": ("avsändaren för lång", "sender too long"),
    "not_json": ("ogiltigt format", "invalid format"),
    "not_object": ("ogiltigt format", "invalid format"),
    "ts": ("ogiltig tid", "invalid time"),
    "severity": ("okänd allvarlighetsgrad", "unknown severity"),
}


def delivery_table(request: web.Request, rows: list[dict[str, Any]], *,
                   with_message: bool) -> str:
    if not rows:
        return f'<p class="muted">{both("Inga meddelanden ute", "No messages out")}</p>'
    store = request.app[STORE]
    names = {s.id: s.name for s in store.sites_overview(request.app[CLOCK]())}
    head = (f'<th>{both("Plats", "Site")}</th>'
            + (f'<th>{both("Meddelande", "Message")}</th>' if with_message else "")
            + f'<th>{both("Skickat", "Sent")}</th>'
            + f'<th>{both("Personalens kvittens", "Staff acknowledgement")}</th>')
    out = []
    for d in rows:
        msg = ""
        if with_message:
            m = store.crisis_message(d["crisis_id"]) or {}
            msg = (f'<td><a href="/crisis/{e(d["crisis_id"])}">{e(d["crisis_id"])}</a>'
                   f'<div class="msgtext">{e(m.get("sv", ""))}</div></td>')
        if d["acked"] is not None:
            ack = (f'<td class="acked">{both("Kvitterat", "Acknowledged")} '
                   f'{e(_when(d["acked"]))}</td>')
        elif d.get("refused"):
            sv_why, en_why = REFUSAL_TEXT.get(str(d["refused"]).split(":")[0],
                                              (str(d["refused"]), str(d["refused"])))
            refused = both("Vägrat av styrenheten", "Refused by the controller")
            ack = (f'<td class="refused">{refused}: {both(sv_why, en_why)} '
                   f'{e(_when(d["refused_at"] or 0))}</td>')
        else:
            ack = f'<td class="unacked">{both("Inte kvitterat än", "Not acknowledged yet")}</td>'
        out.append(f'<tr data-site="{e(d["site"])}" data-crisis="{e(d["crisis_id"])}">'
                   f'<td>{e(names.get(d["site"], d["site"]))}</td>{msg}'
                   f'<td>{e(_when(d["sent"]))}</td>{ack}</tr>')
    return (f'<table class="delivery"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(out)}</tbody></table>')


# The sites' test-run schedules (gateway/exercise.py), set by the service from the site configs.
EXERCISE_SCHEDULES: web.AppKey[dict[str, Any]] = web.AppKey("exercise_schedules")


def exercise_section(request: web.Request, sid: str, now: float) -> str:
    """Generator test runs: the schedule, the last run, the next one and the history (the data
    from gateway/exercise.py; this is only its rendering)."""
    from . import exercise

    sched = request.app.get(EXERCISE_SCHEDULES, {}).get(sid)
    d = exercise.site_page(request.app[STORE], sched, sid, now)

    def verdict(r: dict[str, Any]) -> str:
        ok = r["result"] == "pass"
        word = both("Godkänd", "Passed") if ok else both("Underkänd", "Failed")
        why = f' ({e(str(r.get("why")))})' if r.get("why") else ""
        return f'<span class="{"acked" if ok else "refused"}">{word}</span>{why}'

    def num(v: Any, unit: str) -> str:
        return "–" if v is None else e(f"{v:g} {unit}")

    last = d["last"]
    last_txt = (f'{e(_when(last.get("started") or last["ts"]))}: {verdict(last)}' if last
                else both("Ingen rapporterad", "None reported"))
    nxt = e(_when(d["next"])) if d["next"] is not None else "–"
    late = (f' <strong class="refused">{both("Försenad", "Overdue")}</strong>'
            if d["overdue"] else "")
    rows = "".join(
        f'<tr><td>{e(_when(r.get("started") or r["ts"]))}</td>'
        f'<td>{e(str(r.get("trigger")))}</td><td>{verdict(r)}</td>'
        f'<td>{num(r.get("start_s"), "s")}</td><td>{num(r.get("stable_s"), "s")}</td>'
        f'<td>{num(r.get("v_min"), "")}–{num(r.get("v_max"), "V")}</td>'
        f'<td>{num(r.get("f_min"), "")}–{num(r.get("f_max"), "Hz")}</td>'
        f'<td>{num(r.get("load_kw"), "kW")}</td><td>{num(r.get("fuel_used_l"), "l")}</td>'
        f'<td>{e(", ".join(str(a) for a in r.get("alarms") or []))}</td></tr>'
        for r in d["history"])
    head = "".join(f"<th>{both(sv, en)}</th>" for sv, en in (
        ("Start", "Started"), ("Orsak", "Trigger"), ("Resultat", "Result"),
        ("Starttid", "Time to start"), ("Stabil", "Stable"), ("Spänning", "Voltage"),
        ("Frekvens", "Frequency"), ("Last", "Load"), ("Bränsle", "Fuel"), ("Larm", "Alarms")))
    table = (f'<table class="exercise"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
             f'</table>') if rows else ""
    return f"""
<h2>{both("Provkörning", "Generator test runs")}</h2>
<dl class="exercise">
<dt>{both("Schema", "Schedule")}</dt><dd>{both(d["schedule_sv"], d["schedule_en"])}</dd>
<dt>{both("Senaste", "Last run")}</dt><dd data-exercise-last>{last_txt}{late}</dd>
<dt>{both("Nästa", "Next run")}</dt><dd data-exercise-next>{nxt}</dd>
</dl>
{table}"""


async def site_page(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    now = app[CLOCK]()
    summary = app[STORE].site_overview(sid, now)
    if summary is None:
        raise web.HTTPNotFound()
    hist = app[STORE].state_history(sid, since=now - 7 * 86400, limit=2000)
    events = app[STORE].events(sid, 100)
    ev_rows = "".join(
        f'<li><time>{e(_when(ev["ts"]))}</time> {_event_text(ev)}'
        f'{" <em>(ur journalen / from journal)</em>" if ev.get("hist") else ""}</li>'
        for ev in events) or f'<li class="muted">{both("Inga händelser", "No events")}</li>'
    alerts = app[STORE].alerts(site=sid)
    al = "".join(f'<li class="sev-{e(a.severity)}">{e(a.sv)} <span class="en">/ {e(a.en)}</span>'
                 f' – {e(a.status)}</li>' for a in alerts) or \
        f'<li class="muted">{both("Inga öppna larm", "No open alerts")}</li>'
    body = f"""
<p><a href="/signage/{e(sid)}">{both("Skylt för allmänheten", "Public signage")}</a></p>
{overview_table(request, [summary])}
<h2>{both("Bränsle och drifttid kvar", "Fuel and runtime left")}</h2>
{history_chart(hist)}
<h2>{both("Krismeddelanden", "Crisis messages")}</h2>
{delivery_table(request, app[STORE].crisis_delivery(site=sid), with_message=True)}
<h2>{both("Öppna larm", "Open alerts")}</h2>
<ul class="alerts">{al}</ul>
{exercise_section(request, sid, now)}
<h2>{both("Händelser", "Events")}</h2>
<ol class="timeline">{ev_rows}</ol>"""
    return layout(request, summary.name, summary.municipality, body)


async def api_history(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    if app[STORE].site_overview(sid, app[CLOCK]()) is None:
        return json_response({"error": "unknown site", "site": sid}, status=404)
    try:
        since = float(request.query.get("since", "0"))
    except ValueError:
        return json_response({"error": "since must be a number"}, status=400)
    return json_response(app[STORE].state_history(sid, since=since, limit=2000))


# --- alerts ----------------------------------------------------------------------------------


async def alerts_page(request: web.Request) -> web.Response:
    app = request.app
    s = session_of(request)
    can_ack = s is not None and role_at_least(s.role, "coordinator")
    rows = []
    for a in app[STORE].alerts():
        action = ""
        if a.status == "firing" and can_ack:
            action = (f'<form method="post" action="/alerts/{a.id}/ack" class="inline">'
                      f'{csrf_field(request)}<input name="note" placeholder="Notering / note" '
                      f'maxlength="200"><button type="submit">{both("Kvittera", "Acknowledge")}'
                      f'</button></form>')
        elif a.acked_by:
            action = (f'{both("Kvitterat av", "Acknowledged by")} {e(a.acked_by)} '
                      f'{e(_when(a.acked_at or 0))}')
        rows.append(f'<tr class="sev-{e(a.severity)} st-{e(a.status)}" data-alert="{a.id}">'
                    f'<td>{e(_when(a.fired or a.started))}</td><td>{e(a.severity)}</td>'
                    f'<td>{e(a.status)}</td><td>{e(a.sv)}<div class="en">{e(a.en)}</div></td>'
                    f'<td>{action}</td></tr>')
    table = (f'<table class="alerts"><thead><tr><th>{both("Sedan", "Since")}</th>'
             f'<th>{both("Grad", "Severity")}</th><th>{both("Status", "Status")}</th>'
             f'<th>{both("Larm", "Alert")}</th><th></th></tr></thead><tbody>{"".join(rows)}'
             f'</tbody></table>') if rows else \
        f'<p class="muted">{both("Inga öppna larm", "No open alerts")}</p>'
    return layout(request, "Larm", "Alerts", table, refresh=True)


def _ack(request: web.Request, ref: str, note: str) -> tuple[int, dict[str, Any]]:
    s = session_of(request)
    assert s is not None
    store = request.app[STORE]
    n = parse_id(ref)
    if n is None:
        return 404, {"error": "unknown alert"}
    a = store.ack_alert(n, s.user, note[:200], request.app[CLOCK]())
    if a is None:
        return 404, {"error": "unknown alert"}
    if a.status != "acknowledged" or a.acked_by != s.user:
        return 409, {"error": f"alert is {a.status}, nothing to acknowledge", **alert_json(a)}
    return 200, alert_json(a)


@needs("coordinator")
async def alert_ack_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    status, _ = _ack(request, request.match_info["id"], str(form.get("note", "")))
    if status == 404:
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther("/alerts")


@needs("coordinator")
async def api_alert_ack(request: web.Request) -> web.Response:
    note = ""
    if request.can_read_body and request.content_type == "application/json":
        with contextlib.suppress(ValueError, AttributeError):
            note = str((await request.json()).get("note", ""))
    status, body = _ack(request, request.match_info["id"], note)
    return json_response(body, status=status)


# --- crisis messages -------------------------------------------------------------------------


def _targets(request: web.Request, sites: list[str], municipalities: list[str]
             ) -> list[str]:
    """Site ids from the chosen sites and whole municipalities; only configured, active ones."""
    all_sites = request.app[STORE].sites_overview(request.app[CLOCK]())
    known = {s.id for s in all_sites}
    chosen = {s for s in sites if s in known}
    for m in municipalities:
        chosen |= {s.id for s in all_sites if s.municipality == m}
    return sorted(chosen)


def compose_form(request: web.Request, *, msg: dict[str, Any] | None = None,
                 error: crisis_mod.CrisisError | None = None,
                 values: dict[str, Any] | None = None) -> str:
    """New message (msg None) or update of `msg` (same id, same sites)."""
    v = values or {}
    if msg is not None and not v:
        v = {"sv": msg.get("sv", ""), "en": msg.get("en") or "", "severity": msg["severity"],
             "from": msg.get("from", "")}
    all_sites = request.app[STORE].sites_overview(request.app[CLOCK]())
    err = ""
    if error is not None:
        err = f'<p class="error" role="alert">{both(error.sv, error.en)}</p>'
    sev = v.get("severity", "info")
    sev_opts = "".join(
        f'<label class="sev sev-{k}"><input type="radio" name="severity" value="{k}"'
        f'{" checked" if sev == k else ""}> {both(sv, en)}</label>'
        for k, (sv, en) in SEVERITY_TEXT.items())
    if msg is None:
        picked = set(v.get("site", []))
        munis: dict[str, list[SiteSummary]] = {}
        for s in all_sites:
            munis.setdefault(s.municipality, []).append(s)
        groups = []
        for m, ss in sorted(munis.items()):
            boxes = "".join(
                f'<label><input type="checkbox" name="site" value="{e(s.id)}"'
                f'{" checked" if s.id in picked else ""}> {e(s.name)}</label>'
                for s in ss)
            groups.append(f'<fieldset class="muni"><legend><label><input type="checkbox" '
                          f'name="municipality" value="{e(m)}"> {both(f"Hela {m}", f"All of {m}")}'
                          f'</label></legend>{boxes}</fieldset>')
        target = (f'<fieldset><legend>{both("Till", "To")}</legend>{"".join(groups)}</fieldset>')
        action, button = "/crisis", both("Skicka", "Send")
    else:
        target = ""
        action, button = f"/crisis/{e(msg['id'])}", both("Skicka uppdatering", "Send update")
    return f"""{err}
<form method="post" action="{action}" class="compose">
{csrf_field(request)}
{target}
<label>{both("Text på svenska (krävs)", "Swedish text (required)")}
<textarea name="sv" maxlength="{crisis_mod.MAX_TEXT}" rows="4" required
>{e(v.get("sv", ""))}</textarea></label>
<label>{both("Text på engelska (frivillig)", "English text (optional)")}
<textarea name="en" maxlength="{crisis_mod.MAX_TEXT}" rows="3"
>{e(v.get("en", ""))}</textarea></label>
<fieldset><legend>{both("Allvarlighet", "Severity")}</legend>{sev_opts}</fieldset>
<label>{both("Avsändare", "From")}<input name="from" maxlength="{crisis_mod.MAX_FROM}" required
 value="{e(v.get("from", "Kommunen"))}"></label>
<label>{both("Giltigt i minuter (tomt = tills vidare)",
              "Valid for minutes (empty = until withdrawn)")}
<input name="expires_min" inputmode="numeric" value="{e(v.get("expires_min", ""))}"></label>
<p class="muted">{both(f"Högst {crisis_mod.MAX_TEXT} tecken per språk. "
                       "Texten visas som den är, aldrig som HTML.",
                       f"At most {crisis_mod.MAX_TEXT} characters per language. "
                       "Shown as typed, never as HTML.")}</p>
<button type="submit">{button}</button>
</form>"""


def _message_list(request: web.Request) -> str:
    store = request.app[STORE]
    now = request.app[CLOCK]()
    rows = []
    for m in store.crisis_messages():
        delivery = store.crisis_delivery(crisis_id=m["id"])
        acked = sum(1 for d in delivery if d["acked"] is not None)
        refused = sum(1 for d in delivery if d["acked"] is None and d.get("refused"))
        if m.get("withdrawn"):
            state = both("Återkallat", "Withdrawn")
        elif m.get("expires") is not None and m["expires"] <= now:
            state = both("Utgånget", "Expired")
        else:
            state = both(f"{acked} av {len(delivery)} kvitterat",
                         f"{acked} of {len(delivery)} acknowledged")
            if refused:
                state += (' <span class="refused">'
                          + both(f"{refused} vägrat", f"{refused} refused") + "</span>")
        sv, en = SEVERITY_TEXT.get(m["severity"], (m["severity"], m["severity"]))
        rows.append(f'<tr class="sev-{e(m["severity"])}" data-crisis="{e(m["id"])}">'
                    f'<td><a href="/crisis/{e(m["id"])}">{e(m["id"])}</a></td>'
                    f'<td>{both(sv, en)}</td><td class="msgtext">{e(m["sv"])}'
                    f'<div class="en">{e(m.get("en") or "")}</div></td>'
                    f'<td>{e(_when(m["ts"]))}<div class="muted">{e(m["created_by"])}</div></td>'
                    f'<td class="state">{state}</td></tr>')
    if not rows:
        return f'<p class="muted">{both("Inga meddelanden skickade", "No messages sent")}</p>'
    return (f'<table class="crisis"><thead><tr><th>Id</th><th>{both("Grad", "Severity")}</th>'
            f'<th>{both("Text", "Text")}</th><th>{both("Skickat", "Sent")}</th>'
            f'<th>{both("Läge", "State")}</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _can_send(request: web.Request) -> bool:
    s = session_of(request)
    return s is not None and role_at_least(s.role, "coordinator")


async def crisis_page(request: web.Request, *, error: crisis_mod.CrisisError | None = None,
                      values: dict[str, Any] | None = None, status: int = 200
                      ) -> web.Response:
    compose = ""
    if _can_send(request):
        compose = (f'<h2>{both("Nytt meddelande", "New message")}</h2>'
                   + compose_form(request, error=error, values=values))
    body = f"""{compose}
<h2>{both("Skickade meddelanden", "Messages sent")}</h2>
{_message_list(request)}"""
    resp = layout(request, "Krismeddelanden", "Crisis messages", body)
    resp.set_status(status)
    return resp


def _unavailable() -> crisis_mod.CrisisError:
    return crisis_mod.CrisisError(
        "sites", "Ingen kontakt med MQTT-brokern: meddelandet är inte skickat",
        "No connection to the MQTT broker: the message was not sent")


def _send(request: web.Request, fields: dict[str, Any], sites: list[str],
          municipalities: list[str]) -> tuple[int, dict[str, Any], crisis_mod.CrisisError | None]:
    s = session_of(request)
    assert s is not None
    sender = request.app[CRISIS]
    targets = _targets(request, sites, municipalities)
    try:
        if not targets:
            raise crisis_mod.CrisisError("sites", "Välj minst en plats eller kommun",
                                         "Choose at least one site or municipality")
        msg = crisis_mod.validate(fields, request.app[CLOCK](), sites=targets)
    except crisis_mod.CrisisError as err:
        return 400, {"error": str(err), "field": err.field, "sv": err.sv, "en": err.en}, err
    full = crisis_mod.full_sites(request.app[STORE], targets, msg.id, request.app[CLOCK]())
    if full:
        n = crisis_mod.MAX_MESSAGES
        too_many = crisis_mod.CrisisError(
            "sites", f"{', '.join(full)} har redan {n} meddelanden ute (mer ryms inte på "
                     "panelen): återkalla ett där först",
            f"{', '.join(full)} already hold {n} messages (the panel holds no more): "
            "withdraw one there first")
        return 409, {"error": str(too_many), "field": too_many.field, "sv": too_many.sv,
                     "en": too_many.en, "sites": full}, too_many
    if not sender.connected():
        down = _unavailable()
        return 503, {"error": down.en, "sv": down.sv}, down
    done = sender.send(msg, targets, s.user)
    for site in done:
        request.app[BUS].notify(site)
    return 200, {"id": msg.id, "sites": done, "payload": msg.payload()}, None


def _form_fields(form: Any) -> dict[str, Any]:
    return {k: str(form.get(k, "")) for k in ("sv", "en", "severity", "from", "expires_min")}


@needs("coordinator")
async def crisis_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    fields = _form_fields(form)
    sites = [str(x) for x in form.getall("site", [])]
    status, body, err = _send(request, fields, sites,
                              [str(x) for x in form.getall("municipality", [])])
    if err is not None:
        return await crisis_page(request, error=err, values={**fields, "site": sites},
                                 status=status)
    raise web.HTTPSeeOther(f"/crisis/{body['id']}")


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


def _field_str(v: Any) -> Any:
    return v if v is None or isinstance(v, str) else str(v)


@needs("coordinator")
async def api_crisis_send(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None:
        return json_response({"error": "send a JSON object"}, status=400)
    fields = {k: _field_str(body.get(k)) for k in ("sv", "en", "severity", "from",
                                                    "expires_min")}
    sites, munis = _str_list(body.get("sites")), _str_list(body.get("municipalities"))
    if sites is None or munis is None:
        return json_response({"error": "sites and municipalities are lists of strings"},
                             status=400)
    status, out, _ = _send(request, fields, sites, munis)
    return json_response(out, status=status)


def _update(request: web.Request, mid: str, fields: dict[str, Any]
            ) -> tuple[int, dict[str, Any], crisis_mod.CrisisError | None]:
    s = session_of(request)
    assert s is not None
    store, sender = request.app[STORE], request.app[CRISIS]
    old = store.crisis_message(mid)
    if old is None:
        return 404, {"error": "unknown message"}, None
    sites = store.crisis_sites(mid)
    if old.get("withdrawn") or not sites:
        err = crisis_mod.CrisisError("id", "Meddelandet är återkallat", "The message is withdrawn")
        return 409, {"error": err.en}, err
    try:
        msg = crisis_mod.validate(fields, request.app[CLOCK](), msg_id=mid,
                                  previous_ts=int(old["ts"]), sites=sites)
    except crisis_mod.CrisisError as err:
        return 400, {"error": str(err), "field": err.field, "sv": err.sv, "en": err.en}, err
    if not sender.connected():
        down = _unavailable()
        return 503, {"error": down.en, "sv": down.sv}, down
    done = sender.send(msg, sites, s.user)
    return 200, {"id": msg.id, "sites": done, "payload": msg.payload()}, None


async def crisis_detail_page(request: web.Request, *, error: crisis_mod.CrisisError | None = None,
                             values: dict[str, Any] | None = None, status: int = 200
                             ) -> web.Response:
    store = request.app[STORE]
    mid = request.match_info["id"]
    m = store.crisis_message(mid)
    if m is None:
        raise web.HTTPNotFound()
    sv, en = SEVERITY_TEXT.get(m["severity"], (m["severity"], m["severity"]))
    withdrawn = bool(m.get("withdrawn"))
    state = (both("Återkallat", "Withdrawn") + " " + e(_when(m["withdrawn"])) if withdrawn
             else both("Ute", "Out"))
    expires = (f'<dt>{both("Giltigt till", "Valid until")}</dt><dd>{e(_when(m["expires"]))}</dd>'
               if m.get("expires") else "")
    actions = ""
    if _can_send(request) and not withdrawn:
        actions = (f'<form method="post" action="/crisis/{e(mid)}/withdraw" class="withdraw">'
                   f'{csrf_field(request)}<button type="submit" class="danger">'
                   f'{both("Återkalla från alla platser", "Withdraw from every site")}'
                   f'</button></form>'
                   f'<h2>{both("Uppdatera", "Update")}</h2>'
                   + compose_form(request, msg=m, error=error, values=values))
    body = f"""
<dl class="message sev-{e(m["severity"])}">
<dt>{both("Grad", "Severity")}</dt><dd>{both(sv, en)}</dd>
<dt>{both("Svenska", "Swedish")}</dt><dd class="msgtext" lang="sv">{e(m["sv"])}</dd>
<dt>{both("Engelska", "English")}</dt><dd class="msgtext" lang="en">{e(m.get("en") or "–")}</dd>
<dt>{both("Avsändare", "From")}</dt><dd>{e(m.get("from", ""))}</dd>
<dt>{both("Senast skickat", "Last sent")}</dt><dd>{e(_when(m["ts"]))} ({e(m["created_by"])})</dd>
{expires}
<dt>{both("Läge", "State")}</dt><dd>{state}</dd>
</dl>
<h2>{both("Mottagare och kvittenser", "Recipients and acknowledgements")}</h2>
{delivery_table(request, store.crisis_delivery(crisis_id=mid), with_message=False)}
{actions}"""
    resp = layout(request, "Krismeddelande", "Crisis message", body, refresh=error is None)
    resp.set_status(status)
    return resp


@needs("coordinator")
async def crisis_update_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    fields = _form_fields(form)
    mid = request.match_info["id"]
    status, _, err = _update(request, mid, fields)
    if status == 404:
        raise web.HTTPNotFound()
    if err is not None:
        return await crisis_detail_page(request, error=err, values=fields, status=status)
    raise web.HTTPSeeOther(f"/crisis/{mid}")


@needs("coordinator")
async def api_crisis_update(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if body is None:
        return json_response({"error": "send a JSON object"}, status=400)
    fields = {k: _field_str(body.get(k)) for k in ("sv", "en", "severity", "from",
                                                    "expires_min")}
    status, out, _ = _update(request, request.match_info["id"], fields)
    return json_response(out, status=status)


def _withdraw(request: web.Request, mid: str) -> tuple[int, dict[str, Any]]:
    s = session_of(request)
    assert s is not None
    store, sender = request.app[STORE], request.app[CRISIS]
    if store.crisis_message(mid) is None:
        return 404, {"error": "unknown message"}
    if not sender.connected():
        return 503, {"error": _unavailable().en}
    done = sender.withdraw(mid, s.user)
    for site in done:
        request.app[BUS].notify(site)
    return 200, {"id": mid, "withdrawn_from": done}


@needs("coordinator")
async def crisis_withdraw_post(request: web.Request) -> web.StreamResponse:
    mid = request.match_info["id"]
    status, body = _withdraw(request, mid)
    if status == 404:
        raise web.HTTPNotFound()
    if status != 200:
        return html_response(e(body["error"]), status=status)
    raise web.HTTPSeeOther(f"/crisis/{mid}")


@needs("coordinator")
async def api_crisis_withdraw(request: web.Request) -> web.Response:
    status, body = _withdraw(request, request.match_info["id"])
    return json_response(body, status=status)


def _crisis_json(store: Any, m: dict[str, Any]) -> dict[str, Any]:
    return {**m, "delivery": store.crisis_delivery(crisis_id=m["id"])}


async def api_crisis_list(request: web.Request) -> web.Response:
    store = request.app[STORE]
    return json_response([_crisis_json(store, m) for m in store.crisis_messages()])


async def api_crisis_one(request: web.Request) -> web.Response:
    store = request.app[STORE]
    m = store.crisis_message(request.match_info["id"])
    if m is None:
        return json_response({"error": "unknown message"}, status=404)
    return json_response(_crisis_json(store, m))


# --- audit -----------------------------------------------------------------------------------


@needs("admin")
async def audit_page(request: web.Request) -> web.Response:
    rows = "".join(f'<tr><td>{e(_when(a["ts"]))}</td><td>{e(a["actor"])}</td>'
                   f'<td><code>{e(a["action"])}</code></td><td>{e(a["target"])}</td>'
                   f'<td>{e(a["detail"])}</td></tr>'
                   for a in request.app[STORE].audit_log(500))
    body = (f'<table class="audit"><thead><tr><th>{both("Tid", "Time")}</th>'
            f'<th>{both("Vem", "Who")}</th><th>{both("Åtgärd", "Action")}</th>'
            f'<th>{both("Mål", "Target")}</th><th>{both("Detalj", "Detail")}</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')
    return layout(request, "Logg", "Audit log", body)


@needs("admin")
async def api_audit(request: web.Request) -> web.Response:
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        return json_response({"error": "limit must be 1..1000"}, status=400)
    return json_response(request.app[STORE].audit_log(limit))


# --- signage ---------------------------------------------------------------------------------


@public
async def api_signage(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    view = signage_view(app[STORE], sid, app[CLOCK]())
    if view is None:
        return json_response({"error": "unknown site", "site": sid}, status=404)
    return json_response(view)


@public
async def signage_page(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    view = signage_view(app[STORE], sid, app[CLOCK]())
    if view is None:
        return html_response("<!DOCTYPE html><title>404</title><p>Okänd plats / Unknown site",
                             status=404)
    # The first view rides in a data attribute (escaped JSON), so the screen is filled before
    # the event stream connects; the script renders everything with textContent.
    initial = e(dumps(view))
    name = e(view["site"]["name"])
    return html_response(f"""<!DOCTYPE html>
<html lang="sv">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name} – SOT-punkt</title>
<link rel="stylesheet" href="/static/signage.css">
<script src="/static/signage.js" defer></script>
</head>
<body data-site="{e(sid)}" data-initial="{initial}">
<div id="takeover" hidden><p class="label"></p><p class="msg-sv" lang="sv"></p>
<p class="msg-en" lang="en"></p><p class="src"></p></div>
<div id="banner" hidden><p class="msg-sv" lang="sv"></p><p class="msg-en" lang="en"></p>
<p class="src"></p></div>
<header><h1>{name}</h1><p class="sub">SOT-punkt · {e(view["site"]["municipality"])}</p></header>
<div id="stale" hidden></div>
<main id="status">
<section class="tile" id="shop"><h2>Butiken <span class="en">Shop</span></h2>
<p class="v"></p></section>
<section class="tile" id="power"><h2>Ström <span class="en">Power</span></h2>
<p class="v"></p></section>
<section class="tile" id="hours"><h2>Reservkraft kvar <span class="en">Backup left</span></h2>
<p class="v"></p></section>
<section class="tile" id="fuel"><h2>Bränsle till salu <span class="en">Fuel for sale</span></h2>
<ul class="v"></ul></section>
</main>
<footer><span id="updated"></span> <span id="conn"></span></footer>
<noscript><p>Sidan behöver JavaScript. / This page needs JavaScript.</p></noscript>
</body>
</html>
""")


@public
async def signage_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `event: state` with the whole view on connect and on every change;
    a comment line every KEEPALIVE_S so proxies and the browser know the stream is alive."""
    app, sid = request.app, request.match_info["id"]
    store, bus, clock = app[STORE], app[BUS], app[CLOCK]
    view = signage_view(store, sid, clock())
    if view is None:
        return json_response({"error": "unknown site", "site": sid}, status=404)
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


# --- static files and the API description ----------------------------------------------------


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
