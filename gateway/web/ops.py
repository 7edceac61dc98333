"""`/metrics`, `/healthz` and `/readyz`: what a monitoring system and a service manager ask.

- `/healthz`: 200 whenever the process answers at all (its event loop runs this handler).
- `/readyz`: 200 when the store answers a trivial query and the MQTT session is connected;
  503 with `{"ready": false, "problems": [...]}`, each problem starting with what is wrong
  (`store: ...`, `mqtt: ...`), otherwise.
- `/metrics`: Prometheus' text format (gateway/metrics.py). With `[metrics] token_file` set,
  any client presenting `Authorization: Bearer <the file's token>` may read it; without one,
  only a client on the machine itself that came through no proxy (a loopback peer and no
  X-Forwarded-For / Forwarded header). docs/deploy.md, "Monitoring", says why.

All three are public in the web's sense (no login): a scraper has no session.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..metrics import GatewayOps
from ..safetext import json_response
from ..settings import LOOPBACK
from .guard import public

# The running gateway's operations view; None for a web app without a gateway (tests).
OPS: web.AppKey[Callable[[], GatewayOps | None]] = web.AppKey("ops")

NO_STORE = {"Cache-Control": "no-store"}


@public
async def healthz(request: web.Request) -> web.Response:
    return json_response({"alive": True}, headers=NO_STORE)


@public
async def readyz(request: web.Request) -> web.Response:
    ops = request.app[OPS]()
    problems = ["gateway: not started"] if ops is None else ops.problems()
    if problems:
        return json_response({"ready": False, "problems": problems}, status=503,
                             headers=NO_STORE)
    return json_response({"ready": True}, headers=NO_STORE)


def _local_unproxied(request: web.Request) -> bool:
    peer = request.remote or ""
    return (peer.startswith(LOOPBACK) and "X-Forwarded-For" not in request.headers
            and "Forwarded" not in request.headers)


@public
async def metrics(request: web.Request) -> web.Response:
    ops = request.app[OPS]()
    if ops is None:
        return json_response({"error": "no gateway running / ingen gateway igång"}, status=503)
    if ops.token is not None:
        if not ops.token_ok(request.headers.get("Authorization")):
            return json_response({"error": "metrics token required / mättoken krävs"},
                                 status=401, headers={"WWW-Authenticate": "Bearer"})
    elif not _local_unproxied(request):
        return json_response(
            {"error": "metrics are served to this machine only; set [metrics] token_file "
                      "for a remote scraper / mätvärden bara lokalt utan [metrics] token_file"},
            status=403)
    body, content_type = ops.metrics(request.headers.get("Accept"))
    resp = web.Response(body=body, headers=NO_STORE)
    resp.headers["Content-Type"] = content_type
    return resp
