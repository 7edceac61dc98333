"""What a form and its JSON twin both do: log in, acknowledge an alert, send, update and withdraw
a crisis message. Each returns (status, JSON body, error) so the page and the API answer alike."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from typing import Any

from aiohttp import web

from .. import commands as cmd_mod
from .. import crisis as crisis_mod
from ..auth import check_login
from ..store import AlertRecord
from ..texts import Text
from .guard import (
    BUS,
    CLOCK,
    COMMANDS,
    CRISIS,
    EXERCISE_SCHEDULES,
    SECURE_COOKIE,
    SESSION_COOKIE,
    SESSIONS,
    STORE,
    THROTTLE,
    TRUSTED_PROXIES,
    parse_id,
    session_of,
)
from .render import text

log = logging.getLogger(__name__)
LOGIN_CSRF_COOKIE = "sot_login"


class _Once:
    xff_ignored = False  # logged once per process


def client_ip(request: web.Request) -> str:
    """The client's address for the login throttle and the audit log. Behind a reverse proxy
    every request comes from the proxy; only when the peer is one of the configured
    `trusted_proxies` is the last address of its X-Forwarded-For taken (the one that proxy
    added), never a header from anyone else."""
    peer = request.remote or "unknown"
    forwarded = request.headers.getall("X-Forwarded-For", [])
    if peer in request.app[TRUSTED_PROXIES]:
        hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
        if hops:
            return hops[-1][:64]
    elif forwarded and not _Once.xff_ignored:
        _Once.xff_ignored = True
        log.warning("web: X-Forwarded-For from %s ignored; if that is your reverse proxy, list "
                    "it in [web] trusted_proxies (else every client shares its login throttle)",
                    peer)
    return peer


# --- login -------------------------------------------------------------------------------------


def login_token(request: web.Request) -> str:
    """The login form's double-submit token: the one the browser already holds, if any, so a
    second GET of /login (a favicon redirected there, another tab) does not void the form."""
    old = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return old if 24 <= len(old) <= 64 and old.replace("-", "").replace("_", "").isalnum() \
        else secrets.token_urlsafe(24)


def set_login_cookie(request: web.Request, resp: web.StreamResponse, token: str) -> None:
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                    secure=request.app[SECURE_COOKIE])


def _joined(key: str, **fmt: Any) -> str:
    t = text(key, **fmt)
    return f"{t.sv} / {t.en}"


async def authenticate(request: web.Request, user: str, password: str
                       ) -> tuple[dict[str, Any] | None, str, int]:
    """(user row, error text, status). Applies the throttle before looking at the password."""
    app = request.app
    ip = client_ip(request)
    throttle = app[THROTTLE]
    wait = throttle.locked_for(ip, user)
    if wait > 0:
        span = f"{math.ceil(wait)} s" if wait < 120 else f"{math.ceil(wait / 60)} min"
        return None, _joined("page.login.throttled", wait=span), 429
    row = app[STORE].user(user) if user else None
    # scrypt takes ~50 ms: off the loop, so signage streams keep flowing meanwhile
    ok = await asyncio.to_thread(check_login, row["pwhash"] if row else None, password)
    if not ok:
        throttle.failed(ip, user)
        app[STORE].add_audit(app[CLOCK](), user[:64] or "-", "login_failed", ip)
        return None, _joined("page.login.wrong"), 401
    throttle.succeeded(ip, user)
    return row, "", 200


def start_session(request: web.Request, resp: web.StreamResponse, row: dict[str, Any]) -> str:
    """A new session (a new id at login: no session fixation); its CSRF token."""
    old = request.cookies.get(SESSION_COOKIE)
    request.app[SESSIONS].drop(old)
    s = request.app[SESSIONS].create(row["name"], row["role"], row.get("pwhash", ""))
    resp.set_cookie(SESSION_COOKIE, s.token, httponly=True, samesite="Strict", path="/",
                    secure=request.app[SECURE_COOKIE])
    request.app[STORE].add_audit(request.app[CLOCK](), s.user, "login", client_ip(request))
    return s.csrf


# --- alerts ------------------------------------------------------------------------------------


def alert_json(a: AlertRecord) -> dict[str, Any]:
    return {"id": a.id, "key": a.key, "rule": a.rule, "site": a.site,
            "municipality": a.municipality, "detail": a.detail, "severity": a.severity,
            "status": a.status, "started": a.started, "fired": a.fired, "resolved": a.resolved,
            "resolve_reason": a.resolve_reason, "level": a.level, "notified": a.notified,
            "notify_count": a.notify_count, "incident": a.incident, "acked_by": a.acked_by,
            "acked_at": a.acked_at, "ack_note": a.ack_note, "sv": a.sv, "en": a.en,
            "data": a.data}


def ack(request: web.Request, ref: str, note: str) -> tuple[int, dict[str, Any]]:
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


# --- crisis messages ---------------------------------------------------------------------------

Outcome = tuple[int, dict[str, Any], crisis_mod.CrisisError | None]
FIELDS = ("sv", "en", "severity", "from", "expires_min")


def crisis_error(field: str, key: str, **fmt: Any) -> crisis_mod.CrisisError:
    t = text(key, **fmt)
    return crisis_mod.CrisisError(field, t.sv, t.en)


def _unavailable() -> crisis_mod.CrisisError:
    return crisis_error("sites", "page.crisis.no_broker")


def _invalid(err: crisis_mod.CrisisError, status: int = 400) -> Outcome:
    return status, {"error": str(err), "field": err.field, "sv": err.sv, "en": err.en}, err


def targets(request: web.Request, sites: list[str], municipalities: list[str]) -> list[str]:
    """Site ids from the chosen sites and whole municipalities; only configured, active ones."""
    all_sites = request.app[STORE].sites_overview(request.app[CLOCK]())
    known = {s.id for s in all_sites}
    chosen = {s for s in sites if s in known}
    for m in municipalities:
        chosen |= {s.id for s in all_sites if s.municipality == m}
    return sorted(chosen)


def send(request: web.Request, fields: dict[str, Any], sites: list[str],
         municipalities: list[str]) -> Outcome:
    s = session_of(request)
    assert s is not None
    sender = request.app[CRISIS]
    chosen = targets(request, sites, municipalities)
    try:
        if not chosen:
            raise crisis_error("sites", "page.crisis.no_target")
        msg = crisis_mod.validate(fields, request.app[CLOCK](), sites=chosen)
    except crisis_mod.CrisisError as err:
        return _invalid(err)
    full = crisis_mod.full_sites(request.app[STORE], chosen, msg.id, request.app[CLOCK]())
    if full:
        too_many = crisis_error("sites", "page.crisis.full", sites=", ".join(full),
                                n=crisis_mod.MAX_MESSAGES)
        status, body, _ = _invalid(too_many, 409)
        return status, {**body, "sites": full}, too_many
    if not sender.connected():
        down = _unavailable()
        return 503, {"error": down.en, "sv": down.sv}, down
    done = sender.send(msg, chosen, s.user)
    for site in done:
        request.app[BUS].notify(site)
    return 200, {"id": msg.id, "sites": done, "payload": msg.payload()}, None


def update(request: web.Request, mid: str, fields: dict[str, Any]) -> Outcome:
    s = session_of(request)
    assert s is not None
    store, sender = request.app[STORE], request.app[CRISIS]
    old = store.crisis_message(mid)
    if old is None:
        return 404, {"error": "unknown message"}, None
    sites = store.crisis_sites(mid)
    if old.get("withdrawn") or not sites:
        gone = crisis_error("id", "page.crisis.is_withdrawn")
        return 409, {"error": gone.en}, gone
    try:
        msg = crisis_mod.validate(fields, request.app[CLOCK](), msg_id=mid,
                                  previous_ts=int(old["ts"]), sites=sites)
    except crisis_mod.CrisisError as err:
        return _invalid(err)
    if not sender.connected():
        down = _unavailable()
        return 503, {"error": down.en, "sv": down.sv}, down
    done = sender.send(msg, sites, s.user)
    return 200, {"id": msg.id, "sites": done, "payload": msg.payload()}, None


def withdraw(request: web.Request, mid: str) -> Outcome:
    s = session_of(request)
    assert s is not None
    store, sender = request.app[STORE], request.app[CRISIS]
    if store.crisis_message(mid) is None:
        return 404, {"error": "unknown message"}, None
    if not sender.connected():
        down = _unavailable()
        return 503, {"error": down.en}, down
    done = sender.withdraw(mid, s.user)
    for site in done:
        request.app[BUS].notify(site)
    return 200, {"id": mid, "withdrawn_from": done}, None


# --- signed commands ---------------------------------------------------------------------------

MAX_TEST_MIN = 60  # the controller's limit for gen_test's minutes (firmware/sot/command.py)


def test_defaults(request: web.Request, site: str) -> tuple[int, bool]:
    """(default minutes, whether a test run on load is allowed) from the site's [exercise]."""
    ex = request.app.get(EXERCISE_SCHEDULES, {}).get(site) or {}
    minutes = ex.get("minutes")
    if not (isinstance(minutes, int) and 1 <= minutes <= MAX_TEST_MIN):
        minutes = 15
    return int(minutes), bool(ex.get("on_load"))


