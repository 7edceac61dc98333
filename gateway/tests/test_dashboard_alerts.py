"""The alert inbox: a coordinator acknowledges from the page (audit-logged), a viewer cannot;
and `sot user` manages the dashboard's users."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from alert_rig import Rig
from web_login import PASSWORD, add_user, login

from gateway.cli import main
from gateway.store import SqliteStore
from gateway.web import make_app

FAILED = {"mode": "backup_failed", "grid": {"state": "lost"}, "genset": {"state": "fault"},
          "capability": {"power": "none"}}


def test_coordinator_acknowledges_from_the_inbox(tmp_path: Path):
    rig = Rig(tmp_path / "sot.sqlite3")
    rig.state("krokom-follinge", **FAILED)
    rig.advance(60)
    rig.close()

    async def main_() -> None:
        db = SqliteStore(tmp_path / "sot.sqlite3")
        add_user(db, "anna", "viewer")
        add_user(db, "kim", "coordinator")
        firing = [a for a in db.alerts() if a.status == "firing"]
        assert firing, db.alerts()
        alert = firing[0]
        runner = web.AppRunner(make_app(db), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        jar = aiohttp.CookieJar(unsafe=True)
        try:
            async with aiohttp.ClientSession(cookie_jar=jar) as s:
                csrf = await login(s, base, "anna")
                async with s.get(base + "/alerts") as r:
                    page = await r.text()
                assert f'data-alert="{alert.id}"' in page and "Kvittera" not in page
                async with s.post(f"{base}/alerts/{alert.id}/ack",
                                  data={"csrf": csrf, "note": "x"}) as r:
                    assert r.status == 403
                csrf = await login(s, base, "kim")
                async with s.get(base + "/alerts") as r:
                    page = await r.text()
                form_csrf = re.search(r'name="csrf" value="([^"]+)"', page)
                assert form_csrf and form_csrf.group(1) == csrf
                async with s.post(f"{base}/alerts/{alert.id}/ack", allow_redirects=False,
                                  data={"csrf": csrf, "note": "ringt elverket"}) as r:
                    assert r.status == 303
            after = db.alert(alert.id)
            assert after is not None and after.status == "acknowledged"
            assert after.acked_by == "kim" and after.ack_note == "ringt elverket"
            assert any(a["action"] == "ack" and a["actor"] == "kim" for a in db.audit_log())
        finally:
            await runner.cleanup()
            db.close()

    asyncio.run(asyncio.wait_for(main_(), 30))


def test_sot_user_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    db = tmp_path / "sot.sqlite3"
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    assert main(["user", "add", "kim", "--role", "coordinator", "--password-file", str(pw),
                 "--db", str(db)]) == 0
    pw.write_text("short\n")
    assert main(["user", "add", "eva", "--role", "admin", "--password-file", str(pw),
                 "--db", str(db)]) == 2  # too short: refused, nothing stored
    assert main(["user", "add", "Eva Berg", "--role", "admin", "--password-file", str(pw),
                 "--db", str(db)]) == 2
    capsys.readouterr()
    assert main(["user", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "kim" in out and "coordinator" in out and "eva" not in out
    store = SqliteStore(db)
    try:
        row = store.user("kim")
        assert row is not None and row["pwhash"].startswith("scrypt$")
        assert PASSWORD not in row["pwhash"]
    finally:
        store.close()
    assert main(["user", "remove", "kim", "--db", str(db)]) == 0
    assert main(["user", "remove", "kim", "--db", str(db)]) == 1
