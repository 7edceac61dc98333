"""View models: what each page shows, already decided and formatted, for the templates to lay
out. No HTML here and no store access: the handlers fetch everything a page needs in a fixed
number of queries and pass it in.

Values are plain strings and numbers, or `Text` (Swedish, English) for bilingual values; the
templates escape all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import commands as cmd_mod
from .. import texts
from ..model import AlertRecord, SiteSummary
from ..safetext import dumps
from .fmt import age, num, when
from .render import pair, text

Text = texts.Text


# --- the sites table (overview and site page) -------------------------------------------------


@dataclass(frozen=True)
class Cell:
    cls: str
    text: Text | None  # None: a dash


@dataclass(frozen=True)
class SiteRow:
    id: str
    name: str
    municipality: str
    current: bool
    contact: Cell
    mode: Cell
    mode_note: bool  # "last known": a mode that is not current
    grid: Text
    genset: Text
    fuel: str
    hours: str
    hours_low: bool
    devices_count: int
    offline: list[str]
    wrong: list[str]
    updated: str | None
    ago: Text | None
    sale: list[str]


def state_text(section: str, state: str | None) -> Text:
    """A grid or generator state in both languages; an unknown one as it came, "–" for none."""
    t = texts.catalogue().get(f"{section}.{state or ''}") if state else None
    return t if t is not None else pair(state or "–")


def mode_cell(mode: str | None) -> Cell:
    if mode is None:
        return Cell("nodata", None)
    t = texts.catalogue().get(f"mode.{mode}")
    if t is None:
        return Cell("unknown", pair(mode, mode))
    return Cell(t.attrs.get("class", "unknown"), t)


def fuel_for_sale(state: Mapping[str, Any] | None) -> list[str]:
    """"Diesel 1200 l" per product a site sells, from its latest state."""
    sale = ((state or {}).get("capability") or {}).get("fuel_for_sale") or {}
    if not isinstance(sale, Mapping):
        return []
    cat = texts.catalogue()
    out = []
    for k, v in sorted(sale.items()):
        name = cat[f"product.{k}"].sv if f"product.{k}" in cat else str(k)
        out.append(f"{name} {num(v, 0)} l")
    return out


def site_row(site: SiteSummary, state: Mapping[str, Any] | None) -> SiteRow:
    """One row of the sites table from a site summary and its latest state (for fuel on sale)."""
    has_state = site.has_data
    current = site.current
    if site.lost:
        contact = Cell("lost", text("page.contact.lost"))
    elif not has_state:
        contact = Cell("nodata", text("page.contact.nodata"))
    elif site.stale:
        contact = Cell("stale", text("page.contact.stale"))
    else:
        contact = Cell("ok", text("page.contact.online"))
    pct, hours = site.fuel_pct, site.hours_left
    devices = site.devices or {}
    updated_ts = site.updated_ts
    ago = None
    if updated_ts is not None and site.age_s is not None:
        ago = text("page.ago", age=Text(*age(site.age_s)))
    return SiteRow(
        id=site.id, name=site.name, municipality=site.municipality,
        current=current, contact=contact, mode=mode_cell(site.mode),
        mode_note=has_state and not current,
        grid=state_text("grid", site.grid_state), genset=state_text("genset", site.genset_state),
        fuel="–" if pct is None else f"{num(pct, 0)} %",
        hours="–" if hours is None else
        f"{num(hours, 1 if isinstance(hours, float) and hours < 10 else 0)} h",
        hours_low=isinstance(hours, int | float) and hours < 24,
        devices_count=len(devices),
        # "mismatch": it answers, but is not the device its profile describes (never trusted)
        offline=sorted(n for n, s in devices.items() if s not in ("online", "mismatch")),
        wrong=sorted(n for n, s in devices.items() if s == "mismatch"),
        updated=None if ago is None or updated_ts is None else when(updated_ts), ago=ago,
        sale=fuel_for_sale(state))


# --- the map -----------------------------------------------------------------------------------

MAP_COLOURS = {"ok": "#2e8b3d", "warn": "#e08a00", "backup": "#c7a600", "alarm": "#c62828",
               "degraded": "#7b5ea7"}


@dataclass(frozen=True)
class MapMark:
    id: str
    name: str
    municipality: str
    x: str
    y: str
    label_x: str
    name_y: str
    muni_y: str
    fill: str
    current: bool


@dataclass(frozen=True)
class MapLine:
    x1: str
    y1: str
    x2: str
    y2: str
    label_x: str
    label_y: str
    label: str


@dataclass(frozen=True)
class SiteMap:
    width: int
    height: int
    marks: list[MapMark]
    lines: list[MapLine]


def site_map(sites: list[SiteSummary], width: int = 560, height: int = 420) -> SiteMap | None:
    """The sites placed by latitude/longitude on a plain SVG (no tiles, nothing fetched):
    equirectangular with longitude scaled by cos(mid latitude), which is true to shape over a
    county. Colour by mode; grey with a dashed ring when stale or lost."""
    if not sites:
        return None
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

    marks = []
    for s, lat, lon in zip(sites, lats, lons, strict=True):
        x, y = xy(lat, lon)
        current = s.current
        fill = MAP_COLOURS.get(mode_cell(s.mode).cls, "#999") if current else "#9e9e9e"
        marks.append(MapMark(
            id=s.id, name=s.name, municipality=s.municipality, x=f"{x:.1f}", y=f"{y:.1f}",
            label_x=f"{x + 18:.1f}", name_y=f"{y + 5:.1f}", muni_y=f"{y + 22:.1f}", fill=fill,
            current=current))
    # a graticule every 0.5 degrees, so distances can be judged
    lines = []
    lat_min, lat_max = cy - span / 2, cy + span / 2
    for i in range(math.floor(lat_min * 2), math.ceil(lat_max * 2) + 1):
        _, y = xy(i / 2, cx / kx)
        if 0 < y < height:
            lines.append(MapLine("0", f"{y:.1f}", str(width), f"{y:.1f}", "4", f"{y - 3:.1f}",
                                 f"{i / 2:.1f}° N"))
    lon_min, lon_max = (cx - span / 2) / kx, (cx + span / 2) / kx
    for i in range(math.floor(lon_min * 2), math.ceil(lon_max * 2) + 1):
        x, _ = xy(cy, i / 2)
        if 0 < x < width:
            lines.append(MapLine(f"{x:.1f}", "0", f"{x:.1f}", str(height), f"{x + 3:.1f}",
                                 str(height - 4), f"{i / 2:.1f}° E"))
    return SiteMap(width, height, marks, lines)


# --- the site page: history chart and events --------------------------------------------------


@dataclass(frozen=True)
class AxisLabel:
    x: str
    y: str
    cls: str
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    grid: list[tuple[str, str, str, str]]  # x1, y1, x2, y2
    labels: list[AxisLabel]
    fuel: list[str]   # polyline points, one per unbroken run
    hours: list[str]


def history_chart(rows: list[dict[str, Any]], width: int = 760, height: int = 260
                  ) -> Chart | None:
    """Fuel % (left axis, blue) and hours of backup left (right axis, orange) over time, from
    the state history. A gap in the data is a gap in the line, never a bridge. None: too little
    history for a chart."""
    pts = [r for r in rows if r.get("fuel_pct") is not None or r.get("hours_left") is not None]
    if len(pts) < 2:
        return None
    left, right, top, bottom = 48, 56, 16, 34
    w, h = width - left - right, height - top - bottom
    t0, t1 = pts[0]["ts"], pts[-1]["ts"]
    tspan = max(t1 - t0, 1)
    hmax = max([r["hours_left"] for r in pts if r.get("hours_left") is not None] or [1])
    hmax = max(24.0, math.ceil(hmax / 24) * 24)

    def x(ts: float) -> float:
        return left + (ts - t0) / tspan * w

    def runs(key: str, top_value: float) -> list[str]:
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
        return [" ".join(s) for s in segs]

    grid, labels = [], []
    for i in range(5):
        y = top + h - i * h / 4
        grid.append((str(left), f"{y:.1f}", str(left + w), f"{y:.1f}"))
        labels.append(AxisLabel(str(left - 6), f"{y + 4:.1f}", "ax l", f"{25 * i} %"))
        labels.append(AxisLabel(str(left + w + 6), f"{y + 4:.1f}", "ax r",
                                f"{hmax * i / 4:.0f} h"))
    for ts in (t0, (t0 + t1) / 2, t1):
        labels.append(AxisLabel(f"{x(ts):.1f}", str(height - 10), "ax m", when(ts)[5:16]))
    return Chart(width, height, grid, labels, runs("fuel_pct", 100.0),
                 runs("hours_left", hmax))


@dataclass(frozen=True)
class EventItem:
    when: str
    type: str
    detail: str
    from_journal: bool


def event_items(events: Iterable[dict[str, Any]]) -> list[EventItem]:
    out = []
    for ev in events:
        data = ev.get("data")
        out.append(EventItem(when(ev["ts"]), str(ev["type"]), (dumps(data) if data else "")[:200],
                             bool(ev.get("hist"))))
    return out


# --- generator test runs (the site page) ------------------------------------------------------


@dataclass(frozen=True)
class ExerciseRun:
    started: str
    trigger: str
    passed: bool
    why: str | None
    start_s: str
    stable_s: str
    volts: str
    hertz: str
    load: str
    fuel: str
    alarms: str


@dataclass(frozen=True)
class ExerciseView:
    schedule: Text
    last: ExerciseRun | None
    next: str
    overdue: bool
    history: list[ExerciseRun]


def _measured(v: Any, unit: str) -> str:
    return "–" if v is None else f"{v:g} {unit}"


def exercise_run(r: Mapping[str, Any]) -> ExerciseRun:
    why = r.get("why")
    return ExerciseRun(
        started=when(r.get("started") or r["ts"]), trigger=str(r.get("trigger")),
        passed=r["result"] == "pass", why=None if not why else str(why),
        start_s=_measured(r.get("start_s"), "s"), stable_s=_measured(r.get("stable_s"), "s"),
        volts=f'{_measured(r.get("v_min"), "")}–{_measured(r.get("v_max"), "V")}',
        hertz=f'{_measured(r.get("f_min"), "")}–{_measured(r.get("f_max"), "Hz")}',
        load=_measured(r.get("load_kw"), "kW"), fuel=_measured(r.get("fuel_used_l"), "l"),
        alarms=", ".join(str(a) for a in r.get("alarms") or []))


def exercise_view(d: Mapping[str, Any]) -> ExerciseView:
    """The test-run section from gateway/exercise.site_page's plain values."""
    return ExerciseView(
        schedule=Text(d["schedule_sv"], d["schedule_en"]),
        last=None if not d["last"] else exercise_run(d["last"]),
        next="–" if d["next"] is None else when(d["next"]), overdue=bool(d["overdue"]),
        history=[exercise_run(r) for r in d["history"]])


