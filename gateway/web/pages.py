"""The dashboard's HTML pages and the signage page. Each handler reads what its page needs from
the store (a fixed number of queries, never one per row), builds the view model
(gateway/web/views.py) and renders its template (gateway/web/templates/)."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from .. import crisis as crisis_mod
from .. import exercise
from ..model import SiteSummary
from ..safetext import dumps, json_response
from ..signage import signage_view
from ..texts import Text
from . import actions, views
from .fmt import tz_name, when
from .guard import (
    CLOCK,
    EXERCISE_SCHEDULES,
    REFRESH_S,
    SESSION_COOKIE,
    SESSIONS,
    STORE,
    may,
    needs,
    public,
    read_form,
    safe_next,
    session_of,
)
from .render import page, text


def show(request: web.Request, template: str, title: Text, *, refresh: bool = False,
         status: int = 200, **context: Any) -> web.Response:
    """A dashboard page in the base layout: navigation for a logged-in user, the session's CSRF
    token for the page's forms."""
    s = session_of(request)
    nav = None if s is None else views.nav(request.path, s.user, s.role, s.csrf,
                                           admin=may(request, "admin"))
    return page(template, status=status, title=title, nav=nav,
                refresh=REFRESH_S if refresh else None, csrf=s.csrf if s else "", **context)


# --- login -------------------------------------------------------------------------------------


def login_form(request: web.Request, next_url: str, token: str, error: str = "",
               status: int = 200) -> web.Response:
    resp = show(request, "login.html", text("page.login.title"), status=status,
                next_url=next_url, token=token, error=error)
    actions.set_login_cookie(request, resp, token)
    return resp


@public
async def login_page(request: web.Request) -> web.Response:
    return login_form(request, safe_next(request.query.get("next", "/")),
                      actions.login_token(request))


@public
async def login_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    next_url = safe_next(str(form.get("next", "/")))
    token = request.cookies.get(actions.LOGIN_CSRF_COOKIE, "")
    if not token or not hmac.compare_digest(token, str(form.get("login_csrf", ""))):
        return json_response({"error": "bad or missing CSRF token / ogiltig CSRF-token"},
                             status=403)
    row, err, status = await actions.authenticate(request, str(form.get("user", ""))[:64],
                                                  str(form.get("password", ""))[:1024])
    if row is None:
        return login_form(request, next_url, actions.login_token(request), err, status)
    resp = web.HTTPSeeOther(next_url)
    actions.start_session(request, resp, row)
    resp.del_cookie(actions.LOGIN_CSRF_COOKIE, path="/login")
    raise resp


async def logout_post(request: web.Request) -> web.StreamResponse:
    request.app[SESSIONS].drop(request.cookies.get(SESSION_COOKIE))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


# --- overview and site pages -------------------------------------------------------------------


async def overview_page(request: web.Request) -> web.Response:
    app = request.app
    store = app[STORE]
    now = app[CLOCK]()
    sites = store.sites_overview(now)
    states = store.latest_states()
    rows = [views.site_row(s, states.get(s.id)) for s in sites]
    unacked = sum(1 for a in store.alerts() if a.status == "firing")
    return show(request, "overview.html", text("page.overview.title"), refresh=True,
                rows=rows, map=views.site_map(sites), unacked=unacked, generated=when(now),
                tz=tz_name(now))


