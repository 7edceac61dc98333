"""The overview page as a real browser renders it (headless Chromium, never a downloaded one).

Set SOT_UPDATE_SCREENSHOTS=1 to refresh docs/img/overview.png; otherwise the screenshot goes
to a temporary folder and only its existence is checked.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from aiohttp import web
from gw_samples import TS, birth, event, raw, state, status

from gateway.config import load_sites
from gateway.ingest import Ingest
from gateway.store import SiteInfo, SqliteStore
from gateway.web import make_app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "img" / "overview.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", "--disable-quic"]
TIMEOUT_S = 60


async def chromium(profile: Path, *args: str) -> str:
    """Run Chromium to completion; on timeout kill it (and its helpers) by its process id."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    except TimeoutError:
        # start_new_session made Chromium the leader of a group of its own: its id names
        # exactly the processes this test started.
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"chromium did not finish within {TIMEOUT_S} s") from None
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def seeded_store(path: Path) -> tuple[SqliteStore, Ingest]:
    db = SqliteStore(path)
    db.upsert_sites(SiteInfo(s.id, s.name, s.municipality, s.lat, s.lon,
                             s.mqtt["heartbeat_s"]) for s in load_sites().values())
    ing = Ingest(db, lambda: TS + 20)
    for site, over in (
        ("are-kall", {}),
        ("harjedalen-hede", {"mode": "normal", "grid": {"state": "ok", "v": 231.4, "f": 50.0},
                             "genset": {"state": "stopped"},
                             "fuel": {"pct": 96.0, "hours_left": 112.9},
                             "devices": {"tank": "online"}}),
        ("krokom-follinge", {"mode": "backup_failed", "genset": {"state": "fault"},
                             "fuel": {"pct": 41.0, "hours_left": 48.2},
                             "devices": {"tank": "online"}}),
    ):
        ing.handle(f"sot/v1/{site}/status", raw(status()))
        ing.handle(f"sot/v1/{site}/birth", raw(birth()))
        ing.handle(f"sot/v1/{site}/state", raw(state(**over)))
    ing.handle("sot/v1/krokom-follinge/event", raw(event("gen_failed_to_start")))
    return db, ing


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs /usr/bin/chromium "
                    "(scripts/bootstrap.sh --browser installs it)")
def test_overview_in_headless_chromium(tmp_path: Path):
    db, ing = seeded_store(tmp_path / "sot.sqlite3")
    update = os.environ.get("SOT_UPDATE_SCREENSHOTS") == "1"
    png = DOCS_PNG if update else tmp_path / "overview.png"

    async def main() -> str:
        runner = web.AppRunner(make_app(db, lambda: TS + 25, ing.stats), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        try:
            dom = await chromium(tmp_path / "profile-dom", "--dump-dom", url)
            png.parent.mkdir(parents=True, exist_ok=True)
            await chromium(tmp_path / "profile-png", "--window-size=1280,800",
                           f"--screenshot={png}", "--hide-scrollbars", url)
            return dom
        finally:
            await runner.cleanup()

    try:
        dom = asyncio.run(main())
    finally:
        db.close()
    for name in ("Kall", "Hede", "Föllinge", "Åre", "Härjedalen", "Krokom"):
        assert name in dom
    for label in ("Nätström", "Reservkraft", "Timmar kvar", "Senast uppdaterad",
                  "Reservkraft i drift", "Normal drift", "Reservkraft har inte startat"):
        assert label in dom
    assert dom.count('data-site="') == 3
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
