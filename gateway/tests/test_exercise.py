"""Generator test runs at the gateway (gateway/exercise.py): when the next run is due in Swedish
local time (DST weeks, the first weekday of a month), the runs a site reported, the site page's
values, and the alert rules exercise_failed and exercise_overdue through the real ingest, store
and engine on a hand-moved clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alert_rig import Rig, shipped_config
from gw_samples import EVENT_DATA, TS

from gateway import exercise
from gateway.config import load_sites
from gateway.exercise import TZ, describe, next_run, site_page


def utc(y: int, mo: int, d: int, h: int, mi: int) -> float:
    """The instant of a local (Stockholm) wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()


def local(t: float | None) -> str:
    assert t is not None
    return datetime.fromtimestamp(t, TZ).strftime("%Y-%m-%d %a %H:%M %Z")


MONTHLY_TUE = {"every": "month", "weekday": 1, "at": 600, "minutes": 15, "on_load": False}


def test_monthly_is_the_first_such_weekday_of_the_month():
    # December 2026: Tuesday the 1st; January 2027: Tuesday the 5th; March 2027: the 2nd
    assert local(next_run(MONTHLY_TUE, utc(2026, 11, 20, 12, 0))) == "2026-12-01 Tue 10:00 CET"
    assert local(next_run(MONTHLY_TUE, utc(2026, 12, 1, 10, 0))) == "2027-01-05 Tue 10:00 CET"
    assert local(next_run(MONTHLY_TUE, utc(2026, 12, 1, 9, 59))) == "2026-12-01 Tue 10:00 CET"
    assert local(next_run(MONTHLY_TUE, utc(2027, 2, 3, 0, 0))) == "2027-03-02 Tue 10:00 CET"
    # a month whose first Monday is the 7th (June 2027)
    mon = {"every": "month", "weekday": "mon", "time": "09:30"}  # the TOML form
    assert local(next_run(mon, utc(2027, 6, 1, 0, 0))) == "2027-06-07 Mon 09:30 CEST"


def test_weekly_across_the_summer_time_changes_keeps_local_time():
    sun = {"every": "week", "weekday": 6, "at": 600}
    # 2027-03-28 is the last Sunday of March: clocks go forward at 02:00
    assert local(next_run(sun, utc(2027, 3, 22, 0, 0))) == "2027-03-28 Sun 10:00 CEST"
    t = next_run(sun, utc(2027, 3, 22, 0, 0))
    assert t == datetime(2027, 3, 28, 8, 0, tzinfo=exercise.ZoneInfo("UTC")).timestamp()
    assert local(next_run(sun, utc(2027, 10, 25, 0, 0))) == "2027-10-31 Sun 10:00 CET"
    # the week before and after: 7 days apart in local time, not in UTC hours
    a = next_run(sun, utc(2027, 10, 25, 0, 0))
    assert a is not None
    b = next_run(sun, a)
    assert b is not None and b - a == 7 * 86400
    a0 = next_run(sun, utc(2027, 10, 18, 0, 0))
    assert a0 is not None and a - a0 == 7 * 86400 + 3600  # the week with an extra hour


def test_a_time_in_the_skipped_hour_is_when_the_clock_jumps_and_the_repeated_hour_counts_once():
    gap = {"every": "week", "weekday": 6, "at": 2 * 60 + 30}
    t = next_run(gap, utc(2027, 3, 27, 0, 0))
    assert local(t) == "2027-03-28 Sun 03:00 CEST"  # the controller's clock passes 02:30 at 03:00
    t = next_run(gap, utc(2027, 10, 30, 0, 0))
    assert t is not None and local(t) == "2027-10-31 Sun 02:30 CEST"  # the first of two 02:30s
    t2 = next_run(gap, t)
    assert t2 is not None and local(t2) == "2027-11-07 Sun 02:30 CET"


def test_without_a_schedule_there_is_no_next_run_and_the_words_say_so():
    assert next_run(None, TS) is None
    assert describe(None)[0] == "ingen schemalagd provkörning"
    assert describe(MONTHLY_TUE) == ("första tisdagen i månaden kl. 10:00, 15 min utan last",
                                     "first Tuesday of the month at 10:00, 15 min off load")


def test_the_shipped_sites_have_schedules_the_gateway_can_read():
    sites = load_sites()
    for s in sites.values():
        assert s.exercise is not None
        assert next_run(s.exercise, TS) is not None


def ran(result: str, started: float, why: str | None = None) -> dict[str, Any]:
    return {**EVENT_DATA["exercise_done"], "started": int(started), "result": result,
            "why": why}


class ExRig(Rig):
    def __init__(self, path: Path, schedule: dict[str, Any] | None = MONTHLY_TUE) -> None:
        super().__init__(path, shipped_config())
        # read the runs at every evaluation (the service's source reads them once a minute)
        self.engine.exercise = exercise.FactsSource(self.store, {"are-kall": schedule}, ttl_s=0)
        self.n = 0

    def report(self, data: dict[str, Any], site: str = "are-kall") -> None:
        self.n += 1
        msg = {"boot": 1, "seq": 1000 + self.n, "ts": int(self.clock.t), "type": "exercise_done",
               "data": data, "hist": False}
        import json
        out = self.ingest.handle(f"sot/v1/{site}/event", json.dumps(msg).encode()).outcome
        assert out == "stored", out