def command_why_not(request: web.Request, site: str) -> Text | None:
    """Why nothing can be sent to `site` now (no key, no broker), or None."""
    sender = request.app[COMMANDS]
    if sender.key(site) is None:
        return text("page.command.no_key")
    if not sender.connected():
        return text("page.command.no_broker")
    return None


CommandOutcome = tuple[int, dict[str, Any], Text | None]


def command_check(request: web.Request, site: str, name: str, fields: Any
                  ) -> tuple[CommandOutcome, dict[str, int | bool]]:
    """The command `name` with its arguments from a form or a JSON body, checked as far as the
    gateway can (the controller checks the rest): (status, body, error), args."""
    store = request.app[STORE]
    if store.site_overview(site, request.app[CLOCK]()) is None:
        return (404, {"error": "unknown site"}, text("page.command.unknown_site")), {}
    if name not in cmd_mod.NAMES:
        return (404, {"error": "unknown command"}, text("page.command.unknown_command")), {}
    args: dict[str, int | bool] = {}
    if name == "gen_test":
        default, load_ok = test_defaults(request, site)
        raw = fields.get("minutes", default)
        try:
            minutes = int(str(raw).strip()) if not isinstance(raw, bool) else -1
        except ValueError:
            minutes = -1
        if not 1 <= minutes <= MAX_TEST_MIN:
            err = text("page.command.bad_minutes", max=MAX_TEST_MIN)
            return (400, {"error": err.en, "sv": err.sv, "field": "minutes"}, err), {}
        load = fields.get("load", False)
        load = load is True or str(load).lower() in ("1", "true", "on")
        if load and not load_ok:
            err = text("page.command.load_not_allowed")
            return (400, {"error": err.en, "sv": err.sv, "field": "load"}, err), {}
        args = {"minutes": minutes, "load": load}
    why = command_why_not(request, site)
    if why is not None:
        status = 409 if request.app[COMMANDS].key(site) is None else 503
        return (status, {"error": why.en, "sv": why.sv}, why), args
    return (200, {}, None), args