# --- signed commands ---------------------------------------------------------------------------

# How each state looks: a final result in its colour; sent/accepted still open; unknown stands out
# (it is never done).
_STATE_CLASS = {"done": "acked", "failed": "refused", "refused": "refused", "unknown": "refused",
                "sent": "muted", "accepted": "muted"}


def command_action(name: str, args: Mapping[str, Any]) -> Text:
    """A command as a coordinator reads it: "Provkörning (15 minuter, utan last)"."""
    t = cmd_mod.name_text(name)
    if name != "gen_test" or "minutes" not in args:
        return t
    load = text("page.command.on_load" if args.get("load") else "page.command.off_load")
    detail = text("page.command.test_args", minutes=args["minutes"], load=load)
    return pair(f"{t.sv} ({detail.sv})", f"{t.en} ({detail.en})")


@dataclass(frozen=True)
class CommandRow:
    id: str
    sent: str
    action: Text
    actor: str
    state: str  # done, failed, refused, accepted, sent, unknown (gateway.commands.status)
    state_text: Text
    cls: str
    why: str | None  # the controller's reason code
    why_text: Text | None  # what it means, when the catalogue explains it


def command_rows(recs: Iterable[Mapping[str, Any]], now: float) -> list[CommandRow]:
    out = []
    for r in recs:
        state, why = cmd_mod.status(r, now)
        out.append(CommandRow(
            id=r["id"], sent=when(r["issued"]), action=command_action(r["name"], r["args"]),
            actor=r["actor"], state=state, state_text=cmd_mod.state_text(state),
            cls=_STATE_CLASS.get(state, ""), why=why,
            why_text=cmd_mod.why_text(why) if why else None))
    return out


