"""The alert rules: a pure function from (config, sites, alerts so far, now) to actions.

    evaluate(config, views, alerts, now) -> list[Action]

Nothing here reads a clock, the database or the network: the engine (`engine.py`) builds the
inputs, applies the actions in one transaction and sends the notifications. Tests drive it with
a hand-moved clock.

Lifecycle of one alert (after Prometheus' `for` and Alertmanager's grouping, inhibition and
repeat; the regional grouping and the fuel clock are this product's own):

    condition true ─hold_s─> firing ──ack──> acknowledged
        │ (false before hold_s: dropped)  │        │
        └─────────────── condition false for clear_s ──> resolved (+ recovery notice)

- Each alert has a de-duplication key `rule:site[:detail]` (detail: the device, the fuel
  product, the crisis message id). At most one alert per key is open.
- A condition a rule cannot decide (no state, a stale state, a field the controller does not
  send yet) is *unknown*: it neither fires nor clears anything (fault scenario A6: stale is never
  "all clear"). Only `site_silent` speaks about a site that says nothing.
- Notifications: the first when an alert fires (or, for a grouped rule, when its group window
  closes), then escalation to the next contact after `escalate_s` and repeats every `repeat_s`
  while unacknowledged. An alert fires again within `repeat_s` of its key's last notification
  (a flapping grid or link) without a new notification until that window has passed
  (fault scenario A2). An alert is not notified while an alert of a rule in its `inhibited_by` is
  open for the same site (a site without power is one message, not three).
- Regional grouping: grid losses of one municipality that fire within `window_s` of each other
  become one incident listing the sites once `min_sites` are reached; later losses join it and
  are announced at most every `interval_s` (fault scenario A3; docs/fault-scenarios.md).
- fuel_low is one alert per site whose step rises as hours left fall below each threshold
  (24/12/6 h shipped); each new step is a notification (and un-acknowledges it), a lower step
  is taken back only `clear_margin_h` above its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..model import AlertRecord, SiteSnapshot, site_status
from . import texts
from .kinds import (
    GATEWAY_MUNICIPALITY,
    GATEWAY_TARGET,
    INCIDENT_RULE,
    INHERIT,
    SEVERITIES,
    Condition,
    Kind,
    Param,
    Rule,
    Threshold,
    registry,
)

if TYPE_CHECKING:
    from .config import AlertConfig


def _tz() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo("Europe/Stockholm")
    except Exception:  # no tz database: times in UTC, and the text says so
        return UTC


TZ = _tz()


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteView:
    """One site as the rules see it at `now`. `state` is None when there is none or it is stale
    (`gateway.model.site_status`, docs/mqtt.md "Site status"): the rules then know nothing about
    the site's power."""

    site: str
    name: str
    municipality: str
    lat: float
    lon: float
    heartbeat_s: int
    status: str | None  # online | lost | None (unknown); a Will older than the state is online
    status_since: float | None
    state: Mapping[str, Any] | None
    state_age_s: float | None
    silent_since: float | None  # the last state, or when the gateway began listening if later
    crisis_unacked: tuple[tuple[str, float], ...] = ()
    # The site's generator test runs (gateway/exercise.py Facts), filled in by the engine when
    # it has a source for them; None: the exercise rules know nothing.
    exercise: Any = None
    # The gateway's pseudo-target only (gateway_view): the health of its feeds of official
    # alerts (gateway/feeds/poller.py FeedHealth); None: no feeds source.
    feeds: Any = None


def gateway_view(feeds: Any) -> SiteView:
    """The gateway itself as the gateway-scope kinds see it (kinds.SCOPES)."""
    return SiteView(site=GATEWAY_TARGET, name="SOT-gateway", municipality=GATEWAY_MUNICIPALITY,
                    lat=0.0, lon=0.0, heartbeat_s=0, status=None, status_since=None, state=None,
                    state_age_s=None, silent_since=None, feeds=feeds)


def site_view(snap: SiteSnapshot, now: float, listening_since: float | None) -> SiteView:
    """`listening_since`: when the gateway's MQTT session came up (None: it is not connected,
    so silence says nothing about the sites)."""
    st = site_status(snap, now)
    silent_since = None
    if listening_since is not None:
        # After a coordinator reset the site (no state kept), silence counts from the reset.
        silent_since = max(x for x in (st.last_heard, listening_since, snap.reset_at)
                           if x is not None)
    return SiteView(
        site=snap.info.id, name=snap.info.name, municipality=snap.info.municipality,
        lat=snap.info.lat, lon=snap.info.lon, heartbeat_s=st.heartbeat_s,
        status=None if st.link == "unknown" else st.link, status_since=st.link_since,
        state=None if st.stale else snap.state, state_age_s=st.age_s,
        silent_since=silent_since, crisis_unacked=snap.crisis_unacked)


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    """A new alert; `status` pending (waiting out hold_s) or firing."""

    key: str
    rule: str
    site: str | None
    municipality: str
    detail: str
    severity: str
    status: str
    started: float
    sv: str
    en: str
    data: dict[str, Any] = field(default_factory=dict)
    incident_members: tuple[str, ...] = ()  # keys attached to this new incident


