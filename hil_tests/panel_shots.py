"""Screenshots of the shop panel for the staff guide, drawn by the real firmware.

    python -m hil_tests.panel_shots [--out docs/img] [--scale 2]

Each canned view below is rendered by `sot.panel` and the unix display driver under the
MicroPython unix port (firmware as .mpy, as the unit tests run it); the driver's
PNG is checked with `hil_tests.rig.png` and written, scaled up for the docs, to
`<out>/panel-<name>.png`. `render_views()` is shared with `hil_tests/test_panel_png.py`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gateway.tooling import firmware
from hil_tests.rig import png

REPO = Path(__file__).resolve().parent.parent
# The board's 64 KiB in 64-bit terms, as the rig gives the firmware (hil_tests/rig/dut.py): here
# the code itself sits in the heap too (.mpy files, no ROMFS), and importing sot.hal brings in
# asyncio. The unit tests hold the renderer alone to the literal 64 KiB.
HEAP = "128k"

# Runs inside MicroPython: one JSON job per line in, one JSON result per line out.
DRIVER = """\
import gc
import json
import sys
import time
from sot.hal.unix_display import ColorDisplay, MonoDisplay
from sot.panel import Panel

out = sys.argv[1]
with open(sys.argv[2]) as f:
    for line in f:
        job = json.loads(line)
        prefix = out + "/panel-" + job["name"]
        d = MonoDisplay(prefix) if job.get("mono") else ColorDisplay(prefix)
        p = Panel(d, job.get("lang", "sv"))
        gc.collect()
        t0 = time.ticks_us()
        ok = p.render(job["view"])
        us = time.ticks_diff(time.ticks_us(), t0)
        t0 = time.ticks_us()
        p.layout(job["view"])
        layout_us = time.ticks_diff(time.ticks_us(), t0)
        p.ops.clear()
        print(json.dumps({"name": job["name"], "ok": ok, "error": p.error, "us": us,
                          "layout_us": layout_us}))
        p = d = None
        gc.collect()