@dataclass(frozen=True)
class RemoteView:
    """The site page's remote-control section."""

    buttons: bool  # a coordinator, and the site can be commanded now
    why_not: Text | None  # why there are no buttons (role, no key, no broker)
    minutes: int  # the test run's default
    on_load: bool  # whether a test run on load may be asked for
    names: list[tuple[str, Text]]  # the commands without arguments, with their labels
    rows: list[CommandRow]


def remote_view(*, coordinator: bool, why_not: Text | None, minutes: int, on_load: bool,
                recs: Iterable[Mapping[str, Any]], now: float) -> RemoteView:
    if not coordinator:
        why_not = text("page.command.coordinators_only")
    return RemoteView(
        buttons=why_not is None, why_not=why_not, minutes=minutes, on_load=on_load,
        names=[(n, cmd_mod.name_text(n)) for n in ("gen_start", "gen_stop", "rebirth")],
        rows=command_rows(recs, now))


# --- alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRow:
    id: int
    since: str
    severity: str
    status: str
    sv: str
    en: str
    can_ack: bool
    acked_by: str | None
    acked_at: str


def alert_rows(alerts: Iterable[AlertRecord], can_ack: bool) -> list[AlertRow]:
    return [AlertRow(a.id, when(a.fired or a.started), a.severity, a.status, a.sv, a.en,
                     can_ack and a.status == "firing", a.acked_by, when(a.acked_at or 0))
            for a in alerts]