@pytest.fixture
def rig(tmp_path: Path):
    r = ExRig(tmp_path / "sot.sqlite3")
    yield r
    r.close()


def test_a_failed_run_fires_exercise_failed_and_a_later_pass_resolves_it(rig: ExRig):
    rig.state()
    rig.report(ran("pass", rig.clock.t - 3600))
    rig.advance(60)
    assert not {k for k in rig.firing() if k.startswith("exercise")}
    rig.report(ran("fail", rig.clock.t - 120, "mode:manual"))
    rig.advance(60)
    assert "exercise_failed:are-kall" in rig.firing()
    a = rig.open_alerts()["exercise_failed:are-kall"]
    assert "underkändes" in a.sv and "läge manual" in a.sv and "manual, not AUTO" in a.en
    notes = rig.store.notifications(a.id)
    assert {n["contact"] for n in notes} == {"Anna (samordnare)", "Teknikjour"}
    rig.report(ran("pass", rig.clock.t))
    rig.advance(60)
    assert "exercise_failed:are-kall" not in rig.open_alerts()


def test_exercise_overdue_fires_when_the_last_pass_is_older_than_the_schedule_allows(rig: ExRig):
    rig.state()
    # TS is 2026-11-23: a pass on the first Tuesday of November is good until the first Tuesday
    # of December (the 1st) at 10:00, plus the rule's grace of 24 h
    rig.report(ran("pass", utc(2026, 11, 3, 10, 0)))
    rig.advance(60)
    assert "exercise_overdue:are-kall" not in rig.open_alerts()
    page = site_page(rig.store, MONTHLY_TUE, "are-kall", rig.clock.t)
    assert page["last"]["result"] == "pass" and not page["overdue"]
    assert local(page["next"]) == "2026-12-01 Tue 10:00 CET"
    rig.clock.t = utc(2026, 12, 2, 9, 59)
    rig.state()
    rig.advance(60)
    assert "exercise_overdue:are-kall" not in rig.open_alerts()
    rig.advance(120)
    assert "exercise_overdue:are-kall" in rig.firing()
    a = rig.open_alerts()["exercise_overdue:are-kall"]
    assert "ingen godkänd provkörning sedan" in a.sv
    assert site_page(rig.store, MONTHLY_TUE, "are-kall", rig.clock.t)["overdue"]
    # a failed run does not make up for it; a passed one does
    rig.report(ran("fail", rig.clock.t - 600, "no_start"))
    rig.advance(60)
    assert "exercise_overdue:are-kall" in rig.firing()
    rig.report(ran("pass", rig.clock.t))
    rig.advance(60)
    assert "exercise_overdue:are-kall" not in rig.open_alerts()
    hist = site_page(rig.store, MONTHLY_TUE, "are-kall", rig.clock.t)["history"]
    assert [r["result"] for r in hist] == ["pass", "fail", "pass"]


def test_without_a_schedule_or_any_run_the_rules_stay_quiet(tmp_path: Path):
    r = ExRig(tmp_path / "a.sqlite3", schedule=None)
    try:
        r.state()
        r.advance(86400 * 40, step=3600)
        assert not {k for k in r.open_alerts() if k.startswith("exercise")}
    finally:
        r.close()


def test_the_site_page_shows_last_next_and_history(tmp_path: Path):
    from test_web import feed, get, run, serving
    from web_login import add_user

    from gateway.web import EXERCISE_SCHEDULES, make_app

    r = ExRig(tmp_path / "w.sqlite3")
    try:
        add_user(r.store)
        feed(r.ingest)
        r.report(ran("fail", utc(2026, 11, 3, 10, 0), "mode:manual"))
        r.report(ran("pass", utc(2026, 11, 20, 14, 5)))
        app = make_app(r.store, r.clock, r.ingest.stats)
        app[EXERCISE_SCHEDULES] = {"are-kall": MONTHLY_TUE}

        async def main() -> tuple[int, Any, dict[str, str]]:
            async with serving(app) as base:
                return await get(base, "/sites/are-kall")

        code, html, _ = run(main())
    finally:
        r.close()
    assert code == 200
    assert "Provkörning" in html and "första tisdagen i månaden kl. 10:00" in html
    last = html.split("data-exercise-last>")[1].split("</dd>")[0]
    assert "2026-11-20 14:05" in last and "Godkänd" in last
    assert "2026-12-01 10:00" in html.split("data-exercise-next>")[1].split("</dd>")[0]
    table = html.split('<table class="exercise">')[1].split("</table>")[0]
    assert table.count("<tr>") == 3 and "mode:manual" in table



def test_the_engine_reads_the_runs_at_most_once_a_minute_per_site(tmp_path: Path):
    r = ExRig(tmp_path / "c.sqlite3")
    try:
        src = exercise.FactsSource(r.store, {"are-kall": MONTHLY_TUE})
        r.engine.exercise = src
        r.state()
        r.advance(30)
        r.report(ran("fail", r.clock.t, "no_start"))
        r.advance(59, step=1)  # the runs were read at the first round, 30 s in
        assert "exercise_failed:are-kall" not in r.open_alerts()  # not read again yet
        r.advance(2, step=1)
        assert "exercise_failed:are-kall" in r.firing()
    finally:
        r.close()