@dataclass(frozen=True)
class Fire:
    key: str


@dataclass(frozen=True)
class Clearing:
    """The condition went away (since = when) or came back (since = None)."""

    key: str
    since: float | None


@dataclass(frozen=True)
class Change:
    """Severity, text or data changed; `refire` puts an acknowledged alert back to firing."""

    key: str
    severity: str
    sv: str
    en: str
    data: dict[str, Any]
    refire: bool = False


@dataclass(frozen=True)
class Attach:
    """Add an alert to an open regional incident."""

    key: str
    incident: str


@dataclass(frozen=True)
class Resolve:
    key: str
    reason: str  # cleared | not_held | members_resolved
    recovery: bool  # send a recovery notice to everyone told about it


@dataclass(frozen=True)
class Notify:
    """kind: firing | repeat | escalation | worse | update. `level`: the escalation step the
    message goes to (firing 0; escalation the new step; others every step so far)."""

    key: str
    kind: str
    level: int
    sv: str
    en: str


Action = Open | Fire | Clearing | Change | Attach | Resolve | Notify


# --- observations: what each rule sees at one site --------------------------------------------


@dataclass(frozen=True)
class Obs:
    """One condition at one site: `active`, since when if the data says (else from first
    seen), how bad (`step` rises with fuel thresholds), and the words for it."""

    active: bool
    since: float | None = None
    severity: str | None = None
    step: int = 0
    sv: str = ""
    en: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# None: the rule cannot tell (unknown). A dict: detail -> Obs for every detail it can tell about;
# an open alert whose detail is missing from the dict has cleared.
Observed = dict[str, Obs] | None