# --- crisis messages ---------------------------------------------------------------------------


def severity_text(severity: str) -> Text:
    t = texts.catalogue().get(f"page.crisis_severity.{severity}")
    return t if t is not None else pair(severity, severity)


def refusal_text(why: str) -> Text:
    code = why.split(":")[0]
    t = texts.catalogue().get(f"page.refusal.why_{code}")
    return t if t is not None else pair(why, why)


@dataclass(frozen=True)
class DeliveryRow:
    site: str
    site_name: str
    crisis_id: str
    message: str | None  # the Swedish text, when the table lists several messages
    sent: str
    acked: str | None
    refused: Text | None
    refused_at: str


def delivery_rows(rows: Iterable[dict[str, Any]], names: Mapping[str, str],
                  messages: Mapping[str, dict[str, Any]] | None) -> list[DeliveryRow]:
    """`names`: site id -> name; `messages`: crisis id -> message, to show each row's text (None:
    the table is about one message)."""
    out = []
    for d in rows:
        msg = None
        if messages is not None:
            msg = str((messages.get(d["crisis_id"]) or {}).get("sv", ""))
        refused = None
        if d["acked"] is None and d.get("refused"):
            refused = refusal_text(str(d["refused"]))
        out.append(DeliveryRow(
            site=str(d["site"]), site_name=str(names.get(d["site"], d["site"])),
            crisis_id=str(d["crisis_id"]), message=msg, sent=when(d["sent"]),
            acked=None if d["acked"] is None else when(d["acked"]), refused=refused,
            refused_at=when(d.get("refused_at") or 0)))
    return out


@dataclass(frozen=True)
class MessageRow:
    id: str
    severity: str
    severity_text: Text
    sv: str
    en: str
    sent: str
    created_by: str
    state: Text
    refused: Text | None


def message_rows(messages: Iterable[dict[str, Any]],
                 delivery: Mapping[str, list[dict[str, Any]]], now: float) -> list[MessageRow]:
    """`delivery`: crisis id -> its delivery rows (store.crisis_deliveries)."""
    out = []
    for m in messages:
        rows = delivery.get(m["id"], [])
        acked = sum(1 for d in rows if d["acked"] is not None)
        refused_n = sum(1 for d in rows if d["acked"] is None and d.get("refused"))
        refused = None
        if m.get("withdrawn"):
            state = text("page.crisis.withdrawn")
        elif m.get("expires") is not None and m["expires"] <= now:
            state = text("page.crisis.expired")
        else:
            state = text("page.crisis.acked_of", acked=acked, total=len(rows))
            if refused_n:
                refused = text("page.crisis.refused_n", n=refused_n)
        out.append(MessageRow(str(m["id"]), str(m["severity"]), severity_text(m["severity"]),
                              str(m["sv"]), str(m.get("en") or ""), when(m["ts"]),
                              str(m["created_by"]), state, refused))
    return out


