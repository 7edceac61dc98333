"""The gateway's HTTP side: a JSON API and one overview page, both read-only.

    GET /                            overview, one row per site (Swedish first, English second)
    GET /api/sites                   list of site summaries (store.sites_overview)
    GET /api/sites/{id}              summary plus latest status, birth and state
    GET /api/sites/{id}/events?limit=N   newest first, 1 <= N <= 500 (default 50)
    GET /api/stats                   ingest counters plus store counts
    GET /api/alerts[?all=1]          open alerts (all=1: the newest 500 of any status)
    GET /api/alerts/{id}             one alert with its acknowledgements and notifications
    GET /cap.atom                    Atom feed of the active alerts as CAP 1.2 documents
    GET /cap/{id}.xml                one alert as a CAP 1.2 document

The page is rendered on the server and reloads itself every 5 s with a meta refresh: no
JavaScript, and a Content-Security-Policy that allows none. Everything that came from MQTT or
configuration is HTML-escaped. A stale or lost site still shows its last known values, greyed
and labelled, never as current (STYLE.md point 5).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from aiohttp import web

from .alerts.cap import atom_feed, cap_document, feed_alerts
from .store import MAX_EVENTS_LIMIT, AlertRecord, Store

REFRESH_S = 5

STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Callable[[], float])
INGEST_STATS = web.AppKey("ingest_stats", Callable[[], dict[str, Any]])
CAP_SENDER = web.AppKey("cap_sender", str)
BASE_URL = web.AppKey("base_url", str)


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
             cap_sender: str = "sot-gateway", base_url: str = "") -> web.Application:
    app = web.Application()
    app[STORE] = store
    app[CLOCK] = clock
    app[INGEST_STATS] = ingest_stats
    app[CAP_SENDER] = cap_sender
    app[BASE_URL] = base_url
    app.router.add_get("/api/alerts", api_alerts)
    app.router.add_get("/api/alerts/{id}", api_alert)
    app.router.add_get("/cap.atom", cap_feed)
    app.router.add_get("/cap/{id}.xml", cap_one)
    app.router.add_get("/", overview_page)
    app.router.add_get("/api/sites", api_sites)
    app.router.add_get("/api/sites/{id}", api_site)
    app.router.add_get("/api/sites/{id}/events", api_events)
    app.router.add_get("/api/stats", api_stats)
    return app


# --- JSON API --------------------------------------------------------------------------------


def _not_found(site: str) -> web.Response:
    return web.json_response({"error": "unknown site", "site": site}, status=404)


async def api_sites(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response(app[STORE].sites_overview(app[CLOCK]()))


async def api_site(request: web.Request) -> web.Response:
    app, site = request.app, request.match_info["id"]
    summary = app[STORE].site_overview(site, app[CLOCK]())
    if summary is None:
        return _not_found(site)
    latest = app[STORE].latest(site) or {"status": None, "birth": None, "state": None}
    return web.json_response({"site": summary, **latest})


async def api_events(request: web.Request) -> web.Response:
    app, site = request.app, request.match_info["id"]
    if app[STORE].site_overview(site, app[CLOCK]()) is None:
        return _not_found(site)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_EVENTS_LIMIT:
        return web.json_response({"error": f"limit must be 1..{MAX_EVENTS_LIMIT}"}, status=400)
    return web.json_response(app[STORE].events(site, limit))


async def api_stats(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({**app[INGEST_STATS](), "store": app[STORE].stats()})


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
    return web.json_response([alert_json(a) for a in rows])


def _alert_or_404(request: web.Request) -> AlertRecord | web.Response:
    ref = request.match_info["id"]
    a = request.app[STORE].alert(int(ref)) if ref.isdigit() else None
    if a is None:
        return web.json_response({"error": "unknown alert", "id": ref}, status=404)
    return a


async def api_alert(request: web.Request) -> web.Response:
    a = _alert_or_404(request)
    if isinstance(a, web.Response):
        return a
    store = request.app[STORE]
    return web.json_response({**alert_json(a), "acks": store.acks(a.id),
                              "notifications": store.notifications(a.id)})


async def cap_feed(request: web.Request) -> web.Response:
    app = request.app
    body = atom_feed(app[STORE].alerts(), sender=app[CAP_SENDER], now=app[CLOCK](),
                     base_url=app[BASE_URL] or None)
    return web.Response(text=body, content_type="application/atom+xml", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def cap_one(request: web.Request) -> web.Response:
    a = _alert_or_404(request)
    if isinstance(a, web.Response):
        return a
    if not feed_alerts([a]):
        return web.json_response({"error": "alert is not active", "id": a.id}, status=404)
    app = request.app
    return web.Response(text=cap_document(a, sender=app[CAP_SENDER],
                                          base_url=app[BASE_URL] or None),
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


def _row(site: dict[str, Any]) -> str:
    has_state = site["mode"] is not None
    lost = site["status"] == "lost"
    stale = bool(site["stale"])
    current = has_state and not lost and not stale

    place = (f'<td class="site"><span class="name">{e(site["name"])}</span>'
             f'<span class="muni">{e(site["municipality"])}</span></td>')

    if lost:
        contact = f'<td class="contact lost">{both("Förlorad kontakt", "Connection lost")}</td>'
    elif not has_state:
        contact = f'<td class="contact nodata">{both("Ingen data", "No data")}</td>'
    elif stale:
        contact = f'<td class="contact stale">{both("Inaktuell", "Stale")}</td>'
    else:
        contact = f'<td class="contact ok">{both("Ansluten", "Online")}</td>'

    if has_state:
        cls, sv, en = MODES.get(site["mode"], ("unknown", site["mode"], site["mode"]))
        note = "" if current else \
            f'<span class="note">{both("senast kända", "last known")}</span>'
        mode = f'<td class="mode {e(cls)}">{both(sv, en)}{note}</td>'
    else:
        mode = '<td class="mode nodata">–</td>'

    grid_sv, grid_en = GRID.get(site["grid_state"] or "", (site["grid_state"] or "–", ""))
    genset_sv, genset_en = GENSET.get(site["genset_state"] or "",
                                      (site["genset_state"] or "–", ""))
    grid = f'<td class="grid">{both(grid_sv, grid_en) if grid_en else e(grid_sv)}</td>'
    genset = f'<td class="genset">{both(genset_sv, genset_en) if genset_en else e(genset_sv)}</td>'

    pct = site["fuel_pct"]
    fuel = f'<td class="num">{_num(pct, 0)} %</td>' if pct is not None else \
        '<td class="num">–</td>'
    hours = site["hours_left"]
    low = isinstance(hours, int | float) and hours < 24
    hours_cell = (f'<td class="num{" low" if low else ""}">'
                  f'{_num(hours, 1 if isinstance(hours, float) and hours < 10 else 0)} h</td>'
                  if hours is not None else '<td class="num">–</td>')

    devices = site["devices"] or {}
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

    if site["updated_ts"] is not None:
        age_sv, age_en = _age(site["age_s"])
        updated = (f'<td class="when">{e(_when(site["updated_ts"]))}'
                   f'<span class="age">{both(f"för {age_sv} sedan", f"{age_en} ago")}</span></td>')
    else:
        updated = "<td>–</td>"

    row_cls = "current" if current else "notcurrent"
    return (f'<tr class="{row_cls}" data-site="{e(site["id"])}">{place}{contact}{mode}{grid}'
            f'{genset}{fuel}{hours_cell}{dev}{updated}</tr>')


PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#1b1b1b;
background:#f6f6f3}
h1{font-size:1.5rem;margin:0 0 .25rem}
p.sub{margin:0 0 1rem;color:#555}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px #0002}
th,td{padding:.55rem .6rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#24324a;color:#fff;font-weight:600;font-size:.9rem}
.en{color:#666;font-weight:normal}
th .en{color:#c9d3e6}
.site .name{display:block;font-weight:600}
.site .muni,.when .age,.mode .note{display:block;font-size:.85rem;color:#555}
.num{text-align:right;white-space:nowrap}
.mode{font-weight:600;border-left:.5rem solid transparent}
.mode.ok{background:#dff3e2;border-left-color:#2e8b3d}
.mode.warn{background:#fff0d6;border-left-color:#e08a00}
.mode.backup{background:#fff9c9;border-left-color:#c7a600}
.mode.alarm{background:#fbdcdc;border-left-color:#c62828}
.mode.degraded{background:#ece4f4;border-left-color:#7b5ea7}
.contact.lost,.devices.bad,.low{color:#b71c1c;font-weight:600}
.contact.stale,.contact.nodata{color:#8a5a00;font-weight:600}
.contact.ok{color:#2e7d32}
tr.notcurrent td{color:#777}
tr.notcurrent .mode{background:#eee;border-left-color:#999}
footer{margin-top:1rem;font-size:.85rem;color:#555}
"""


