"""The coordinators' page of official alerts, `/feeds` (docs/feeds.md): every official alert
the gateway holds, real and test (marked), the feeds' health, and, for municipalities whose
policy is `approve`, the alerts awaiting a coordinator with an Approve button and an optional
local note (never an edit of the official text). Approving is a CSRF-protected form post like
every other action, and an audit log entry (`feed_approved`).

The page shows the feeds' saved state (gateway/feeds/run.py, kept in the store), so every
gateway worker shows the same. An approval is a request in the store that the process running
the feeds carries out: at once when that is this worker, else within a few seconds; the page
waits up to `APPROVAL_WAIT_S` for the outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from ..feeds.model import OfficialAlert
from ..feeds.publish import note_room
from ..feeds.reduce import AlertSet
from ..feeds.run import Feeds
from ..feeds.view import FeedsPage, feeds_page
from ..texts import Text
from .fmt import when
from .guard import CLOCK, STORE, may, needs, read_form, session_of
from .pages import show
from .render import text

# What the service sets: this worker's feeds (None while the gateway is starting); they run
# (`Feeds.running`) only on the worker that leads. A function, because the feeds start after
# the web side.
FEEDS: web.AppKey[Callable[[], Feeds | None]] = web.AppKey("feeds")
APPROVAL_WAIT_S = 5.0


def _fmt(ts: float | None) -> str:
    return when(ts) if ts is not None else "–"


def render(request: web.Request, *, status: int = 200,
           error: Text | None = None) -> web.Response:
    now = request.app[CLOCK]()
    store = request.app[STORE]
    view: FeedsPage | None = None
    got = store.feed_state()
    if got is not None:
        state, saved = got
        shown = {cid: tuple(store.crisis_sites(cid))
                 for cid in state.get("published", {}).values()}
        view = feeds_page(state, saved, now, shown)
    return show(request, "feeds.html", text("page.feeds.title"), status=status, view=view,
                fmt=_fmt, can_approve=may(request, "coordinator"), error=error)


async def feeds_page_get(request: web.Request) -> web.Response:
    return render(request)


def _pending(request: web.Request, key: str) -> OfficialAlert | None:
    got = request.app[STORE].feed_state()
    if got is None or key not in got[0].get("pending", {}):
        return None
    return AlertSet.from_json(got[0].get("set", {})).alerts.get(key)


@needs("coordinator")
async def feeds_approve_post(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    key = str(form.get("key", ""))[:512]
    note = str(form.get("note", ""))[:1000].strip() or None
    alert = _pending(request, key)
    if alert is None:
        raise web.HTTPNotFound()
    if note is not None and len(note) > note_room(alert):
        return render(request, status=400,
                      error=text("page.feeds.note_too_long", room=note_room(alert)))
    s = session_of(request)
    store, clock = request.app[STORE], request.app[CLOCK]
    req = store.request_feed_approval(key, s.user if s is not None else "-", note, clock())
    feeds = request.app[FEEDS]()
    if feeds is not None and feeds.running:  # this worker runs the feeds: carry it out now
        feeds.process_approvals()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + APPROVAL_WAIT_S
    done = store.feed_approval(req)
    while (done is None or done["outcome"] is None) and loop.time() < deadline:
        await asyncio.sleep(0.1)
        done = store.feed_approval(req)
    outcome = str(done["outcome"]) if done is not None and done["outcome"] else ""
    if outcome.startswith("too_long:"):
        return render(request, status=400,
                      error=text("page.feeds.note_too_long", room=outcome.split(":", 1)[1]))
    if outcome == "gone":
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther("/feeds")  # done, or still on its way: the page shows which