async def site_page(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    store = app[STORE]
    now = app[CLOCK]()
    summary = store.site_overview(sid, now)
    if summary is None:
        raise web.HTTPNotFound()
    state = (store.latest(sid) or {}).get("state")
    delivery = store.crisis_delivery(site=sid)
    messages = store.crisis_messages_by_id(d["crisis_id"] for d in delivery)
    test_minutes, test_on_load = actions.test_defaults(request, sid)
    return show(
        request, "site.html",
        Text(summary.name, summary.municipality),
        site_id=sid, rows=[views.site_row(summary, state)],
        chart=views.history_chart(store.state_history(sid, since=now - 7 * 86400, limit=2000)),
        delivery=views.delivery_rows(delivery, {sid: summary.name},
                                     messages),
        alerts=[{"severity": a.severity, "text": Text(a.sv, a.en), "status": a.status}
                for a in store.alerts(site=sid)],
        exercise=views.exercise_view(exercise.site_page(
            store, app.get(EXERCISE_SCHEDULES, {}).get(sid), sid, now)),
        remote=views.remote_view(
            coordinator=may(request, "coordinator"), why_not=actions.command_why_not(request, sid),
            minutes=test_minutes, on_load=test_on_load, recs=store.commands(sid, 20), now=now),
        events=views.event_items(store.events(sid, 100)))


# --- signed commands: a button, a confirm step naming the site and the action, then the send ---


def _command_error(request: web.Request, err: Text, status: int) -> web.Response:
    return show(request, "message.html", text("page.command.title"), status=status,
                message=err)


@needs("coordinator")
async def command_confirm_post(request: web.Request) -> web.Response:
    """The first POST sends nothing: it shows what would be sent, to which site, and asks."""
    form = await read_form(request)
    sid, name = request.match_info["id"], request.match_info["name"]
    (status, _, err), args = actions.command_check(request, sid, name, form)
    if err is not None:
        return _command_error(request, err, status)
    summary = request.app[STORE].site_overview(sid, request.app[CLOCK]())
    assert summary is not None
    action = views.command_action(name, args)
    return show(request, "command_confirm.html", text("page.command.confirm_title"),
                site_id=sid, site_name=summary.name, name=name, action=action,
                args={k: ("1" if v is True else "" if v is False else str(v))
                      for k, v in args.items()})


@needs("coordinator")
async def command_send_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    sid, name = request.match_info["id"], request.match_info["name"]
    if form.get("confirm") != "1":  # only the confirm step's own button sends
        raise web.HTTPSeeOther(f"/sites/{sid}#remote")
    status, _, err = actions.command_send(request, sid, name, form)
    if err is not None:
        return _command_error(request, err, status)
    raise web.HTTPSeeOther(f"/sites/{sid}#remote")


# --- alerts ------------------------------------------------------------------------------------


async def alerts_page(request: web.Request) -> web.Response:
    rows = views.alert_rows(request.app[STORE].alerts(), can_ack=may(request, "coordinator"))
    return show(request, "alerts.html", text("page.alerts.title"), refresh=True, rows=rows)


@needs("coordinator")
async def alert_ack_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    status, _ = actions.ack(request, request.match_info["id"], str(form.get("note", "")))
    if status == 404:
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther("/alerts")


# --- crisis messages ---------------------------------------------------------------------------


def _compose(request: web.Request, sites: list[SiteSummary], *, msg: dict[str, Any] | None = None,
             error: crisis_mod.CrisisError | None = None,
             values: dict[str, Any] | None = None) -> views.ComposeForm:
    return views.compose_form(
        sites, msg=msg, error=None if error is None else Text(error.sv, error.en),
        values=values, max_text=crisis_mod.MAX_TEXT, max_from=crisis_mod.MAX_FROM)


def _names(sites: list[SiteSummary]) -> dict[str, str]:
    return {s.id: s.name for s in sites}


async def crisis_page(request: web.Request, *, error: crisis_mod.CrisisError | None = None,
                      values: dict[str, Any] | None = None, status: int = 200
                      ) -> web.Response:
    store = request.app[STORE]
    now = request.app[CLOCK]()
    form = None
    if may(request, "coordinator"):
        form = _compose(request, store.sites_overview(now), error=error, values=values)
    rows = views.message_rows(store.crisis_messages(), store.crisis_deliveries(), now)
    return show(request, "crisis.html", text("page.crisis.title"), status=status, form=form,
                rows=rows)


def _form_fields(form: Any) -> dict[str, Any]:
    return {k: str(form.get(k, "")) for k in actions.FIELDS}


@needs("coordinator")
async def crisis_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    fields = _form_fields(form)
    sites = [str(x) for x in form.getall("site", [])]
    status, body, err = actions.send(request, fields, sites,
                                     [str(x) for x in form.getall("municipality", [])])
    if err is not None:
        return await crisis_page(request, error=err, values={**fields, "site": sites},
                                 status=status)
    raise web.HTTPSeeOther(f"/crisis/{body['id']}")


async def crisis_detail_page(request: web.Request, *, error: crisis_mod.CrisisError | None = None,
                             values: dict[str, Any] | None = None, status: int = 200
                             ) -> web.Response:
    store = request.app[STORE]
    mid = request.match_info["id"]
    m = store.crisis_message(mid)
    if m is None:
        raise web.HTTPNotFound()
    sites = store.sites_overview(request.app[CLOCK]())
    form = None
    if may(request, "coordinator") and not m.get("withdrawn"):
        form = _compose(request, sites, msg=m, error=error, values=values)
    delivery = views.delivery_rows(store.crisis_delivery(crisis_id=mid), _names(sites), None)
    return show(request, "crisis_detail.html", text("page.crisis.detail_title"),
                refresh=error is None, status=status, m=views.message_detail(m),
                delivery=delivery, form=form)


@needs("coordinator")
async def crisis_update_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    fields = _form_fields(form)
    mid = request.match_info["id"]
    status, _, err = actions.update(request, mid, fields)
    if status == 404:
        raise web.HTTPNotFound()
    if err is not None:
        return await crisis_detail_page(request, error=err, values=fields, status=status)
    raise web.HTTPSeeOther(f"/crisis/{mid}")


@needs("coordinator")
async def crisis_withdraw_post(request: web.Request) -> web.StreamResponse:
    mid = request.match_info["id"]
    status, _, err = actions.withdraw(request, mid)
    if status == 404:
        raise web.HTTPNotFound()
    if err is not None:
        return show(request, "message.html", text("page.crisis.detail_title"), status=status,
                    message=Text(err.sv, err.en))
    raise web.HTTPSeeOther(f"/crisis/{mid}")


# --- audit -------------------------------------------------------------------------------------


@needs("admin")
async def audit_page(request: web.Request) -> web.Response:
    return show(request, "audit.html", text("page.audit.title"),
                rows=views.audit_rows(request.app[STORE].audit_log(500)))


# --- signage -----------------------------------------------------------------------------------


def signage_texts() -> dict[str, Any]:
    """The signage script's texts, from the catalogue: [Swedish, English] per key."""
    from ..texts import catalogue

    cat = catalogue()
    out: dict[str, Any] = {k: list(t.pair()) for k, t in cat.section("signage").items()}
    out["product"] = {k: list(t.pair()) for k, t in cat.section("product").items()}
    out["unit"] = {k: list(t.pair()) for k, t in cat.section("page.unit").items()}
    return out


@public
async def signage_page(request: web.Request) -> web.Response:
    app, sid = request.app, request.match_info["id"]
    view = signage_view(app[STORE], sid, app[CLOCK]())
    if view is None:
        return page("signage_missing.html", status=404, title=text("page.signage.unknown_site"),
                    refresh=None)
    return page("signage.html", title=text("page.signage.shop"), refresh=None, site_id=sid,
                name=view["site"]["name"], municipality=view["site"]["municipality"],
                initial=dumps(view), script_texts=dumps(signage_texts()))
