"""The gateway's HTTP side: the coordinators' dashboard, the public signage pages and the JSON
API behind both. Every route is listed, with its role, in `gateway/web/openapi.json` (served at
`/api/openapi.json`; a test keeps the two in step).

Who may do what (gateway/auth.py):
    public       /login, /signage/<site> (+ /events, /api/signage/<site>), /static/*, the CAP
                 feed (/cap.atom, /cap/<id>.xml, /cap/official/<id>.xml: made for other alerting
                 systems to read),
                 /api/openapi.json, POST /api/login
    viewer       everything else that reads: overview, site pages, alerts, crisis messages, API
    coordinator  acknowledge alerts, send, update and withdraw crisis messages, send a signed
                 command to a site (the page asks to confirm first: docs/commands.md)
    admin        the audit log

Every POST needs the session's CSRF token (form field `csrf` or header `X-CSRF-Token`); a
missing session gives 401 (API) or a redirect to /login (pages). The session's user is looked
up on every request (removed: logged out; demoted: the new role at once). Pages are rendered on
the server; everything that came from MQTT, configuration or a user is HTML-escaped, and every
output is cleaned of what it cannot carry (gateway/safetext.py). The only scripts are files
under /static/, so the Content-Security-Policy allows no inline script at all.

One of each, so a class of hostile input is handled at one place (docs/security.md, "The web"):
see `guard.py`.

The package:
    app.py      `make_app` and the table of routes
    guard.py    app keys, roles, middlewares, security headers, input checks
    pages.py    the HTML pages: each fetches what it shows (a fixed number of store queries,
                never one per row), builds a view model and renders its template
    api.py      the JSON API, the CAP feed, the signage stream, static files
    actions.py  what a form and its JSON twin both do (login, acknowledge, send, withdraw)
    views.py    the view models: values decided and formatted, no HTML
    render.py   the Jinja2 environment (autoescape on) and the bilingual macro `bi`
    fmt.py      times, ages and numbers as the pages write them
    templates/  base.html (the one layout) and one template per page

A stale or lost site still shows its last known values, greyed and labelled, never as current
(unavailable is a value: docs/architecture.md).
"""

from .app import make_app
from .guard import EXERCISE_SCHEDULES, parse_id, role_of, safe_next

__all__ = ["EXERCISE_SCHEDULES", "make_app", "parse_id", "role_of", "safe_next"]
