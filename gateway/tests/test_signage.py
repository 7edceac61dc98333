"""The public signage stream (/signage/<site>/events): the whole view on connect, a new event on
each change (a crisis message, a new state), the stale flag once 3 heartbeats are missed with
no message at all, and keepalive comments in between."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
from gw_samples import TS, Clock, birth, raw, state, status
from test_auth import app_at, client
from web_login import login

from gateway.ingest import Ingest


async def next_state(resp: aiohttp.ClientResponse, timeout: float = 10) -> dict[str, Any]:
    """Read SSE lines until one `event: state` is complete; return its data."""
    event = None
    async with asyncio.timeout(timeout):
        while True:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "state":
                return json.loads(line[6:])


def test_signage_stream_follows_the_site(tmp_path: Path):
    clock = Clock()
    clock.t = TS + 5

    async def main() -> None:
        async with app_at(tmp_path, clock) as (base, db, _), client() as s:
            ing = Ingest(db, clock)
            ing.handle("sot/v1/are-kall/status", raw(status()))
            ing.handle("sot/v1/are-kall/birth", raw(birth()))
            ing.handle("sot/v1/are-kall/state", raw(state()))
            async with s.get(base + "/signage/nowhere/events") as r:
                assert r.status == 404
            async with client() as public, public.get(base + "/signage/are-kall/events") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                first = await next_state(r)
                assert first["stale"] is False and first["power"] == "backup"
                assert first["fuel_for_sale"] == {"diesel": 14300, "petrol": 9000}

                # a crisis message from a coordinator: on the screen within the same moment
                csrf = await login(s, base, "kim")
                async with s.post(base + "/api/crisis", headers={"X-CSRF-Token": csrf}, json={
                        "sv": "Samling i skolan kl 18", "severity": "info", "from": "Åre kommun",
                        "sites": ["are-kall"]}) as resp:
                    assert resp.status == 200
                got = await next_state(r, timeout=3)
                assert [m["sv"] for m in got["messages"]] == ["Samling i skolan kl 18"]

                # nothing from the site for more than 3 heartbeats: stale, without any message
                clock.t = TS + 3 * birth()["heartbeat_s"] + 30
                got = await next_state(r, timeout=5)
                assert got["stale"] is True and got["power"] == "backup"  # last known, flagged

    asyncio.run(asyncio.wait_for(main(), 30))