def render_overview(sites: list[dict[str, Any]], now: float) -> str:
    head = "".join(f"<th>{both(sv, en)}</th>" for sv, en in (
        ("Plats", "Site"), ("Kontakt", "Connection"), ("Läge", "Mode"),
        ("Nätström", "Grid"), ("Reservkraft", "Backup power"), ("Bränsle", "Fuel"),
        ("Timmar kvar", "Hours left"), ("Enheter", "Devices"),
        ("Senast uppdaterad", "Last update")))
    rows = "\n".join(_row(s) for s in sites) or \
        f'<tr><td colspan="9">{both("Inga platser konfigurerade", "No sites configured")}</td></tr>'
    tz_name = datetime.fromtimestamp(now, TZ).tzname() or ""
    return f"""<!DOCTYPE html>
<html lang="sv">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SOT-punkter – översikt / Overview</title>
<style>{PAGE_CSS}</style>
</head>
<body>
<h1>SOT-punkter – översikt <span class="en">/ Overview</span></h1>
<p class="sub">{both("Service- och trygghetspunkter: ström, reservkraft och bränsle",
                     "Service and safety points: power, backup power and fuel")}</p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<footer>{both(f"Uppdateras var {REFRESH_S}:e sekund", f"Refreshes every {REFRESH_S} seconds")}
· {both("Sidan skapad", "Generated")} {e(_when(now))} {e(tz_name)}</footer>
</body>
</html>
"""


async def overview_page(request: web.Request) -> web.Response:
    app = request.app
    now = app[CLOCK]()
    body = render_overview(app[STORE].sites_overview(now), now)
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    })