def _section(state: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    v = state.get(name)
    return v if isinstance(v, Mapping) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _date(ts: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(ts, TZ)
    except (OverflowError, OSError, ValueError):
        return None  # a time no calendar holds: say so rather than fail the rule


def _when(ts: float) -> texts.Two:
    return texts.when(_date(ts))


def _hours(h: float) -> texts.Two:
    text = f"{h:.1f}" if h < 10 else f"{h:.0f}"
    return texts.Two(text.replace(".", ","), text)


def _at(v: SiteView) -> texts.Two:
    return _at_words(v.name, v.municipality)


@lru_cache(maxsize=8192)
def _at_words(name: str, municipality: str) -> texts.Two:
    # Nearly every rule names the site, at every evaluation of every site: formatted once.
    return texts.Two(*texts.say("alert.common.at", name=name, municipality=municipality))


def _unknown(value: Any) -> texts.Two:
    """`value`, or "okänt / unknown" when the site did not say."""
    return texts.Two(value, value) if value else texts.Two(*texts.pair("alert.common.unknown"))


def _obs(active: bool, key: str, since: float | None = None, **kw: Any) -> Obs:
    """An observation whose words are the catalogue entry `key` filled with `kw` (and `data`,
    `severity`, `step` passed on to the Obs). Only an active one has words: nothing reads those
    of a condition that does not hold, and most conditions at most sites do not."""
    extra = {k: kw.pop(k) for k in ("data", "severity", "step") if k in kw}
    if not active:
        return Obs(active, since, **extra)
    sv, en = texts.say(key, **kw)
    return Obs(active, since, sv=sv, en=en, **extra)


def grid_lost(rule: Rule, v: SiteView, now: float, open_: Mapping[str, AlertRecord]) -> Observed:
    grid = _section(v.state, "grid") if v.state else None
    st = grid.get("state") if grid else None
    if st not in ("ok", "lost", "rejected"):
        return None  # unknown meter: not a loss, not a return
    since = _num(grid.get("since")) if grid else None
    if st == "ok":
        return {"": Obs(False, since, data={"grid": st})}
    what = texts.pair("alert.grid_lost.lost" if st == "lost" else "alert.grid_lost.rejected")
    mode = v.state.get("mode") if v.state else None
    backup = texts.pair(f"alert.grid_lost.backup.{mode}", ("", ""))
    sv, en = texts.say("alert.grid_lost.text", at=_at(v), what=texts.Two(*what),
                       backup=texts.Two(*backup))
    return {"": Obs(True, since, sv=sv.strip(), en=en.strip(), data={"grid": st})}


def backup_failed(rule: Rule, v: SiteView, now: float,
                  open_: Mapping[str, AlertRecord]) -> Observed:
    if v.state is None or v.state.get("mode") not in ("normal", "grid_lost", "on_backup",
                                                      "backup_failed", "degraded"):
        return None
    if v.state.get("mode") == "degraded" and "" in open_:
        return None  # the site cannot tell its power state: keep what we know
    genset = _section(v.state, "genset") or {}
    alarms_raw = genset.get("alarms")
    alarms = alarms_raw if isinstance(alarms_raw, list) else []
    names = ", ".join(str(a[0]) for a in alarms if isinstance(a, list) and a)[:200]
    state = genset.get("state")
    if v.state.get("mode") != "backup_failed":
        return {"": Obs(False, data={"genset": state, "alarms": names})}
    sv, en = texts.say("alert.backup_failed.text", at=_at(v),
                       genset=_unknown(state) if "state" not in genset else texts.Two(state, state))
    if names:
        extra_sv, extra_en = texts.say("alert.backup_failed.alarms", names=names)
        sv, en = f"{sv} {extra_sv}", f"{en} {extra_en}"
    return {"": Obs(True, sv=sv, en=en, data={"genset": genset.get("state"), "alarms": names})}


def gen_failed_to_start(rule: Rule, v: SiteView, now: float,
                        open_: Mapping[str, AlertRecord]) -> Observed:
    genset = _section(v.state, "genset") if v.state else None
    st = genset.get("state") if genset else None
    if st in (None, "unknown"):
        return None
    since = _num(genset.get("since")) if genset else None
    return {"": _obs(st == "fault", "alert.gen_failed_to_start.text", since, at=_at(v),
                     data={"genset": st})}


def remote_start_not_ready(rule: Rule, v: SiteView, now: float,
                           open_: Mapping[str, AlertRecord]) -> Observed:
    genset = _section(v.state, "genset") if v.state else None
    if genset is None:
        return None
    mode, ready = genset.get("mode"), genset.get("ready")
    if mode is None and not isinstance(ready, bool):
        return None
    not_ready = mode in rule.params["modes"] or ready is False
    return {"": _obs(not_ready, "alert.remote_start_not_ready.text", at=_at(v),
                     mode=_unknown(mode), data={"mode": mode, "ready": ready})}


def gen_max_runtime(rule: Rule, v: SiteView, now: float,
                    open_: Mapping[str, AlertRecord]) -> Observed:
    genset = _section(v.state, "genset") if v.state else None
    if genset is None or genset.get("state") in (None, "unknown"):
        return None
    run_s = _num(genset.get("run_s"))
    if run_s is None and genset.get("state") == "running":
        since = _num(genset.get("since"))
        ts = _num(v.state.get("ts")) if v.state else None
        if since is not None and ts is not None:
            run_s = max(0.0, ts - since)
    if genset.get("state") != "running":
        run_s = 0.0
    if run_s is None:
        return None
    h = run_s / 3600
    return {"": _obs(h >= rule.params["max_runtime_h"], "alert.gen_max_runtime.text", at=_at(v),
                     hours=_hours(h), data={"run_h": round(h, 1)})}


def fuel_low(rule: Rule, v: SiteView, now: float, open_: Mapping[str, AlertRecord]) -> Observed:
    fuel = _section(v.state, "fuel") if v.state else None
    hours = _num(fuel.get("hours_left")) if fuel else None
    if hours is None:
        return None
    prev = open_.get("")
    prev_step = int(prev.data.get("step", 0)) if prev else 0
    step = 0
    thresholds: tuple[Threshold, ...] = rule.params["thresholds"]
    margin = rule.params["clear_margin_h"]
    for i, t in enumerate(thresholds):  # most hours first
        if hours < t.hours or (i < prev_step and hours < t.hours + margin):
            step = i + 1
    if step == 0:
        return {"": Obs(False)}
    th = thresholds[step - 1]
    refuel_by = _num(fuel.get("refuel_by")) if fuel else None
    conf = fuel.get("confidence") if fuel else None
    sv, en = texts.say("alert.fuel_low.text", at=_at(v), hours=_hours(hours),
                       threshold=th.hours)
    more = []
    if refuel_by is not None:
        more.append(texts.say("alert.fuel_low.refuel_by", when=_when(refuel_by)))
    if conf == "low":
        more.append(texts.pair("alert.fuel_low.low_confidence"))
    for m_sv, m_en in more:
        sv, en = f"{sv} {m_sv}", f"{en} {m_en}"
    return {"": Obs(True, severity=th.severity, step=step, sv=sv, en=en,
                    data={"step": step, "threshold_h": th.hours, "hours_left": round(hours, 1),
                          "refuel_by": refuel_by})}


def fuel_for_sale(rule: Rule, v: SiteView, now: float,
                  open_: Mapping[str, AlertRecord]) -> Observed:
    if v.state is None:
        return None
    cap = _section(v.state, "capability")
    sale = cap.get("fuel_for_sale") if cap else None
    pumps = _section(v.state, "pumps")
    out: dict[str, Obs] = {}
    at = _at(v)
    known = False
    if isinstance(sale, bool):
        known = True
        if not sale:
            out["all"] = _obs(True, "alert.fuel_for_sale.all.text", at=at,
                              data={"product": "all"})
    elif isinstance(sale, Mapping):
        for product, litres in sale.items():
            n = _num(litres)
            if n is None:
                if f"product:{product}" in open_:
                    return None  # a product we alerted on went unknown: keep every alert
                continue
            known = True
            if n <= rule.params["min_litres"]:
                out[f"product:{product}"] = _obs(
                    True, "alert.fuel_for_sale.product.text", at=at, product=product, litres=n,
                    data={"product": product, "litres": n})
    if pumps is not None:
        avail, total = _num(pumps.get("available")), _num(pumps.get("total"))
        if avail is not None and total:
            known = True
            if avail <= 0:
                out["pumps"] = _obs(True, "alert.fuel_for_sale.pumps.text", at=at,
                                    data={"pumps": 0})
    return out if known else None


def device_offline(rule: Rule, v: SiteView, now: float,
                   open_: Mapping[str, AlertRecord]) -> Observed:
    devices = _section(v.state, "devices") if v.state else None
    if devices is None:
        return None
    at = _at(v)
    return {str(name): _obs(True, f"alert.device_offline.{st}.text", at=at, device=name,
                            data={"device": name, "state": st})
            for name, st in devices.items() if st in ("offline", "mismatch")}


def site_silent(rule: Rule, v: SiteView, now: float,
                open_: Mapping[str, AlertRecord]) -> Observed:
    if v.silent_since is None:
        return None  # the gateway is not connected to the broker: silence means nothing
    limit = rule.params["heartbeats"] * v.heartbeat_s
    if v.status == "lost" and v.status_since is not None:
        return {"": _obs(True, "alert.site_silent.lost.text", v.status_since, at=_at(v),
                         data={"why": "lost"})}
    silent = now - v.silent_since
    if silent <= limit and v.state is None and "" in open_:
        # Quiet for less than the limit only because the gateway just (re)started listening:
        # that is no evidence the site is back. Only a fresh state clears it.
        return None
    minutes = max(1, int(silent // 60))
    return {"": _obs(silent > limit, "alert.site_silent.silent.text", v.silent_since + limit,
                     at=_at(v), minutes=minutes, heartbeat_s=v.heartbeat_s,
                     data={"why": "silent"})}


def crisis_ack_missing(rule: Rule, v: SiteView, now: float,
                       open_: Mapping[str, AlertRecord]) -> Observed:
    at = _at(v)
    return {f"crisis:{cid}": _obs(True, "alert.crisis_ack_missing.text", sent, at=at,
                                  crisis_id=cid, when=_when(sent),
                                  data={"crisis_id": cid, "sent": sent})
            for cid, sent in v.crisis_unacked}


def _run_why(why: Any) -> texts.Two:
    """Why a test run failed, in words (`alert.exercise_failed.why.*`); the code itself for a
    reason the catalogue has no words for."""
    w = str(why or "")[:40]
    head, _, rest = w.partition(":")
    if head == "local" and rest.startswith("mode:"):
        head, rest = "mode", rest[5:]
    if head in ("mode", "alarm"):
        return texts.Two(*texts.say(f"alert.exercise_failed.why.{head}", what=rest))
    got = texts.pair(f"alert.exercise_failed.why.{w.replace(':', '_')}", (w, w))
    return texts.Two(*got)


def exercise_failed(rule: Rule, v: SiteView, now: float,
                    open_: Mapping[str, AlertRecord]) -> Observed:
    f = v.exercise
    last = getattr(f, "last", None)
    if f is None or last is None:
        return None if f is None else {}  # no source: unknown; no run reported: nothing
    started = _num(last.get("started"))
    when = _when(started) if started is not None else \
        texts.Two(*texts.pair("alert.common.unknown_time"))
    return {"": _obs(last.get("result") == "fail", "alert.exercise_failed.text", started,
                     at=_at(v), when=when, why=_run_why(last.get("why")),
                     data={"started": started, "why": last.get("why"),
                           "trigger": last.get("trigger")})}


def exercise_overdue(rule: Rule, v: SiteView, now: float,
                     open_: Mapping[str, AlertRecord]) -> Observed:
    from ..exercise import due_by

    f = v.exercise
    if f is None:
        return None
    if f.schedule is None:
        return {}  # no schedule: nothing can be late
    due = due_by(f)
    if due is None:
        return None  # no run reported yet: nothing to count from
    late = due + rule.params["grace_h"] * 3600
    since = _when(f.last_pass) if f.last_pass is not None else \
        texts.Two(*texts.pair("alert.exercise_overdue.never"))
    return {"": _obs(now > late, "alert.exercise_overdue.text", late, at=_at(v), last=since,
                     due=_when(due), data={"due": due, "last_pass": f.last_pass})}


def _feed_why(h: Any) -> texts.Two:
    """Why a feed fails, in words (`alert.feed_failed.why.*`); the reason code itself for one
    without an entry."""
    if h.consecutive_failures == 0 or h.last_error is None:
        return texts.Two(*texts.pair("alert.feed_failed.why.stale"))
    code = str(h.last_error)
    return texts.Two(*texts.pair(f"alert.feed_failed.why.{code}", (code, code)))


def feed_failed(rule: Rule, v: SiteView, now: float,
                open_: Mapping[str, AlertRecord]) -> Observed:
    """A feed of official alerts (gateway/feeds/) failed `failures` polls in a row, or has had
    no successful poll for its stale_s: national warnings may not be reaching the sites. One
    alert per feed (detail: the feed's name); a feed taken out of the configuration clears."""
    if v.feeds is None:
        return None
    out: dict[str, Obs] = {}
    for h in v.feeds:
        active = h.stale or h.consecutive_failures >= rule.params["failures"]
        last = _when(h.last_success) if h.last_success is not None else \
            texts.Two(*texts.pair("alert.feed_failed.never"))
        since = h.last_success if h.last_success is not None else h.last_attempt
        out[h.name] = _obs(active, "alert.feed_failed.text", since, feed=h.name,
                           why=_feed_why(h), last=last,
                           data={"feed": h.name, "url": h.url, "reason": h.last_error,
                                 "failures": h.consecutive_failures, "stale": h.stale})
    return out


# --- the registry of rule kinds ---------------------------------------------------------------


def _falling(thresholds: tuple[Threshold, ...]) -> str | None:
    hours = [t.hours for t in thresholds]
    if not hours:
        return "needs at least one threshold"
    if hours != sorted(hours, reverse=True) or len(set(hours)) != len(hours):
        return f"hours must fall from one threshold to the next, got {hours}"
    return None


# Every kind of alert rule, in the order they are evaluated. A new kind is one entry here (its
# condition above, its own settings as Params) plus its words `alert.<kind>.title`, `.do` and
# `.text` in config/texts.toml, and a `[rule.<kind>]` table in config/alerts.toml if its
# defaults need tuning (docs/texts.md).
KINDS: dict[str, Kind] = registry(
    Kind("grid_lost", grid_lost),
    Kind("backup_failed", backup_failed),
    Kind("gen_failed_to_start", gen_failed_to_start),
    Kind("remote_start_not_ready", remote_start_not_ready, (
        Param("modes", list, ("manual", "off", "config"),
              choices=("manual", "off", "test", "config"),
              doc="generator modes in which it cannot start by itself"),)),
    Kind("gen_max_runtime", gen_max_runtime, (
        Param("max_runtime_h", float, 24.0, lo=0.1, hi=10000,
              doc="hours of running without a stop before the alert"),)),
    Kind("fuel_low", fuel_low, (
        Param("thresholds", list,
              (Threshold(24, "warning"), Threshold(12, "critical"), Threshold(6, "critical")),
              fields=(Param("hours", float, ..., lo=0.1, hi=10000),
                      Param("severity", str, INHERIT, choices=SEVERITIES)),
              make=Threshold, check=_falling,
              doc="steps of hours left, most hours first; each step is a new notification"),
        Param("clear_margin_h", float, 2.0, lo=0, hi=1000,
              doc="a step is taken back only this many hours above its threshold"))),
    Kind("fuel_for_sale", fuel_for_sale, (
        Param("min_litres", float, 0.0, lo=0, hi=1e6,
              doc="a product with this many litres or fewer counts as exhausted"),)),
    Kind("device_offline", device_offline),
    Kind("site_silent", site_silent, (
        Param("heartbeats", int, 3, lo=1, hi=100,
              doc="missed heartbeats before a site counts as silent"),)),
    Kind("crisis_ack_missing", crisis_ack_missing),
    Kind("exercise_failed", exercise_failed),
    Kind("exercise_overdue", exercise_overdue, (
        Param("grace_h", float, 24.0, lo=0, hi=24 * 62,
              doc="hours after a scheduled start without a passed test run before the alert"),)),
    Kind("feed_failed", feed_failed, (
        Param("failures", int, 3, lo=1, hi=1000,
              doc="failed polls in a row before the alert (a stale feed alerts anyway)"),),
         scope="gateway"),
)


def alert_key(rule: str, site: str, detail: str = "") -> str:
    return f"{rule}:{site}:{detail}" if detail else f"{rule}:{site}"


def incident_key(municipality: str) -> str:
    return f"{INCIDENT_RULE}:{municipality}"


# --- evaluation -----------------------------------------------------------------------------


def _worst(severities: Iterable[str]) -> str:
    return max(severities, key=SEVERITIES.index, default="warning")


def evaluate(config: AlertConfig, views: Mapping[str, SiteView], alerts: Sequence[AlertRecord],
             now: float, failed: dict[str, Exception] | None = None,
             gateway: SiteView | None = None) -> list[Action]:
    """The actions that bring the alerts up to date with `views` at `now`.

    `views`: the sites to evaluate (all, or the one a message just came from). `alerts`: the
    open alerts of those sites and of their municipalities, plus alerts resolved within the
    longest repeat window (they tell whether a key is flapping). Alerts of sites not in `views`
    keep their lifecycle; their notifications due at `now` are still produced.

    Each site is evaluated on its own: with `failed` given, a rule that raises on a site's data
    puts the exception in `failed[site]` and that site contributes nothing this round (its
    alerts stay as they are, like a site not in `views`); every other site goes on. Without
    `failed` the exception propagates (tests).

    `gateway` (gateway_view): the gateway's own pseudo-target, for the kinds of scope
    "gateway"; given only in a full round (their alerts have no site and are loaded then).
    Site kinds are never evaluated there, nor gateway kinds at a site."""
    actions: list[Action] = []
    open_by_key = {a.key: a for a in alerts if a.open}
    # Each site's rules look up their own open alerts here, not by scanning them all: a full
    # round is sites x rules lookups, and with hundreds of alerts open (a county in a
    # blackout) the scan took the event loop for a second (docs/benchmarks.md).
    by_target: dict[tuple[str, str | None], dict[str, AlertRecord]] = {}
    for a in open_by_key.values():
        by_target.setdefault((a.rule, a.site), {})[a.key] = a
    last_told: dict[str, float] = {}
    for a in alerts:
        if a.notified is not None and not a.open:
            last_told[a.key] = max(last_told.get(a.key, 0.0), a.notified)
    fresh: dict[str, Obs] = {}  # key -> observation this round, for the words of a notification
    opened: dict[str, Open] = {}

    targets = [(v, "site") for v in views.values()]
    if gateway is not None:
        targets.append((gateway, "gateway"))
    rules = {scope: [(r, KINDS[r.id].evaluate) for r in config.rules.values()
                     if r.enabled and KINDS[r.id].scope == scope] for scope in ("site", "gateway")}
    for v, scope in targets:
        try:
            site_actions, site_fresh = _evaluate_site(rules[scope], v, by_target, now, opened,
                                                      scope)
        except Exception as e:
            if failed is None:
                raise
            failed[v.site] = e
            continue
        actions.extend(site_actions)
        fresh.update(site_fresh)

    # What the alerts look like once this round's lifecycle actions are applied.
    after = _project(open_by_key, actions, now)
    actions.extend(_group(config, after, now))
    after = _project(open_by_key, actions, now)
    worse = {c.key for c in actions if isinstance(c, Change) and c.key in open_by_key and
             int(c.data.get("step", 0)) > int(open_by_key[c.key].data.get("step", 0))}
    actions.extend(_notifications(config, after, fresh, last_told, worse, now))
    return actions


def _evaluate_site(rules: Sequence[tuple[Rule, Condition]], v: SiteView,
                   by_target: Mapping[tuple[str, str | None], Mapping[str, AlertRecord]],
                   now: float, opened: dict[str, Open],
                   scope: str = "site") -> tuple[list[Action], dict[str, Obs]]:
    """Every rule at one site (`rules`: the enabled rules of the scope, with their kinds'
    conditions): (its lifecycle actions, key -> fresh observation). `by_target`: the open
    alerts by (rule, site) and key. `opened` is only added to once the whole site evaluated.
    Runs for every site at every round: a rule whose condition does not hold at a site
    without an alert of it is passed over at once."""
    actions: list[Action] = []
    fresh: dict[str, Obs] = {}
    mine_opened: dict[str, Open] = {}
    site = None if scope == "gateway" else v.site
    for rule, condition in rules:
        targeted = by_target.get((rule.id, site))
        mine: dict[str, AlertRecord] = {}
        if targeted:
            prefix = alert_key(rule.id, v.site)
            mine = {a.detail: a for k, a in targeted.items()
                    if k == prefix or k.startswith(prefix + ":")}
        observed = condition(rule, v, now, mine)
        if observed is None or (not mine and not any(o.active for o in observed.values())):
            continue  # unknown, or nothing holds and nothing is open: no lifecycle to run
        for detail in sorted(set(observed) | set(mine)):
            key = alert_key(rule.id, v.site, detail)
            obs = observed.get(detail) or Obs(False)
            a = mine.get(detail)
            if obs.active:
                fresh[key] = obs
            actions.extend(_lifecycle(rule, v, key, detail, obs, a, now, mine_opened))
    opened.update(mine_opened)
    return actions, fresh


def _lifecycle(rule: Rule, v: SiteView, key: str, detail: str, obs: Obs, a: AlertRecord | None,
               now: float, opened: dict[str, Open]) -> list[Action]:
    severity = obs.severity or rule.severity
    if obs.active:
        if a is None:
            since = obs.since if obs.since is not None and obs.since <= now else now
            status = "firing" if now - since >= rule.hold_s else "pending"
            gw = KINDS[rule.id].scope == "gateway"  # no site, no place
            op = Open(key, rule.id, None if gw else v.site, v.municipality, detail, severity,
                      status, since, obs.sv, obs.en,
                      {**obs.data, "site_name": v.name, "lat": None if gw else v.lat,
                       "lon": None if gw else v.lon, "step": obs.step})
            opened[key] = op
            return [op]
        out: list[Action] = []
        if a.status == "pending" and now - a.started >= rule.hold_s:
            out.append(Fire(key))
        if a.clearing_since is not None:
            out.append(Clearing(key, None))
        prev_step = int(a.data.get("step", 0))
        # The stored words follow the site (the dashboard, CAP and `sot alerts` show them): one
        # update per change, written in the engine's transaction for the round.
        if obs.step != prev_step or severity != a.severity or (obs.sv and obs.sv != a.sv):
            out.append(Change(key, severity, obs.sv, obs.en,
                              {**a.data, **obs.data, "step": obs.step},
                              refire=obs.step > prev_step and a.status == "acknowledged"))
        return out
    if a is None:
        return []
    if a.status == "pending":
        return [Resolve(key, "not_held", False)]
    since = a.clearing_since if a.clearing_since is not None else now
    if now - since >= rule.clear_s:
        told = a.notify_count > 0 and a.incident is None
        return [Resolve(key, "cleared", rule.recovery and told)]
    return [] if a.clearing_since is not None else [Clearing(key, now)]


@dataclass
class _Live:
    """An open alert as this round's actions leave it (the engine writes the same changes)."""

    rec: AlertRecord
    status: str
    incident: str | None
    severity: str
    sv: str
    en: str
    fired: float | None
    new: bool = False


def _project(open_by_key: Mapping[str, AlertRecord], actions: Sequence[Action],
             now: float) -> dict[str, _Live]:
    live = {k: _Live(a, a.status, a.incident, a.severity, a.sv, a.en, a.fired)
            for k, a in open_by_key.items()}
    for act in actions:
        if isinstance(act, Open):
            rec = AlertRecord(id=0, key=act.key, rule=act.rule, site=act.site,
                              municipality=act.municipality, detail=act.detail,
                              severity=act.severity, status=act.status, started=act.started,
                              fired=now if act.status == "firing" else None, sv=act.sv,
                              en=act.en, data=act.data)
            live[act.key] = _Live(rec, act.status, None, act.severity, act.sv, act.en,
                                  rec.fired, new=True)
            for m in act.incident_members:
                if m in live:
                    live[m].incident = act.key
        elif act.key in live:
            x = live[act.key]
            if isinstance(act, Fire):
                x.status, x.fired = "firing", now
            elif isinstance(act, Change):
                x.severity, x.sv, x.en = act.severity, act.sv, act.en
                if act.refire:
                    x.status = "firing"
            elif isinstance(act, Attach):
                x.incident = act.incident
            elif isinstance(act, Resolve):
                del live[act.key]
    return live


def _group(config: AlertConfig, live: Mapping[str, _Live], now: float) -> list[Action]:
    g = config.grouping
    if not g.rules:
        return []
    out: list[Action] = []
    by_muni: dict[str, list[_Live]] = {}
    incidents: dict[str, _Live] = {}
    members_of: dict[str, list[_Live]] = {}
    for x in live.values():
        if x.rec.rule == INCIDENT_RULE:
            incidents[x.rec.municipality] = x
        elif x.rec.rule in g.rules and x.status in ("firing", "acknowledged"):
            if x.incident is None:
                by_muni.setdefault(x.rec.municipality, []).append(x)
            else:
                members_of.setdefault(x.incident, []).append(x)
    for muni, inc in incidents.items():
        if not members_of.get(inc.rec.key) and not by_muni.get(muni):
            out.append(Resolve(inc.rec.key, "members_resolved",
                               inc.rec.notify_count > 0 and config.grouping.rule.recovery))
    for muni, xs in sorted(by_muni.items()):
        open_inc = incidents.get(muni)
        if open_inc is not None:
            out.extend(Attach(x.rec.key, open_inc.rec.key) for x in xs)
            continue
        waiting = [x for x in xs if x.rec.notify_count == 0]
        if not waiting:
            continue
        first = min(x.fired if x.fired is not None else now for x in waiting)
        if now - first < g.window_s or len(xs) < g.min_sites:
            continue
        xs = sorted(xs, key=lambda x: x.rec.data.get("site_name") or x.rec.site or "")
        sv, en = _incident_text(muni, xs, [])
        out.append(Open(incident_key(muni), INCIDENT_RULE, None, muni, "",
                        _worst([g.rule.severity] + [x.severity for x in xs]), "firing", first,
                        sv, en, {"sites": [x.rec.site for x in xs],
                                 "site_names": [x.rec.data.get("site_name") for x in xs],
                                 "points": [[x.rec.data.get("lat"), x.rec.data.get("lon")]
                                            for x in xs]},
                        incident_members=tuple(x.rec.key for x in xs)))
    return out


def _incident_text(muni: str, members: Sequence[_Live],
                   new: Sequence[_Live]) -> tuple[str, str]:
    names = ", ".join(str(x.rec.data.get("site_name") or x.rec.site) for x in members)
    sv, en = texts.say("alert.regional_grid_lost.text", municipality=muni, n=len(members),
                       names=names)
    if new:
        added = ", ".join(str(x.rec.data.get("site_name") or x.rec.site) for x in new)
        more_sv, more_en = texts.say("alert.regional_grid_lost.new_since", added=added)
        sv, en = f"{sv} {more_sv}", f"{en} {more_en}"
    return sv, en


def _grouped_waiting(config: AlertConfig, live: Mapping[str, _Live], now: float) -> set[str]:
    """Keys of grouped-rule alerts whose group window is still open: not notified yet."""
    g = config.grouping
    out: set[str] = set()
    firsts: dict[str, float] = {}
    for x in live.values():
        if x.rec.rule in g.rules and x.incident is None and x.status == "firing" \
                and x.rec.notify_count == 0:
            f = x.fired if x.fired is not None else now
            firsts[x.rec.municipality] = min(firsts.get(x.rec.municipality, f), f)
    for k, x in live.items():
        first = firsts.get(x.rec.municipality)
        if x.rec.rule in g.rules and x.incident is None and x.rec.notify_count == 0 \
                and first is not None and now - first < g.window_s:
            out.add(k)
    return out


def _notifications(config: AlertConfig, live: Mapping[str, _Live], fresh: Mapping[str, Obs],
                   last_told: Mapping[str, float], worse: set[str],
                   now: float) -> list[Action]:
    out: list[Action] = []
    waiting = _grouped_waiting(config, live, now)
    inhibitors = {(x.rec.site, x.rec.rule) for x in live.values()
                  if x.status in ("firing", "acknowledged")}
    members_of: dict[str, list[_Live]] = {}
    for x in live.values():
        if x.incident is not None:
            members_of.setdefault(x.incident, []).append(x)
    for key, x in sorted(live.items()):
        a = x.rec
        if x.incident is not None or key in waiting or x.status == "pending":
            continue
        try:
            rule = config.rule(a.rule)
        except KeyError:
            continue
        if any((a.site, r) in inhibitors for r in rule.inhibited_by):
            continue
        obs = fresh.get(key)
        sv, en = (obs.sv, obs.en) if obs is not None and obs.sv else (x.sv, x.en)
        if a.rule == INCIDENT_RULE:
            members = sorted(members_of.get(key, []),
                             key=lambda m: m.rec.data.get("site_name") or m.rec.site or "")
            if x.new:
                sv, en = _incident_text(a.municipality, members, [])
                out.append(Notify(key, "firing", 0, sv, en))
                continue
            new = [m for m in members if m.rec.notify_count == 0]
            sv, en = _incident_text(a.municipality, members, new)
            if new and (a.notified is None or now - a.notified >= config.grouping.interval_s):
                out.append(Notify(key, "update", a.level, sv, en))
                continue
        if x.status != "firing":
            continue
        if a.notify_count == 0:
            last = last_told.get(key)
            if last is not None and now - last < rule.repeat_s:
                continue  # flapping: this key was told about within its repeat window
            out.append(Notify(key, "firing", 0, sv, en))
            continue
        if key in worse:
            out.append(Notify(key, "worse", max(a.level, 0), sv, en))
            continue
        chain = len(config.steps(a.municipality, rule.audience))
        since = a.level_since if a.level_since is not None else a.notified or now
        if rule.escalate_s and a.level + 1 < chain and now - since >= rule.escalate_s:
            out.append(Notify(key, "escalation", a.level + 1, sv, en))
        elif rule.repeat_s and a.notified is not None and now - a.notified >= rule.repeat_s:
            out.append(Notify(key, "repeat", max(a.level, 0), sv, en))
    return out
