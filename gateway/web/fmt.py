"""How the pages write values: times in Swedish local time, ages, numbers with a decimal
comma. Plain strings out; the templates escape them."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any

from .. import texts


def _local_tz() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo("Europe/Stockholm")
    except Exception:  # no tz database on this system: show UTC and say so
        return UTC


TZ = _local_tz()


def num(value: Any, decimals: int) -> str:
    """Swedish number format: decimal comma; "–" for no number."""
    if not isinstance(value, int | float):
        return "–"
    return f"{value:.{decimals}f}".replace(".", ",")


def age(seconds: float) -> tuple[str, str]:
    """A duration as (Swedish, English): seconds, minutes, hours or days."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s", f"{s} s"
    if s < 7200:
        return f"{s // 60} min", f"{s // 60} min"
    cat = texts.catalogue()
    if s < 172800:
        h_sv, h_en = cat.pair("page.unit.hours")
        return f"{s // 3600} {h_sv}", f"{s // 3600} {h_en}"
    d_sv, d_en = cat.pair("page.unit.days")
    return f"{s // 86400} {d_sv}", f"{s // 86400} {d_en}"


def when(ts: float) -> str:
    """A time as the dashboard shows it: local date and time to the second."""
    return datetime.fromtimestamp(ts, TZ).strftime("%Y-%m-%d %H:%M:%S")


def tz_name(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).tzname() or ""
