"""What official messages mean, as a pure reducer: (current alerts, new message, now) -> new
alerts + what changed. No I/O, no clock: the caller passes `now` and does the logging and the
sending (docs/feeds.md, "Semantics").

- Only status Actual is real. Exercise, System, Test and Draft are kept too, for the
  coordinators' list where they are marked as test (`OfficialAlert.actual` is False); they
  never reach a panel or a public screen (policy.decide says "ignore"), and a test message
  never updates or cancels a real one, nor a real one a test.
- msgType Update replaces the alerts it references (they leave, it comes); an Update whose
  references are unknown is shown as a new alert (the original may have been missed, the
  update is still the authority's word). Cancel withdraws what it references; a Cancel for
  something unknown changes nothing and is reported as `cancel_unknown`, but what it names is
  remembered as withdrawn, so that the original arriving later (feeds are not ordered) is
  not shown.
- `expires` is honoured at `now`: an expired alert leaves (`expire`), one that arrives expired
  is not shown.
- Feeds are polled again and again: a message already seen (same key and `sent`) is a
  `repeat`, an older version of a current alert is `stale`, and a withdrawn or replaced one
  stays withdrawn.
- Dedupe: an alert's `key` (CAP: sender and identifier; Krisinformation: its Identifier) is
  one alert whichever feed it came from, and a Krisinformation item whose Identifier is the
  identifier of a CAP alert the gateway holds is that alert (the CAP document wins: it carries
  severity, urgency, expiry and geocodes).

Memory is bounded: what was seen or withdrawn is forgotten RETAIN_S after a feed last listed
it (a withdrawn message that a feed keeps listing stays withdrawn).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .model import OfficialAlert, alert_from_json, alert_json

RETAIN_S = 7 * 86400  # seen/withdrawn keys are remembered this long

IGNORED = {
    "repeat": "already seen (the same key and sent time)",
    "stale": "an older version of an alert held",
    "withdrawn": "cancelled or replaced earlier",
    "expired": "already expired when it arrived",
    "cancel_unknown": "a Cancel for nothing the gateway holds",
    "duplicate": "the same alert from another source",
    "not_alert": "an Ack or Error message, nothing to show",
    "test_vs_actual": "a test message that refers to a real alert (or the other way round)",
}


@dataclass(frozen=True)
class Change:
    """One visible change: "added", "updated" (`replaced` left for `alert`), "withdrawn" or
    "expired" (`alert` is the one that left)."""

    kind: str
    alert: OfficialAlert
    replaced: tuple[OfficialAlert, ...] = ()


@dataclass(frozen=True)
class AlertSet:
    alerts: Mapping[str, OfficialAlert] = field(default_factory=lambda: MappingProxyType({}))
    seen: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: MappingProxyType({}))  # key -> (sent, when seen)
    gone: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}))  # key -> when withdrawn/replaced

    def active(self, now: float) -> list[OfficialAlert]:
        """The alerts in force at `now`, newest first."""
        return sorted((a for a in self.alerts.values() if not a.expired(now)),
                      key=lambda a: a.sent, reverse=True)

    def public(self, now: float) -> list[OfficialAlert]:
        """Those that may ever reach a panel or a public screen: status Actual only."""
        return [a for a in self.active(now) if a.actual]

    def as_json(self) -> dict[str, Any]:
        """Plain JSON data: what a restarted gateway (or another worker taking over the feeds)
        starts from, so it knows what it has shown, withdrawn and seen (`from_json`)."""
        return {"alerts": [alert_json(a) for a in self.alerts.values()],
                "seen": {k: list(v) for k, v in self.seen.items()}, "gone": dict(self.gone)}

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> AlertSet:
        alerts = (alert_from_json(x) for x in d.get("alerts", ()))
        return AlertSet(
            alerts=MappingProxyType({a.key: a for a in alerts}),
            seen=MappingProxyType({k: (float(v[0]), float(v[1]))
                                   for k, v in d.get("seen", {}).items()}),
            gone=MappingProxyType({k: float(v) for k, v in d.get("gone", {}).items()}))


@dataclass(frozen=True)
class Outcome:
    state: AlertSet
    changes: tuple[Change, ...] = ()
    ignored: str | None = None  # a key of IGNORED when the message changed nothing


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


def _ref_key(sender: str, identifier: str) -> str:
    return f"cap {sender} {identifier}"


def reduce(state: AlertSet, msg: OfficialAlert, now: float) -> Outcome:
    """Apply one parsed message (module docstring)."""
    if msg.msg_type in ("Ack", "Error"):
        return Outcome(state, ignored="not_alert")
    key = msg.key
    prev = state.seen.get(key)
    alerts = dict(state.alerts)
    seen = dict(state.seen)
    gone = dict(state.gone)
    seen[key] = (msg.sent, now)  # when last seen: a message still listed is never forgotten
    if key in gone:
        gone[key] = now

    def done(changes: tuple[Change, ...] = (), ignored: str | None = None) -> Outcome:
        return Outcome(AlertSet(_frozen(alerts), _frozen(seen), _frozen(gone)), changes, ignored)

    if prev is not None and prev[0] == msg.sent:
        return done(ignored="repeat")
    if key in gone:
        return done(ignored="withdrawn")

    if msg.msg_type == "Cancel":
        gone[key] = now
        found, other = [], False
        for ref in msg.references:
            rk = _ref_key(*ref)
            held = alerts.get(rk)
            if held is not None and held.actual != msg.actual:
                other = True
                continue
            if held is None:
                gone[rk] = now  # an original still to come stays withdrawn
                continue
            gone[rk] = now
            found.append(alerts.pop(rk))
        if found:
            return done(tuple(Change("withdrawn", a) for a in found))
        return done(ignored="test_vs_actual" if other else "cancel_unknown")

    if msg.expired(now):
        return done(ignored="expired")

    if msg.source != "cap":
        for held in alerts.values():
            if held.source == "cap" and (held.identifier == msg.identifier
                                         or msg.identifier in held.aliases):
                return done(ignored="duplicate")

    current = alerts.get(key)
    if current is not None:
        if msg.sent <= current.sent:
            return done(ignored="stale")
        alerts[key] = msg
        return done((Change("updated", msg, (current,)),))

    replaced: list[OfficialAlert] = []
    if msg.msg_type == "Update":
        for ref in msg.references:
            rk = _ref_key(*ref)
            held = alerts.get(rk)
            if held is not None and held.actual == msg.actual:
                gone[rk] = now
                replaced.append(alerts.pop(rk))
            elif held is None:
                gone[rk] = now  # the original arriving late must not come back
    if msg.source == "cap":
        for k, held in list(alerts.items()):
            if held.source != "cap" and held.identifier == msg.identifier:
                replaced.append(alerts.pop(k))  # the CAP document of a Krisinformation item
    alerts[key] = msg
    if replaced:
        return done((Change("updated", msg, tuple(replaced)),))
    return done((Change("added", msg),))


def expire(state: AlertSet, now: float) -> Outcome:
    """Remove what has expired at `now`, and forget keys older than RETAIN_S."""
    left = [a for a in state.alerts.values() if a.expired(now)]
    horizon = now - RETAIN_S
    alerts = {k: a for k, a in state.alerts.items() if not a.expired(now)}
    seen = {k: v for k, v in state.seen.items() if v[1] >= horizon or k in alerts}
    gone = {k: t for k, t in state.gone.items() if t >= horizon}
    if not left and len(seen) == len(state.seen) and len(gone) == len(state.gone):
        return Outcome(state)
    return Outcome(AlertSet(_frozen(alerts), _frozen(seen), _frozen(gone)),
                   tuple(Change("expired", a) for a in left))


@dataclass(frozen=True)
class BatchOutcome:
    state: AlertSet
    changes: tuple[Change, ...]
    ignored: tuple[tuple[str, OfficialAlert], ...]  # (reason, message)


def apply_all(state: AlertSet, msgs: list[OfficialAlert], now: float) -> BatchOutcome:
    """Expire, then apply one poll's messages oldest first (a feed lists them in any order).
    The changes are the net ones, between the alerts before and after the batch: what expired,
    what was withdrawn (also when an update of it was cancelled within the batch), and what
    was added or updated (`replaced`: the alerts held before that it takes the place of). An
    alert that came and went within the batch never shows. Withdrawals come before additions,
    so a site's places for messages are freed first."""
    out = expire(state, now)
    st = out.state
    ignored: list[tuple[str, OfficialAlert]] = []
    before = state.alerts
    lineage: dict[str, tuple[OfficialAlert, ...]] = {}  # key -> the alerts held before it replaced
    for msg in sorted(msgs, key=lambda m: m.sent):
        o = reduce(st, msg, now)
        st = o.state
        for c in o.changes:
            if c.kind == "updated":
                anc: list[OfficialAlert] = []
                for r in c.replaced:
                    if r.key in lineage:
                        anc += lineage.pop(r.key)
                    elif before.get(r.key) is r:
                        anc.append(r)
                lineage[c.alert.key] = tuple(anc)
        if o.ignored:
            ignored.append((o.ignored, msg))
    final = st.alerts
    expired = {c.alert.key for c in out.changes}
    shown: list[Change] = []
    accounted: set[str] = set()
    for k, a in final.items():
        if before.get(k) is a:
            continue
        prior = lineage.get(k, ())
        accounted |= {r.key for r in prior}
        shown.append(Change("updated", a, prior) if prior else Change("added", a))
    withdrawn = [Change("withdrawn", a) for k, a in before.items()
                 if k not in final and k not in expired and k not in accounted]
    return BatchOutcome(st, tuple(out.changes) + tuple(withdrawn) + tuple(shown),
                        tuple(ignored))
