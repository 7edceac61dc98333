"""The coordinators' page of official alerts, `/feeds` (docs/feeds.md): every official alert
the gateway holds, real and test (marked), the feeds' health, and, for municipalities whose
policy is `approve`, the alerts awaiting a coordinator with an Approve button and an optional
local note (never an edit of the official text). Approving is a CSRF-protected form post like
every other action, and an audit log entry (`feed_approved`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..feeds.publish import NoteTooLong
from ..feeds.run import Feeds
from ..feeds.view import FeedsPage, feeds_page
from ..texts import Text
from .fmt import when
from .guard import CLOCK, STORE, may, needs, read_form, session_of
from .pages import show
from .render import text

# What the service sets: the running gateway's feeds (None: no [[feeds]] configured yet, or
# the gateway is starting). A function, because the feeds start after the web side.
FEEDS: web.AppKey[Callable[[], Feeds | None]] = web.AppKey("feeds")


def _fmt(ts: float | None) -> str:
    return when(ts) if ts is not None else "–"


def render(request: web.Request, feeds: Feeds | None, *, status: int = 200,
           error: Text | None = None) -> web.Response:
    now = request.app[CLOCK]()
    view: FeedsPage | None = None
    if feeds is not None:
        store = request.app[STORE]
        shown = {cid: tuple(store.crisis_sites(cid))
                 for cid in feeds.publisher.published.values()}
        view = feeds_page(feeds, now, shown)
    return show(request, "feeds.html", text("page.feeds.title"), status=status, view=view,
                fmt=_fmt, can_approve=may(request, "coordinator"), error=error)


async def feeds_page_get(request: web.Request) -> web.Response:
    return render(request, request.app[FEEDS]())


@needs("coordinator")
async def feeds_approve_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    key = str(form.get("key", ""))[:512]
    note = str(form.get("note", ""))[:1000].strip() or None
    feeds = request.app[FEEDS]()
    if feeds is None or key not in feeds.publisher.pending:
        raise web.HTTPNotFound()
    s = session_of(request)
    actor = s.user if s is not None else "-"
    alert = feeds.publisher.pending[key].alert
    try:
        sites = feeds.approve(key, actor, note)
    except NoteTooLong as e:
        return render(request, feeds, status=400,
                      error=text("page.feeds.note_too_long", room=e.room))
    detail: dict[str, Any] = {"sites": ",".join(sites)}
    if note:
        detail["note"] = note
    request.app[STORE].add_audit(request.app[CLOCK](), actor, "feed_approved", alert.id,
                                 " ".join(f"{k}={v}" for k, v in detail.items()))
    raise web.HTTPSeeOther("/feeds")
