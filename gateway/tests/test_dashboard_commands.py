"""Remote control from the dashboard (issue 14 §1): only a coordinator sends, only after a
confirm step that names the site and the action, each command is signed with the site's key and
a growing counter, goes to the audit log with its result, and a command whose result never came
is shown as "okänt / unknown", never as done. A real server on 127.0.0.1, a real SqliteStore, a
publish callable that keeps what the broker would have been given."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gw_samples import SITES, TS, Clock, event, raw
from web_login import add_user, login

from gateway import commands
from gateway.ingest import Ingest
from gateway.store import SqliteStore
from gateway.web import EXERCISE_SCHEDULES, make_app

KEY = "5e" * 32
SITE = "are-kall"


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.db = SqliteStore(tmp_path / "sot.sqlite3")
        self.db.upsert_sites(SITES)
        for name, role in (("vera", "viewer"), ("kim", "coordinator")):
            add_user(self.db, name, role)
        self.clock = Clock()
        self.ingest = Ingest(self.db, self.clock)
        self.published: list[tuple[str, str]] = []
        self.sender = commands.CommandSender(
            self.db, lambda t, p: self.published.append((t, p)), {SITE: KEY}, self.clock)

    def app(self) -> web.Application:
        app = make_app(self.db, self.clock, commands=self.sender)
        app[EXERCISE_SCHEDULES] = {SITE: {"every": "month", "weekday": "tue", "time": "10:00",
                                          "minutes": 20, "on_load": False}}
        return app


@pytest.fixture
def env(tmp_path: Path):
    e = Env(tmp_path)
    yield e
    e.db.close()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def page(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url) as r:
        assert r.status == 200
        return await r.text()


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def test_a_viewer_sees_the_section_but_cannot_send(env: Env):
    earlier = env.sender.send(SITE, "gen_stop", "kim")  # a coordinator's, in the history

    async def main() -> None:
        async with serving(env.app()) as base, session() as s:
            for who in ("vera",):  # the dashboard's roles: viewer < coordinator < admin
                csrf = await login(s, base, who)
                html = await page(s, f"{base}/sites/{SITE}")
                assert "Fjärrstyrning" in html and "data-cmd=" not in html
                assert "Bara samordnare kan skicka kommandon" in html
                assert f'data-command="{earlier["id"]}" data-state="sent"' in html
                assert "<form" not in html.split('id="remote"')[1].split("</table>")[0]
                for path in (f"/sites/{SITE}/cmd/gen_start",
                             f"/sites/{SITE}/cmd/gen_start/confirm"):
                    async with s.post(base + path, data={"csrf": csrf, "confirm": "1"}) as r:
                        assert r.status == 403
                async with s.post(f"{base}/api/sites/{SITE}/commands", json={"name": "gen_stop"},
                                  headers={"X-CSRF-Token": csrf}) as r:
                    assert r.status == 403
                async with s.get(f"{base}/api/sites/{SITE}/commands") as r:
                    assert r.status == 200
                    assert [c["id"] for c in (await r.json())["commands"]] == [earlier["id"]]
    run(main())
    assert len(env.published) == 1 and len(env.db.commands(SITE)) == 1


def test_confirm_step_names_site_and_action_and_only_confirm_sends(env: Env):
    async def main() -> None:
        async with serving(env.app()) as base, session() as s:
            csrf = await login(s, base, "kim")
            html = await page(s, f"{base}/sites/{SITE}")
            assert 'data-cmd="gen_test"' in html and 'data-cmd="gen_start"' in html
            assert 'name="minutes" min="1" max="60" value="20"' in html  # the site's [exercise]
            assert 'name="load"' not in html  # on_load not allowed at this site
            # the button: a confirm page, nothing sent
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_test",
                              data={"csrf": csrf, "minutes": "7"}) as r:
                assert r.status == 200
                confirm = plain(await r.text())
            assert env.published == []
            assert "Skicka Provkörning (7 min, utan last) till Kall (are-kall)?" in confirm
            assert "Send Test run (7 min, off load) to Kall (are-kall)?" in confirm
            assert confirm.index("Skicka Provkörning") < confirm.index("Send Test run")
            # the confirm form's own POST without its button's confirm=1: nothing
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_test/confirm", allow_redirects=False,
                              data={"csrf": csrf, "minutes": "7"}) as r:
                assert r.status == 303
            assert env.published == []
            # no CSRF token: refused, nothing sent
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_test/confirm",
                              data={"minutes": "7", "confirm": "1"}) as r:
                assert r.status == 403
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_test/confirm",
                              data={"csrf": "x" * 40, "minutes": "7", "confirm": "1"}) as r:
                assert r.status == 403
            assert env.published == []
            # confirmed: exactly one signed command to the site's topic
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_test/confirm", allow_redirects=False,
                              data={"csrf": csrf, "minutes": "7", "confirm": "1"}) as r:
                assert r.status == 303 and r.headers["Location"] == f"/sites/{SITE}#remote"
            assert len(env.published) == 1
            env.clock.t += 1
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_start/confirm", allow_redirects=False,
                              data={"csrf": csrf, "confirm": "1"}) as r:
                assert r.status == 303
            # bad input never reaches the broker
            for bad in ({"minutes": "0"}, {"minutes": "61"}, {"minutes": "x"},
                        {"minutes": "5", "load": "1"}):
                async with s.post(f"{base}/sites/{SITE}/cmd/gen_test/confirm",
                                  data={"csrf": csrf, "confirm": "1", **bad}) as r:
                    assert r.status == 400, bad
            async with s.post(f"{base}/sites/{SITE}/cmd/reboot/confirm",
                              data={"csrf": csrf, "confirm": "1"}) as r:
                assert r.status == 404
            html = plain(await page(s, f"{base}/sites/{SITE}"))
            assert "Provkörning (7 min, utan last) / Test run (7 min, off load)" in html
            assert "skickat / sent" in html
    run(main())
    assert len(env.published) == 2
    (t1, p1), (t2, p2) = env.published
    assert t1 == f"sot/v1/{SITE}/cmd/gen_test" and t2 == f"sot/v1/{SITE}/cmd/gen_start"
    b1, b2 = json.loads(p1), json.loads(p2)
    assert commands.verify(SITE, "gen_test", KEY, b1)
    assert commands.verify(SITE, "gen_start", KEY, b2)
    assert not commands.verify(SITE, "gen_test", "00" * 32, b1)
    assert b1["args"] == {"minutes": 7, "load": False} and b2["args"] == {}
    assert b2["counter"] > b1["counter"] > 0
    assert b1["expires"] - b1["issued"] <= commands.MAX_WINDOW_S
    sent = [a for a in env.db.audit_log() if a["action"] == "cmd_sent"]
    assert sorted(a["target"] for a in sent) == sorted(
        [f"{SITE}/gen_test/{b1['id']}", f"{SITE}/gen_start/{b2['id']}"])
    assert all(a["actor"] == "kim" for a in sent)


def test_result_done_shows_done_and_a_silent_command_shows_unknown_after_expiry(env: Env):
    env.sender.send(SITE, "gen_start", "kim")
    env.clock.t += 1
    done = env.sender.send(SITE, "gen_test", "kim", {"minutes": 5, "load": False})
    env.clock.t += 1
    refused = env.sender.send(SITE, "rebirth", "kim")
    env.clock.t += 1
    ev = event("cmd_result", seq=40, data={"id": done["id"], "name": "gen_test",
                                           "result": "accepted"})
    env.ingest.handle(f"sot/v1/{SITE}/event", raw(ev))
    ev = event("cmd_result", seq=41, data={"id": done["id"], "name": "gen_test",
                                           "result": "done"})
    env.ingest.handle(f"sot/v1/{SITE}/event", raw(ev))
    ev = event("cmd_result", seq=42, data={"id": refused["id"], "name": "rebirth",
                                           "result": "refused", "why": "mode:manual"})
    env.ingest.handle(f"sot/v1/{SITE}/event", raw(ev))

    async def states(base: str, s: aiohttp.ClientSession) -> dict[str, str]:
        html = await page(s, f"{base}/sites/{SITE}")
        return dict(re.findall(r'data-command="([^"]+)" data-state="([a-z]+)"', html))

    async def main() -> None:
        async with serving(env.app()) as base, session() as s:
            await login(s, base, "vera")
            first = env.db.commands(SITE)[-1]["id"]  # gen_start: no result at all
            before = await states(base, s)
            assert before == {first: "sent", done["id"]: "done", refused["id"]: "refused"}
            env.clock.t = first_expiry + 1
            after = await states(base, s)
            assert after == {first: "unknown", done["id"]: "done", refused["id"]: "refused"}
            html = plain(await page(s, f"{base}/sites/{SITE}"))
            assert "okänt / unknown" in html and "utfört / done" in html
            assert "elverket står inte i AUTO" in html and "mode:manual" in html
            async with s.get(f"{base}/api/sites/{SITE}/commands") as r:
                body = await r.json()
            by_id = {c["id"]: c for c in body["commands"]}
            assert by_id[first]["state"] == "unknown"
            assert by_id[done["id"]]["state"] == "done"
            assert (by_id[refused["id"]]["state"], by_id[refused["id"]]["why"]) == \
                ("refused", "mode:manual")

    first_expiry = env.db.commands(SITE)[-1]["expires"]
    run(main())
    audit = env.db.audit_log()
    assert len([a for a in audit if a["action"] == "cmd_sent"]) == 3
    results = sorted((a["target"], a["detail"]) for a in audit if a["action"] == "cmd_result")
    assert results == sorted([(f"{SITE}/gen_test/{done['id']}", "accepted"),
                              (f"{SITE}/gen_test/{done['id']}", "done"),
                              (f"{SITE}/rebirth/{refused['id']}", "refused mode:manual")])


def test_site_without_key_or_broker_says_why_and_sends_nothing(env: Env):
    env.sender.keys.pop(SITE)

    async def main() -> None:
        async with serving(env.app()) as base, session() as s:
            csrf = await login(s, base, "kim")
            html = plain(await page(s, f"{base}/sites/{SITE}"))
            assert "Inga kommandon möjliga: platsen saknar kommandonyckel" in html
            assert "No commands possible: the site has no command key" in html
            async with s.post(f"{base}/sites/{SITE}/cmd/gen_start/confirm",
                              data={"csrf": csrf, "confirm": "1"}) as r:
                assert r.status == 409
            async with s.post(f"{base}/api/sites/{SITE}/commands", json={"name": "gen_start"},
                              headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 409
        no_broker = make_app(env.db, env.clock)  # a gateway without an MQTT session
        async with serving(no_broker) as base, session() as s:
            await login(s, base, "kim")
            html = plain(await page(s, f"{base}/sites/{SITE}"))
            assert "Inga kommandon möjliga" in html and 'data-cmd="' not in html
    run(main())
    assert env.published == [] and env.db.commands(SITE) == []


def test_api_sends_a_signed_command_for_a_coordinator(env: Env):
    async def main() -> dict[str, Any]:
        async with serving(env.app()) as base, session() as s:
            csrf = await login(s, base, "kim")
            async with s.post(f"{base}/api/sites/{SITE}/commands",
                              json={"name": "gen_test", "minutes": 3},
                              headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
                out = await r.json()
            async with s.post(f"{base}/api/sites/{SITE}/commands", json={"name": "gen_test"}) as r:
                assert r.status == 403  # no CSRF token
            return out

    out = run(main())
    assert out["state"] == "sent" and out["args"] == {"minutes": 3, "load": False}
    assert len(env.published) == 1
    topic, payload = env.published[0]
    assert topic == f"sot/v1/{SITE}/cmd/gen_test"
    assert commands.verify(SITE, "gen_test", KEY, json.loads(payload))
    assert TS <= out["issued"] < out["expires"]
