"""Generator test runs (provkörning) at the gateway: when the next one is due, what the sites
reported, and the plain values the site page and the alert rules read (docs/commands.md).

The controller runs the site's `[exercise]` schedule on its own clock (firmware/sot/exercise.py)
and reports every run as one `exercise_done` event. `next_run` here follows the controller's rule
to the minute: the run starts at the first instant the local (Europe/Stockholm) wall clock shows
the scheduled time on a scheduled day - on the night summer time begins a time in the skipped
hour is reached at 03:00, and on the night it ends the first of the two 02:xx is the one.

A schedule is the compiled form (`gateway.config.load_exercise`: every, weekday 0 = Monday, at =
minutes after local midnight, minutes, on_load); the TOML form (weekday "mon", time "10:00") is
taken too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Europe/Stockholm")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS_SV = ("måndag", "tisdag", "onsdag", "torsdag", "fredag", "lördag", "söndag")
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
HISTORY = 20  # runs kept on the site page


class _Events(Protocol):
    def events_of_type(self, site: str, etype: str,
                       limit: int = 50) -> list[dict[str, Any]]: ...


def _parse(schedule: Mapping[str, Any]) -> tuple[str, int, int]:
    """(every, weekday 0..6, minutes after local midnight) of either form."""
    wd = schedule["weekday"]
    weekday = WEEKDAYS.index(wd) if isinstance(wd, str) else int(wd)
    if "at" in schedule:
        at = int(schedule["at"])
    else:
        hh, _, mm = str(schedule["time"]).partition(":")
        at = int(hh) * 60 + int(mm)
    return str(schedule.get("every", "month")), weekday, at


def _start(day: date, at: int) -> float:
    """The first instant the local clock shows `at` (or later) on `day`."""
    local = datetime(day.year, day.month, day.day, at // 60, at % 60, tzinfo=TZ)  # fold 0: first
    t = local.timestamp()
    back = datetime.fromtimestamp(t, TZ)
    if (back.date(), back.hour * 60 + back.minute) == (day, at):
        return t
    # A time the clock skips (spring forward): the clock passes it at the moment it jumps,
    # the last minute whose predecessor still read earlier than `at`.
    t = float(int(t) // 60 * 60)
    while True:
        prev = datetime.fromtimestamp(t - 60, TZ)
        if prev.date() != day or prev.hour * 60 + prev.minute < at:
            return t
        t -= 60


def next_run(schedule: Mapping[str, Any] | None, after: float) -> float | None:
    """The next scheduled start strictly after `after` (epoch s), or None without a schedule."""
    if not schedule:
        return None
    every, weekday, at = _parse(schedule)
    day = datetime.fromtimestamp(after, TZ).date()
    for i in range(400):  # a monthly run is at most ~5 weeks away
        d = day + timedelta(days=i)
        if d.weekday() != weekday or (every == "month" and d.day > 7):
            continue
        t = _start(d, at)
        if t > after:
            return t
    return None


def describe(schedule: Mapping[str, Any] | None) -> tuple[str, str]:
    """The schedule in words, Swedish and English."""
    if not schedule:
        return "ingen schemalagd provkörning", "no scheduled test run"
    every, weekday, at = _parse(schedule)
    minutes = schedule.get("minutes", 15)
    load_sv = "med last" if schedule.get("on_load") else "utan last"
    load_en = "on load" if schedule.get("on_load") else "off load"
    hhmm = f"{at // 60:02d}:{at % 60:02d}"
    if every == "month":
        sv = f"första {WEEKDAYS_SV[weekday]}en i månaden kl. {hhmm}"
        en = f"first {WEEKDAYS_EN[weekday]} of the month at {hhmm}"
    else:
        sv = f"varje {WEEKDAYS_SV[weekday]} kl. {hhmm}"
        en = f"every {WEEKDAYS_EN[weekday]} at {hhmm}"
    return f"{sv}, {minutes} min {load_sv}", f"{en}, {minutes} min {load_en}"


def last_runs(store: _Events, site: str, limit: int = HISTORY) -> list[dict[str, Any]]:
    """The site's reported test runs, newest start first: each the event's data plus `ts` (the
    controller's time of the report) and `received` (when the gateway filed it)."""
    out = []
    for e in store.events_of_type(site, "exercise_done", limit):
        d = e["data"]
        if not isinstance(d, dict) or d.get("result") not in ("pass", "fail"):
            continue
        out.append({**d, "ts": e["ts"], "received": e["received"]})
    out.sort(key=lambda r: (r.get("started") or r["ts"]), reverse=True)
    return out


@dataclass(frozen=True)
class Facts:
    """What the alert rules need about one site's test runs."""

    schedule: Mapping[str, Any] | None
    last: Mapping[str, Any] | None  # the newest run
    last_pass: float | None  # when the newest passed run started
    first: float | None  # when the oldest run the gateway knows of started


def facts(schedule: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]) -> Facts:
    starts = [float(r.get("started") or r["ts"]) for r in runs]
    passes = [s for s, r in zip(starts, runs, strict=True) if r.get("result") == "pass"]
    return Facts(schedule=schedule, last=runs[0] if runs else None,
                 last_pass=max(passes) if passes else None,
                 first=min(starts) if starts else None)


class FactsSource:
    """`source(site, now)` -> Facts: the alert engine's view of the sites' test runs (schedules
    from the site configs, runs from the store). The engine asks for every site every few
    seconds; the runs are read from the store at most every `ttl_s` per site (a test run is
    monthly or weekly: its alert may come that much later, the database is not scanned for
    it every round)."""

    def __init__(self, store: _Events, schedules: Mapping[str, Mapping[str, Any] | None], *,
                 ttl_s: float = 60.0) -> None:
        self.store = store
        self.schedules = dict(schedules)
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Facts]] = {}

    def __call__(self, site: str, now: float) -> Facts:
        got = self._cache.get(site)
        if got is not None and 0 <= now - got[0] < self.ttl_s:
            return got[1]
        f = facts(self.schedules.get(site), last_runs(self.store, site))
        self._cache[site] = (now, f)
        return f


def due_by(f: Facts) -> float | None:
    """When a passed run is next due: the first scheduled start after the last pass (or, with
    none, after the oldest run reported). None without a schedule or any run to count from."""
    ref = f.last_pass if f.last_pass is not None else f.first
    if f.schedule is None or ref is None:
        return None
    return next_run(f.schedule, ref)


def site_page(store: _Events, schedule: Mapping[str, Any] | None, site: str,
              now: float) -> dict[str, Any]:
    """The site page's test-run section as plain values: the schedule in words, the last run,
    the next run, whether a pass is overdue (past the next start after the last pass by more
    than a day) and the history (newest first)."""
    runs = last_runs(store, site)
    f = facts(schedule, runs)
    due = due_by(f)
    sv, en = describe(schedule)
    return {"schedule_sv": sv, "schedule_en": en, "last": runs[0] if runs else None,
            "next": next_run(schedule, now), "due": due,
            "overdue": due is not None and now > due + 86400, "history": runs}
