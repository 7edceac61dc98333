"""Alert rules (`config/alerts.toml`) and contacts (`config/contacts.toml`) as validated data.

Both files are written by people, so every error names the file, the entry and the key, as
`gateway.config` does for sites. The rules file tunes a fixed set of rule kinds (the conditions
are code in `gateway/alerts/rules.py`; what they fire on, how long they wait, whom they tell and
how often is data here):

    [defaults]              applies to every rule unless the rule says otherwise
    hold_s, clear_s, severity, audience, recovery, repeat_s, escalate_s, inhibited_by
    [grouping]              regional incidents (one message for many sites of a municipality)
    rules, window_s, min_sites, interval_s, severity, repeat_s, escalate_s
    [rule.<kind>]           one table per rule kind; `enabled = false` turns one off
    (+ kind-specific keys: fuel_low.thresholds and .clear_margin_h, gen_max_runtime.max_runtime_h,
     remote_start_not_ready.modes, fuel_for_sale.min_litres, site_silent.heartbeats,
     exercise_overdue.grace_h)

Contacts, per municipality, in escalation order: for each role in an alert's audience the first
contact with that role is told first, the next one after the rule's `escalate_s` without an
acknowledgement. A municipality named "*" serves every site
whose municipality has no entry of its own.

    [[municipality]]
    name = "Åre"
    [[municipality.contact]]
    name = "Säkerhetssamordnare Åre"
    roles = ["coordinator"]          # audiences this contact receives
    email = "..."                    # any of email, webhook, file
    always = false                   # true: told at every step, not only at its own
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import CONFIG_DIR, ConfigError, _load_toml, _Reader

SEVERITIES = ("info", "warning", "critical")
KINDS = ("grid_lost", "backup_failed", "gen_failed_to_start", "remote_start_not_ready",
         "gen_max_runtime", "fuel_low", "fuel_for_sale", "device_offline", "site_silent",
         "crisis_ack_missing", "exercise_failed", "exercise_overdue")
INCIDENT_RULE = "regional_grid_lost"
ROLES = ("coordinator", "technician", "crisis_system")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

COMMON_KEYS = {"enabled", "hold_s", "clear_s", "severity", "audience", "recovery", "repeat_s",
               "escalate_s", "inhibited_by"}
EXTRA_KEYS: dict[str, set[str]] = {
    "fuel_low": {"thresholds", "clear_margin_h"},
    "gen_max_runtime": {"max_runtime_h"},
    "remote_start_not_ready": {"modes"},
    "fuel_for_sale": {"min_litres"},
    "site_silent": {"heartbeats"},
    "exercise_overdue": {"grace_h"},
}


@dataclass(frozen=True)
class Threshold:
    hours: float
    severity: str


@dataclass(frozen=True)
class Rule:
    id: str
    hold_s: float = 60.0
    clear_s: float = 120.0
    severity: str = "warning"
    audience: tuple[str, ...] = ("coordinator",)
    recovery: bool = True
    repeat_s: float = 14400.0
    escalate_s: float = 0.0
    inhibited_by: tuple[str, ...] = ()
    enabled: bool = True
    # kind-specific
    thresholds: tuple[Threshold, ...] = ()  # fuel_low, most hours first
    clear_margin_h: float = 2.0
    max_runtime_h: float = 24.0
    modes: tuple[str, ...] = ("manual", "off", "config")
    min_litres: float = 0.0
    heartbeats: int = 3
    grace_h: float = 24.0  # exercise_overdue: a pass this long after its scheduled start is late


@dataclass(frozen=True)
class Grouping:
    rules: tuple[str, ...] = ("grid_lost",)
    window_s: float = 120.0
    min_sites: int = 2
    interval_s: float = 300.0
    rule: Rule = field(default_factory=lambda: Rule(INCIDENT_RULE, hold_s=0, clear_s=0,
                                                    severity="critical", escalate_s=1800,
                                                    repeat_s=14400))


@dataclass(frozen=True)
class Contact:
    name: str
    roles: tuple[str, ...]
    email: str | None = None
    webhook: str | None = None
    file: str | None = None
    always: bool = False

    def channels(self) -> list[tuple[str, str]]:
        return [(ch, target) for ch, target in (("email", self.email),
                                                ("webhook", self.webhook),
                                                ("file", self.file)) if target]


@dataclass(frozen=True)
class AlertConfig:
    rules: dict[str, Rule]
    grouping: Grouping = field(default_factory=Grouping)
    contacts: dict[str, tuple[Contact, ...]] = field(default_factory=dict)

    def rule(self, rule_id: str) -> Rule:
        if rule_id == INCIDENT_RULE:
            return self.grouping.rule
        return self.rules[rule_id]

    def contacts_for(self, municipality: str) -> tuple[Contact, ...]:
        got = self.contacts.get(municipality)
        return got if got is not None else self.contacts.get("*", ())

    def steps(self, municipality: str, audience: tuple[str, ...]) -> list[list[Contact]]:
        """The escalation steps for an alert: step n is the n-th contact (in file order) of
        each role of its audience. A contact is in the step of its first matching role."""
        per_role: dict[str, list[Contact]] = {r: [] for r in audience}
        for c in self.contacts_for(municipality):
            if c.always:
                continue
            role = next((r for r in c.roles if r in per_role), None)
            if role is not None:
                per_role[role].append(c)
        depth = max((len(v) for v in per_role.values()), default=0)
        return [[v[i] for v in per_role.values() if i < len(v)] for i in range(depth)]

    def always(self, municipality: str, audience: tuple[str, ...]) -> list[Contact]:
        return [c for c in self.contacts_for(municipality)
                if c.always and set(c.roles) & set(audience)]


def default_rules() -> dict[str, Rule]:
    """The shipped behaviour, also what a missing `[rule.<kind>]` table gets."""
    return {k: Rule(k) for k in KINDS}


def _rule(r: _Reader, base: Rule, kind: str) -> Rule:
    def get(key: str, kind_: type | tuple[type, ...], default: Any, **kw: Any) -> Any:
        return r.get(key, kind_, default, **kw)

    audience = get("audience", list, list(base.audience))
    for i, role in enumerate(audience):
        if role not in ROLES:
            raise r.fail("audience", f"item {i + 1}: must be one of {', '.join(ROLES)}, "
                         f"got {role!r}")
    inhibited = get("inhibited_by", list, list(base.inhibited_by))
    for i, other in enumerate(inhibited):
        if other not in KINDS or other == kind:
            raise r.fail("inhibited_by", f"item {i + 1}: must name another rule "
                         f"({', '.join(KINDS)}), got {other!r}")
    out = replace(
        base, id=kind,
        enabled=get("enabled", bool, base.enabled),
        hold_s=get("hold_s", float, base.hold_s, lo=0, hi=86400),
        clear_s=get("clear_s", float, base.clear_s, lo=0, hi=86400),
        severity=get("severity", str, base.severity, choices=SEVERITIES),
        audience=tuple(audience),
        recovery=get("recovery", bool, base.recovery),
        repeat_s=get("repeat_s", float, base.repeat_s, lo=0, hi=7 * 86400),
        escalate_s=get("escalate_s", float, base.escalate_s, lo=0, hi=7 * 86400),
        inhibited_by=tuple(inhibited),
    )
    if kind == "fuel_low":
        raw = get("thresholds", list, [{"hours": 24, "severity": "warning"},
                                       {"hours": 12, "severity": "critical"},
                                       {"hours": 6, "severity": "critical"}])
        if not raw:
            raise r.fail("thresholds", "needs at least one threshold")
        ths = []
        for i, t in enumerate(raw):
            tr = _Reader(r.path, f"{r.entry} threshold #{i + 1}", t, {"hours", "severity"})
            ths.append(Threshold(tr.get("hours", float, lo=0.1, hi=10000),
                                 tr.get("severity", str, out.severity, choices=SEVERITIES)))
        hours = [t.hours for t in ths]
        if hours != sorted(hours, reverse=True) or len(set(hours)) != len(hours):
            raise r.fail("thresholds", f"hours must fall from one threshold to the next, "
                         f"got {hours}")
        out = replace(out, thresholds=tuple(ths),
                      clear_margin_h=get("clear_margin_h", float, 2.0, lo=0, hi=1000))
    elif kind == "gen_max_runtime":
        out = replace(out, max_runtime_h=get("max_runtime_h", float, 24.0, lo=0.1, hi=10000))
    elif kind == "remote_start_not_ready":
        modes = get("modes", list, list(base.modes))
        allowed = ("manual", "off", "test", "config")
        for i, m in enumerate(modes):
            if m not in allowed:
                raise r.fail("modes", f"item {i + 1}: must be one of {', '.join(allowed)}, "
                             f"got {m!r}")
        out = replace(out, modes=tuple(modes))
    elif kind == "fuel_for_sale":
        out = replace(out, min_litres=get("min_litres", float, 0.0, lo=0, hi=1e6))
    elif kind == "site_silent":
        out = replace(out, heartbeats=get("heartbeats", int, 3, lo=1, hi=100))
    elif kind == "exercise_overdue":
        out = replace(out, grace_h=get("grace_h", float, 24.0, lo=0, hi=24 * 62))
    return out


def load_rules(path: Path) -> tuple[dict[str, Rule], Grouping]:
    data = _load_toml(path)
    top = _Reader(path, "file", data, {"defaults", "grouping", "rule"})
    d = _Reader(path, "[defaults]", top.get("defaults", dict, {}), COMMON_KEYS - {"enabled"})
    base = _rule(d, Rule("defaults"), "defaults")
    rules_t = top.get("rule", dict, {})
    unknown = sorted(set(rules_t) - set(KINDS))
    if unknown:
        raise ConfigError(path, f"[rule.{unknown[0]}]", None,
                          f"no such rule (known: {', '.join(KINDS)})")
    rules: dict[str, Rule] = {}
    for kind in KINDS:
        r = _Reader(path, f"[rule.{kind}]", rules_t.get(kind, {}),
                    COMMON_KEYS | EXTRA_KEYS.get(kind, set()))
        rules[kind] = _rule(r, base, kind)
    g = _Reader(path, "[grouping]", top.get("grouping", dict, {}),
                {"rules", "window_s", "min_sites", "interval_s", "severity", "repeat_s",
                 "escalate_s", "audience"})
    grouped = g.get("rules", list, ["grid_lost"])
    for i, k in enumerate(grouped):
        if k not in KINDS:
            raise g.fail("rules", f"item {i + 1}: no such rule {k!r}")
    d0 = Grouping().rule
    grouping = Grouping(
        rules=tuple(grouped),
        window_s=g.get("window_s", float, 120.0, lo=0, hi=3600),
        min_sites=g.get("min_sites", int, 2, lo=2, hi=10000),
        interval_s=g.get("interval_s", float, 300.0, lo=0, hi=86400),
        rule=replace(d0, severity=g.get("severity", str, d0.severity, choices=SEVERITIES),
                     repeat_s=g.get("repeat_s", float, d0.repeat_s, lo=0, hi=7 * 86400),
                     escalate_s=g.get("escalate_s", float, d0.escalate_s, lo=0, hi=7 * 86400),
                     audience=tuple(g.get("audience", list, list(base.audience)))),
    )
    return rules, grouping


def load_contacts(path: Path) -> dict[str, tuple[Contact, ...]]:
    data = _load_toml(path)
    top = _Reader(path, "file", data, {"municipality"})
    out: dict[str, tuple[Contact, ...]] = {}
    for i, raw in enumerate(top.get("municipality", list, [])):
        m = _Reader(path, f"municipality #{i + 1}", raw, {"name", "contact"})
        name = m.get("name", str)
        m.entry = f"municipality '{name}'"
        if name in out:
            raise m.fail("name", "listed twice")
        contacts = []
        for j, c_raw in enumerate(m.get("contact", list, [])):
            c = _Reader(path, f"municipality '{name}' contact #{j + 1}", c_raw,
                        {"name", "roles", "email", "webhook", "file", "always"})
            cname = c.get("name", str)
            c.entry = f"municipality '{name}' contact '{cname}'"
            roles = c.get("roles", list, ["coordinator"])
            for k, role in enumerate(roles):
                if role not in ROLES:
                    raise c.fail("roles", f"item {k + 1}: must be one of {', '.join(ROLES)}, "
                                 f"got {role!r}")
            email = c.get("email", str, None)
            if email is not None and not _EMAIL.fullmatch(email):
                raise c.fail("email", f"not an e-mail address: {email!r}")
            webhook = c.get("webhook", str, None)
            if webhook is not None and not webhook.startswith(("http://", "https://")):
                raise c.fail("webhook", f"must be an http:// or https:// URL, got {webhook!r}")
            contact = Contact(cname, tuple(roles), email, webhook, c.get("file", str, None),
                              c.get("always", bool, False))
            if not contact.channels():
                raise c.fail(None, "needs at least one of email, webhook, file")
            contacts.append(contact)
        out[name] = tuple(contacts)
    return out


def load_alert_config(rules_path: Path | None = None,
                      contacts_path: Path | None = None) -> AlertConfig:
    rules, grouping = load_rules(rules_path or CONFIG_DIR / "alerts.toml")
    contacts = load_contacts(contacts_path or CONFIG_DIR / "contacts.toml")
    return AlertConfig(rules=rules, grouping=grouping, contacts=contacts)