"""

NOW = 1782909000  # 2026-07-01 12:30 UTC = 14:30 in Sweden (CEST)

SNAP: dict[str, Any] = {
    "mode": "normal",
    "grid": {"state": "ok", "v": 231.2, "f": 50.0},
    "genset": {"state": "stopped", "mode": "auto", "ready": True, "run_hours": 1234.5,
               "battery_v": 24.1, "alarms": []},
    "fuel": {"pct": 62.0, "litres": 248.0, "hours_left": 62.0, "refuel_by": None,
             "confidence": "high"},
    "tanks": {"diesel": 8200, "petrol": 5400},
    "pumps": {"available": 2, "total": 2},
    "devices": {"grid": "online", "genset": "online", "tank": "online", "pumps": "online"},
    "capability": {"power": "grid", "hours_left": 62.0,
                   "fuel_for_sale": {"diesel": 8000, "petrol": 5200},
                   "shop_open": True, "info_point": False},
}

CRISIS_SEVERE = {
    "id": "k-0042", "severity": "severe", "from": "Krokoms kommun", "ts": NOW - 1500,
    "acked": None,
    "sv": "Kokningsrekommendation: koka allt dricksvatten i minst 3 minuter. Vatten delas ut "
          "vid brandstationen kl 16-19. Ring 113 13 vid fara för liv.",
    "en": "Boil water notice: boil all drinking water for at least 3 minutes. Water is handed "
          "out at the fire station 16-19. Call 112 in an emergency.",
}
CRISIS_WARNING = {
    "id": "k-0043", "severity": "warning", "from": "Länsstyrelsen Jämtland", "ts": NOW - 5400,
    "acked": NOW - 1200,
    "sv": "Strömavbrottet väntas pågå till i morgon eftermiddag. Spara på bränslet.",
    "en": None,
}


def _view(snap: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    v: dict[str, Any] = {"now": NOW, "page": 0, "link": "ok", "safe_mode": False,
                         "shop_open": True, "snap": snap, "crisis": None, "crisis_count": 0}
    v.update(kw)
    return v


def _snap(**changes: Any) -> dict[str, Any]:
    s = copy.deepcopy(SNAP)
    for key, val in changes.items():
        if isinstance(val, dict) and isinstance(s.get(key), dict):
            s[key].update(val)
        else:
            s[key] = val
    return s


def views() -> list[dict[str, Any]]:
    """The canned screens: every mode and page, English, and the mono panel."""
    outage = dict(grid={"state": "lost", "v": 0.0, "f": 0.0},
                  capability={"power": "none", "hours_left": 62.0})
    backup = dict(mode="on_backup", grid={"state": "lost", "v": 0.0, "f": 0.0},
                  genset={"state": "running"},
                  fuel={"pct": 38.0, "litres": 152.0, "hours_left": 31.0,
                        "refuel_by": NOW + 31 * 3600, "confidence": "medium"},
                  capability={"power": "backup", "hours_left": 31.0})
    failed = dict(mode="backup_failed", grid={"state": "lost", "v": 0.0, "f": 0.0},
                  genset={"state": "stopped", "mode": "manual", "ready": False},
                  pumps={"available": 0, "total": 2},
                  capability={"power": "none", "hours_left": 62.0})
    alarms = [["low_oil_pressure", "shutdown"], ["fail_to_start", "shutdown"],
              ["battery_low_voltage", "warning"], ["charge_alt_failure", "warning"]]
    return [
        {"name": "normal", "view": _view(_snap())},
        {"name": "grid-lost", "view": _view(_snap(mode="grid_lost", **outage),
                                            shop_open=False)},
        {"name": "on-backup", "view": _view(_snap(**backup), crisis=CRISIS_WARNING,
                                            crisis_count=1)},
        {"name": "backup-failed", "view": _view(_snap(**failed), crisis=CRISIS_SEVERE,
                                                crisis_count=3, link="down")},
        {"name": "degraded", "view": _view(_snap(mode="degraded", devices={"tank": "offline"},
                                                 fuel={"pct": None, "litres": None,
                                                       "hours_left": None},
                                                 capability={"hours_left": None}),
                                           safe_mode=True)},
        {"name": "starting", "view": _view(None, link="down")},
        {"name": "message", "view": _view(_snap(**failed), page=1, crisis=CRISIS_SEVERE,
                                          crisis_count=3)},
        {"name": "message-acked", "view": _view(_snap(**backup), page=1, crisis=CRISIS_WARNING,
                                                crisis_count=1)},
        {"name": "message-none", "view": _view(_snap(), page=1)},
        {"name": "details", "view": _view(_snap(**dict(failed, devices={"pumps": "mismatch"},
                                                       genset={"state": "fault",
                                                               "mode": "manual",
                                                               "ready": False,
                                                               "alarms": alarms})),
                                          page=2, safe_mode=True,
                                          exercise=(NOW - 6 * 86400, "fail"))},
        {"name": "en-on-backup", "lang": "en",
         "view": _view(_snap(**backup), crisis=CRISIS_SEVERE, crisis_count=1)},
        {"name": "nodata", "view": "not a view"},
        {"name": "mono-normal", "mono": True, "view": _view(_snap())},
        {"name": "mono-backup-failed", "mono": True,
         "view": _view(_snap(**failed), crisis=CRISIS_SEVERE, crisis_count=3)},
    ]


def render_views(jobs: list[dict[str, Any]], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Render each job under MicroPython into out_dir/panel-<name>.png/.txt; returns the
    driver's record per name (ok, error, us = render time in microseconds)."""
    mpy = firmware.build()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="panel-shots-") as tmp:
        drv = Path(tmp) / "panel_driver.py"
        drv.write_text(DRIVER)
        jobs_path = Path(tmp) / "jobs.jsonl"
        jobs_path.write_text("".join(json.dumps(j, ensure_ascii=False) + "\n" for j in jobs))
        env = dict(os.environ, MICROPYPATH=f".frozen:{mpy}:{tmp}")
        res = subprocess.run([firmware.micropython(), "-X", f"heapsize={HEAP}", str(drv),
                              str(out_dir), str(jobs_path)], capture_output=True, text=True,
                             env=env, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"panel driver failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    out = {}
    for line in res.stdout.splitlines():
        rec = json.loads(line)
        out[rec["name"]] = rec
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--scale", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="panel-raw-") as tmp:
        recs = render_views(views(), Path(tmp))
        for name, rec in recs.items():
            img = png.read((Path(tmp) / f"panel-{name}.png").read_bytes())
            scale = args.scale * 2 if img.width <= 128 else args.scale
            dst = args.out / f"panel-{name}.png"
            dst.write_bytes(png.write_rgb(img, scale))
            print(f"{dst.relative_to(REPO) if dst.is_relative_to(REPO) else dst}: "
                  f"{img.width}x{img.height} render {rec['us'] / 1000:.1f} ms "
                  f"(layout {rec['layout_us'] / 1000:.1f} ms)"
                  + ("" if rec["ok"] else f" FALLBACK {rec['error']}"))


if __name__ == "__main__":
    main()
