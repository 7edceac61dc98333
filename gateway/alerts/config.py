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
    (+ the kind's own keys, declared with their type, range and default by its entry in the
     registry `gateway.alerts.rules.KINDS`: fuel_low.thresholds and .clear_margin_h,
     gen_max_runtime.max_runtime_h, remote_start_not_ready.modes, fuel_for_sale.min_litres,
     site_silent.heartbeats)

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

from ..validate import CONFIG_DIR, ConfigError, Reader, load_toml
from .kinds import INCIDENT_RULE, INHERIT, SEVERITIES, Kind, Param, Rule, Threshold
from .rules import KINDS

__all__ = ["INCIDENT_RULE", "KINDS", "SEVERITIES", "AlertConfig", "Contact", "Grouping", "Rule",
           "Threshold", "default_rules", "load_alert_config", "load_contacts", "load_rules"]

ROLES = ("coordinator", "technician", "crisis_system")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

COMMON_KEYS = {"enabled", "hold_s", "clear_s", "severity", "audience", "recovery", "repeat_s",
               "escalate_s", "inhibited_by"}


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
    return {k: Rule(k, params=kind.defaults()) for k, kind in KINDS.items()}


def _param(r: Reader, p: Param, rule: Rule) -> Any:
    """The value of `p` in the table `r` reads, checked as `p` declares."""
    if p.default is INHERIT:
        default = getattr(rule, p.name)
    else:
        default = list(p.default) if isinstance(p.default, tuple) and not p.fields else p.default
    if p.fields and p.name not in r.table:
        return p.default
    value = r.get(p.name, p.type, default, lo=p.lo, hi=p.hi,
                  choices=p.choices if p.type is not list else None)
    if p.type is list:
        if p.fields:
            items = []
            for i, raw in enumerate(value):
                fr = Reader(r.path, f"{r.entry} {p.name} #{i + 1}", raw,
                             {f.name for f in p.fields})
                got = {f.name: _param(fr, f, rule) for f in p.fields}
                items.append(p.make(**got) if p.make else got)
            value = items
        elif p.choices is not None:
            for i, item in enumerate(value):
                if item not in p.choices:
                    raise r.fail(p.name, f"item {i + 1}: must be one of "
                                 f"{', '.join(p.choices)}, got {item!r}")
        value = tuple(value)
    if p.check is not None:
        problem = p.check(value)
        if problem:
            raise r.fail(p.name, problem)
    return value


def _rule(r: Reader, base: Rule, kind: str) -> Rule:
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
    k: Kind | None = KINDS.get(kind)
    if k is not None:
        out = replace(out, params={p.name: _param(r, p, out) for p in k.params})
    return out


def load_rules(path: Path) -> tuple[dict[str, Rule], Grouping]:
    data = load_toml(path)
    top = Reader(path, "file", data, {"defaults", "grouping", "rule"})
    d = Reader(path, "[defaults]", top.get("defaults", dict, {}), COMMON_KEYS - {"enabled"})
    base = _rule(d, Rule("defaults"), "defaults")
    rules_t = top.get("rule", dict, {})
    unknown = sorted(set(rules_t) - set(KINDS))
    if unknown:
        raise ConfigError(path, "[rule]", unknown[0],
                          f"no such kind of rule (known: {', '.join(KINDS)})")
    rules: dict[str, Rule] = {}
    for kind, k in KINDS.items():
        r = Reader(path, f"[rule.{kind}]", rules_t.get(kind, {}),
                    COMMON_KEYS | {p.name for p in k.params})
        rules[kind] = _rule(r, base, kind)
    g = Reader(path, "[grouping]", top.get("grouping", dict, {}),
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
    data = load_toml(path)
    top = Reader(path, "file", data, {"municipality"})
    out: dict[str, tuple[Contact, ...]] = {}
    for i, raw in enumerate(top.get("municipality", list, [])):
        m = Reader(path, f"municipality #{i + 1}", raw, {"name", "contact"})
        name = m.get("name", str)
        m.entry = f"municipality '{name}'"
        if name in out:
            raise m.fail("name", "listed twice")
        contacts = []
        for j, c_raw in enumerate(m.get("contact", list, [])):
            c = Reader(path, f"municipality '{name}' contact #{j + 1}", c_raw,
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
