"""Hostile input against the web side over a real aiohttp server on 127.0.0.1: text from a
site that no output may choke on (HTML, JSON, the signage event stream), malformed ids, forms
and JSON bodies, redirects after login, and the security headers on every kind of answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gw_samples import SITES, TS, Clock, present
from hostile_samples import SHOWN, poison
from test_web import serving
from web_login import PASSWORD, add_user, login

from gateway.crisis import CrisisSender
from gateway.store import SqliteStore
from gateway.web import make_app

FORBIDDEN = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\ufffe", "\uffff"]


class Broker:
    def is_connected(self) -> bool:
        return True

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        return True


@pytest.fixture
def db(tmp_path: Path):
    store = SqliteStore(tmp_path / "sot.sqlite3")
    store.upsert_sites(SITES)
    add_user(store, "anna", "viewer")
    add_user(store, "kim", "coordinator")
    yield store
    store.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def assert_clean(text: str, where: str) -> None:
    for c in FORBIDDEN:
        assert c not in text, (where, hex(ord(c)))
    assert "\\ud800" not in text.lower(), where  # not even as a JSON escape
    if not where.startswith(("/api/", "events")):
        assert "<b>" not in text, where  # a page shows markup as text


def test_a_poisoned_site_cannot_break_a_page_the_api_or_the_signage_stream(db):
    poison(db)
    clock = Clock(TS + 5)
    pages = ["/", "/sites/are-kall", "/signage/are-kall", "/api/sites", "/api/sites/are-kall",
             "/api/sites/are-kall/events", "/api/signage/are-kall", "/api/alerts",
             "/api/sites/are-kall/history", "/alerts", "/crisis", "/crisis/m1", "/api/crisis",
             "/api/crisis/m1", "/api/alerts/1", "/cap.atom", "/cap/1.xml"]

    async def main() -> dict[str, tuple[int, bytes]]:
        out = {}
        async with serving(make_app(db, clock)) as base, client() as s:
            await login(s, base, "anna")
            for p in pages:
                async with s.get(base + p) as r:
                    out[p] = (r.status, await r.read())
            async with s.get(base + "/signage/are-kall/events") as r:
                assert r.status == 200
                first = b""
                while first.count(b"\n\n") < 2:  # retry: ...; then the first state event
                    first += await r.content.read(4096)
                out["events"] = (r.status, first)
        return out

    got = run(main())
    for p, (code, body) in got.items():
        assert code == 200, (p, code, body[:300])
        text = body.decode("utf-8")  # strict: a lone surrogate would raise here
        assert_clean(text, p)
    # what was there shows as the replacement character, not silently dropped
    assert SHOWN in got["/"][1].decode() and SHOWN in got["/sites/are-kall"][1].decode()
    view = json.loads(got["events"][1].decode().split("data: ", 1)[1].split("\n\n")[0])
    assert view["mode"].startswith(SHOWN) and SHOWN in json.dumps(view, ensure_ascii=False)
    site = json.loads(got["/api/sites/are-kall"][1])
    assert site["state"]["grid"]["state"].startswith(SHOWN)
    assert any(k.startswith(SHOWN) for k in site["state"]["devices"])


def test_ids_that_are_not_plain_numbers_are_404_not_500(db):
    odd = ["²", "１２", "٣", "-1", "+1", "1.0", "0x10", " 1", "1 ", "9" * 23, "1e3", "%00",
           "%F0%9F%92%A5", "%ED%A0%80", "1%00"]

    async def main() -> list[tuple[str, int, dict[str, str]]]:
        out = []
        async with serving(make_app(db, Clock())) as base, client() as s:
            csrf = await login(s, base, "kim")
            for ref in odd:
                for method, path in (("GET", f"/api/alerts/{ref}"), ("GET", f"/cap/{ref}.xml"),
                                     ("POST", f"/api/alerts/{ref}/ack"),
                                     ("POST", f"/alerts/{ref}/ack"),
                                     # ids that are names: unknown, never a 500
                                     ("GET", f"/sites/{ref}"), ("GET", f"/api/sites/{ref}"),
                                     ("GET", f"/api/sites/{ref}/events"),
                                     ("GET", f"/api/sites/{ref}/history"),
                                     ("GET", f"/signage/{ref}"), ("GET", f"/api/signage/{ref}"),
                                     ("GET", f"/signage/{ref}/events"),
                                     ("GET", f"/crisis/{ref}"), ("GET", f"/api/crisis/{ref}"),
                                     ("POST", f"/api/crisis/{ref}/withdraw"),
                                     ("POST", f"/crisis/{ref}/withdraw")):
                    data = {"note": "x"} if method == "POST" else None
                    async with s.request(method, base + path, allow_redirects=False, data=data,
                                         headers={"X-CSRF-Token": csrf}) as r:
                        out.append((path, r.status, dict(r.headers)))
        return out

    for path, code, headers in run(main()):
        assert code == 404, (path, code)
        assert "Content-Security-Policy" in headers, path
    from gateway.web import parse_id

    assert parse_id("12") == 12 and parse_id("²") is None and parse_id("9" * 19) is None


def test_bad_bodies_are_the_clients_error(db):
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/api/crisis", {"json": {"sv": "x", "severity": "info", "from": "K", "sites": 5}}),
        ("/api/crisis", {"json": {"sv": "x", "severity": "info", "from": "K",
                                  "sites": ["are-kall", 7]}}),
        ("/api/crisis", {"json": {"sv": "x", "severity": "info", "from": "K",
                                  "municipalities": {"a": 1}}}),
        ("/api/crisis", {"json": ["not", "an", "object"]}),
        ("/api/crisis", {"data": b"\xff\xfe{", "headers": {"Content-Type": "application/json"}}),
        ("/crisis", {"data": b"sv=\xff&csrf=@CSRF@",
                     "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
        ("/crisis", {"data": b"sv=%ff%fe&csrf=@CSRF@",
                     "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
    ]
    login_bodies = [
        b"user=kim&password=\xff",
        b"user=%FF&password=x",
        b"--x\r\nContent-Disposition: form-data; name=user\r\n\r\nkim\r\n--x--\r\n",
    ]

    async def main() -> list[tuple[str, int]]:
        out = []
        app = make_app(db, Clock(), crisis=CrisisSender(db, Broker(), Clock()))
        async with serving(app) as base, client() as s:
            csrf = await login(s, base, "kim")
            for path, kw in bodies:
                if "data" in kw:
                    kw = {**kw, "data": kw["data"].replace(b"@CSRF@", csrf.encode())}
                async with s.post(base + path, headers={"X-CSRF-Token": csrf,
                                                        **kw.pop("headers", {})}, **kw) as r:
                    out.append((path, r.status))
            async with client() as anon:
                async with anon.get(base + "/login") as r:
                    token = r.cookies["sot_login"].value
                for ctype in ("application/x-www-form-urlencoded", "multipart/form-data",
                              "multipart/form-data; boundary=", "text/plain"):
                    for body in login_bodies:
                        async with anon.post(base + "/login", data=body,
                                             headers={"Content-Type": ctype},
                                             cookies={"sot_login": token}) as r:
                            out.append((f"/login {ctype}", r.status))
        return out

    for path, code in run(main()):
        assert code in (400, 403, 415), (path, code)


def test_safe_next_keeps_the_browser_on_this_site():
    from gateway.web import safe_next

    for evil in ["/\t/evil.example", "/\n/evil.example", "/\r/evil.example", "//evil.example",
                 "/\\evil.example", "\\\\evil.example", "https://evil.example/",
                 "/ /evil.example", "/\x00/evil", "/\x7f/evil", "javascript:alert(1)",
                 "evil.example", "", "/%09/evil.example".replace("%09", "\t"),
                 "/\u3000/evil.example", "/" + "a" * 3000]:
        assert safe_next(evil) == "/", repr(evil)
    assert safe_next("/sites/are-kall?x=1") == "/sites/are-kall?x=1"
    assert safe_next("/sites/åre") == "/sites/%C3%A5re"  # ASCII only in a Location header


def test_login_redirect_never_leaves_the_site(db):
    nexts = ["/\t/evil.example", "/\\evil.example", "//evil.example", "https://evil.example",
             "/\r\n/evil.example", "/alerts"]

    async def main() -> list[tuple[str, int, str]]:
        out = []
        async with serving(make_app(db, Clock())) as base:
            for nxt in nexts:
                async with client() as s:
                    async with s.get(base + "/login") as r:
                        token = r.cookies["sot_login"].value
                    async with s.post(base + "/login", allow_redirects=False,
                                       data={"user": "anna", "password": PASSWORD,
                                             "login_csrf": token, "next": nxt}) as r:
                        out.append((nxt, r.status, r.headers.get("Location", "")))
        return out

    for nxt, code, location in run(main()):
        assert code == 303, nxt
        assert location == ("/alerts" if nxt == "/alerts" else "/"), (nxt, location)


def test_security_headers_on_every_kind_of_answer_and_head_on_the_stream(db):
    async def boom(request: Any) -> Any:
        raise RuntimeError("a bug")

    async def main() -> list[tuple[str, int, dict[str, str], bytes]]:
        out = []
        app = make_app(db, Clock(TS))
        app.router.add_get("/api/boom", boom)  # a handler with a bug: a 500
        async with serving(app) as base, client() as s:
            for method, path in (("GET", "/"), ("GET", "/login"), ("GET", "/nowhere"),
                                 ("GET", "/api/sites"), ("POST", "/api/sites"),
                                 ("GET", "/static/nothing.css"), ("GET", "/static/signage.css"),
                                 ("GET", "/cap.atom"), ("HEAD", "/signage/are-kall/events"),
                                 ("GET", "/signage/nowhere/events")):
                async with s.request(method, base + path, allow_redirects=False) as r:
                    out.append((f"{method} {path}", r.status, dict(r.headers),
                                await r.read()))
            await login(s, base, "anna")
            async with s.get(base + "/api/boom") as r:
                out.append(("GET /api/boom", r.status, dict(r.headers), await r.read()))
            async with s.get(base + "/signage/are-kall/events") as r:
                out.append(("GET stream", r.status, dict(r.headers), b""))
        return out

    got = run(main())
    codes = {k: c for k, c, _, _ in got}
    assert codes["GET /"] == 303 and codes["GET /nowhere"] in (303, 404)
    assert codes["POST /api/sites"] in (401, 405) and codes["GET /api/boom"] == 500
    assert codes["GET /static/nothing.css"] == 404
    for what, _, headers, _ in got:
        for h in ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
                  "Referrer-Policy", "Cache-Control"):
            assert h in headers, (what, h)
    head = next(x for x in got if x[0] == "HEAD /signage/are-kall/events")
    assert head[1] == 200 and head[3] == b""
    assert head[2]["Content-Type"].startswith("text/event-stream")
    boom_body = next(x for x in got if x[0] == "GET /api/boom")[3]
    assert b"a bug" not in boom_body and b"Traceback" not in boom_body


def test_any_host_header_gives_a_feed_with_plain_absolute_links(db):
    """Without a configured base URL the feed's links follow the Host the reader sent; a Host
    that is not a plain host[:port] is never a 500 and never ends up in a link."""
    import re
    import xml.etree.ElementTree as ET

    hosts = [b"a b", b"[::1", b"x:99999", b"\xff", b"", b"evil.example:80/path", b"%00",
             b"a@evil.example", b"sot.example:8080", b"[::1]:8080"]

    async def main() -> list[tuple[bytes, bytes]]:
        out = []
        async with serving(make_app(db, Clock())) as base:
            port = int(base.rsplit(":", 1)[1])
            for host in hosts:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET /cap.atom HTTP/1.1\r\nHost: " + host +
                        b"\r\nConnection: close\r\n\r\n")
                out.append((host, await r.read()))
                w.close()
        return out

    for host, answer in run(main()):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (host, head[:80])
        link = present(present(ET.fromstring(body).find("{http://www.w3.org/2005/Atom}link"))
                       .get("href"))
        if host in (b"sot.example:8080", b"[::1]:8080"):
            assert link == f"http://{host.decode()}/cap.atom"
        else:
            assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+/cap\.atom", link), (host, link)
