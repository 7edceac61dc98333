"""gateway/web/openapi.json and the app's routes are the same set, with the same access rules."""

from __future__ import annotations

import json
from pathlib import Path

from gateway import web as gw_web
from gateway.store import SqliteStore
from gateway.web import make_app

DOC = Path(gw_web.__file__).resolve().parent / "openapi.json"


def routes() -> dict[tuple[str, str], object]:
    app = make_app(SqliteStore(":memory:"))
    out: dict[tuple[str, str], object] = {}
    for r in app.router.routes():
        if r.method == "HEAD":  # aiohttp adds one to every GET
            continue
        assert r.resource is not None
        out[(r.method.lower(), r.resource.canonical)] = r.handler
    return out


def test_every_route_is_documented_and_every_documented_route_exists():
    doc = json.loads(DOC.read_text())
    assert doc["openapi"].startswith("3.")
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    app_routes = routes()
    assert set(app_routes) - documented == set(), "routes missing from gateway/web/openapi.json"
    assert documented - set(app_routes) == set(), "documented routes the app does not have"


def test_documented_roles_are_the_enforced_ones():
    doc = json.loads(DOC.read_text())
    for (method, path), handler in routes().items():
        op = doc["paths"][path][method]
        enforced = gw_web.role_of(handler)
        assert op["x-role"] == enforced, (method, path)
        assert (op.get("security") == []) == (enforced == "public"), (method, path)


def test_the_gateway_serves_the_document():
    import asyncio

    import aiohttp
    from aiohttp import web

    async def main() -> dict:
        runner = web.AppRunner(make_app(SqliteStore(":memory:")), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            async with aiohttp.ClientSession() as s, \
                    s.get(f"http://127.0.0.1:{runner.addresses[0][1]}/api/openapi.json") as r:
                assert r.status == 200
                return await r.json()
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == json.loads(DOC.read_text())
