"""Words for the alerts, Swedish first and English second: titles, what to do, message kinds,
and the sentences each rule writes about a site. All of them come from the text catalogue
(`config/texts.toml`, `gateway/texts.py`); this module only knows where in it to look:

    alert.<rule>.title              the alert's name                     title(rule)
    alert.<rule>.do                 what a coordinator should do         instruction(rule)
    alert.<rule>.text               what the rule says about a site      say("alert.<rule>.text", …)
    alert.<rule>.<variant>.text     … where a rule has several wordings  (device_offline.mismatch)
    alert.<rule>.<variant>.title    a variant's own name, if it has one  title(rule, variant)
    alert.common.*                  words every rule uses (a site, a time, "unknown")
    notice.<kind>                   firing, repeat, escalation, … and the notification's lines
    severity.<name>                 info, warning, critical
    cap.*                           the CAP documents' and the Atom feed's own words

docs/alerts.md explains the same alerts at length for coordinators; the instructions here are
the short form that goes into every e-mail, webhook and CAP document. docs/texts.md says how to
add a text or an alert kind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from ..texts import catalogue


class Two(NamedTuple):
    """A value for `say` that differs by language (a number with a decimal comma, a time)."""

    sv: Any
    en: Any


def pair(key: str, default: tuple[str, str] | None = None) -> tuple[str, str]:
    """(sv, en) of a catalogue entry; `default` where there is none (KeyError without one)."""
    return catalogue().pair(key, default)


def title(rule: str, variant: str = "") -> tuple[str, str]:
    """The alert's name: the variant's own title if the catalogue has one, else the rule's,
    else the rule id itself (an alert of a kind this gateway no longer knows)."""
    if variant:
        got = catalogue().get(f"alert.{rule}.{variant}.title")
        if got is not None:
            return got.pair()
    return pair(f"alert.{rule}.title", (rule, rule))


def instruction(rule: str) -> tuple[str, str]:
    """What to do ("Gör så här"); empty for a rule without instructions."""
    t = catalogue().get(f"alert.{rule}.do")
    return t.pair() if t is not None else ("", "")


def notice(kind: str) -> tuple[str, str]:
    """The name of a kind of notification (LARM / ALERT, …); the kind itself if unnamed."""
    return pair(f"notice.{kind}", (kind, kind))


def severity(name: str) -> tuple[str, str]:
    return pair(f"severity.{name}", (name, name))


def say(key: str, **fmt: Any) -> tuple[str, str]:
    """The entry `key` in both languages with its `{placeholders}` filled from `fmt`; a `Two`
    value gives each language its own."""
    sv, en = pair(key)
    return (sv.format(**{k: v.sv if isinstance(v, Two) else v for k, v in fmt.items()}),
            en.format(**{k: v.en if isinstance(v, Two) else v for k, v in fmt.items()}))


def when(d: datetime | None) -> Two:
    """A point in time as the alert texts write it (`alert.common.when`): weekday, date and
    time of day; "unknown time" for None."""
    if d is None:
        sv, en = pair("alert.common.unknown_time")
        return Two(sv, en)
    days, months = catalogue()["alert.common.weekdays"], catalogue()["alert.common.months"]
    out = []
    for lang in ("sv", "en"):
        template = getattr(catalogue()["alert.common.when"], lang)
        out.append(template.format(date=d, weekday=getattr(days, lang).split()[d.weekday()],
                                   month=getattr(months, lang).split()[d.month - 1]))
    return Two(out[0], out[1])