def command_send(request: web.Request, site: str, name: str, fields: Any) -> CommandOutcome:
    """Check, then sign, record (with its audit entry: Store.add_command) and publish one
    command through the gateway's MQTT session. Its result is filed and audited by the ingest
    when the controller's `cmd_result` event arrives."""
    s = session_of(request)
    assert s is not None
    (status, body, err), args = command_check(request, site, name, fields)
    if err is not None:
        return status, body, err
    try:
        sent = request.app[COMMANDS].send(site, name, s.user, args)
    except OSError as e:  # the broker did not take it: recorded, shown as unknown at expiry
        log.warning("web: command %s to %s not published: %s", name, site, e)
        down = text("page.command.no_broker")
        return 503, {"error": down.en, "sv": down.sv}, down
    return 200, {"id": sent["id"], "site": site, "name": name, "args": sent["args"],
                 "counter": sent["counter"], "issued": sent["issued"],
                 "expires": sent["expires"], "state": "sent"}, None


def command_json(rec: dict[str, Any], now: float) -> dict[str, Any]:
    state, why = cmd_mod.status(rec, now)
    return {"id": rec["id"], "name": rec["name"], "args": rec["args"], "issued": rec["issued"],
            "expires": rec["expires"], "counter": rec["counter"], "actor": rec["actor"],
            "state": state, "why": why, "results": rec.get("results") or []}