@dataclass(frozen=True)
class MessageDetail:
    id: str
    severity: str
    severity_text: Text
    sv: str
    en: str
    sender: str
    sent: str
    created_by: str
    expires: str | None
    withdrawn: str | None


def message_detail(m: dict[str, Any]) -> MessageDetail:
    return MessageDetail(
        id=str(m["id"]), severity=str(m["severity"]), severity_text=severity_text(m["severity"]),
        sv=str(m["sv"]), en=str(m.get("en") or "–"), sender=str(m.get("from", "")),
        sent=when(m["ts"]), created_by=str(m["created_by"]),
        expires=when(m["expires"]) if m.get("expires") else None,
        withdrawn=when(m["withdrawn"]) if m.get("withdrawn") else None)


@dataclass(frozen=True)
class SiteChoice:
    id: str
    name: str
    picked: bool


@dataclass(frozen=True)
class Municipality:
    name: str
    sites: list[SiteChoice]


@dataclass(frozen=True)
class ComposeForm:
    """The send form (new message: `update_of` None, with the sites to choose) or the update
    form of a message (same id, same sites)."""
    action: str
    update_of: str | None
    error: Text | None
    municipalities: list[Municipality]
    severities: list[tuple[str, Text, bool]]  # value, label, checked
    sv: str
    en: str
    sender: str
    expires_min: str
    max_text: int
    max_from: int


def compose_form(sites: list[SiteSummary], *, msg: dict[str, Any] | None, error: Text | None,
                 values: dict[str, Any] | None, max_text: int, max_from: int) -> ComposeForm:
    v = values or {}
    if msg is not None and not v:
        v = {"sv": msg.get("sv", ""), "en": msg.get("en") or "", "severity": msg["severity"],
             "from": msg.get("from", "")}
    sev = v.get("severity", "info")
    severities = [(k, t, sev == k)
                  for k, t in texts.catalogue().section("page.crisis_severity").items()]
    munis: list[Municipality] = []
    if msg is None:
        picked = set(v.get("site", []))
        groups: dict[str, list[SiteChoice]] = {}
        for s in sites:
            groups.setdefault(s.municipality, []).append(SiteChoice(s.id, s.name, s.id in picked))
        munis = [Municipality(m, ss) for m, ss in sorted(groups.items())]
    return ComposeForm(
        action="/crisis" if msg is None else f"/crisis/{msg['id']}",
        update_of=None if msg is None else str(msg["id"]), error=error, municipalities=munis,
        severities=severities, sv=str(v.get("sv", "")), en=str(v.get("en", "")),
        sender=str(v.get("from", text("page.compose.default_from").sv)),
        expires_min=str(v.get("expires_min", "")), max_text=max_text, max_from=max_from)


# --- the layout's navigation -------------------------------------------------------------------


@dataclass(frozen=True)
class NavLink:
    href: str
    text: Text
    current: bool


@dataclass(frozen=True)
class Nav:
    links: list[NavLink]
    user: str
    role: str
    csrf: str


def nav(path: str, user: str, role: str, csrf: str, admin: bool) -> Nav:
    links = [("/", "page.nav.overview"), ("/alerts", "page.nav.alerts"),
             ("/crisis", "page.nav.crisis"), ("/feeds", "page.nav.feeds")]
    if admin:
        links.append(("/audit", "page.nav.audit"))
    return Nav([NavLink(h, text(k), path == h) for h, k in links], user, role, csrf)


@dataclass(frozen=True)
class AuditRow:
    when: str
    actor: str
    action: str
    target: str
    detail: str


def audit_rows(rows: Iterable[dict[str, Any]]) -> list[AuditRow]:
    def s(v: Any) -> str:
        return "" if v is None else str(v)

    return [AuditRow(when(a["ts"]), s(a["actor"]), s(a["action"]), s(a["target"]),
                     s(a["detail"])) for a in rows]
