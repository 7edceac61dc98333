"""What a kind of alert rule is: its name, its condition and the settings it takes.

The kinds themselves are registered in `gateway/alerts/rules.py` (`KINDS`), one `Kind` each next
to its condition; `gateway/alerts/config.py` reads `[rule.<kind>]` of `config/alerts.toml` from
that registry: the settings every rule has (hold_s, severity, …) plus the kind's own `params`,
checked against their declared type, range and choices. The words of a kind (its title, what to
do, the sentences its condition writes) are entries `alert.<kind>.*` of `config/texts.toml`.
docs/texts.md shows how to add a kind.

This module imports nothing of the gateway, so both the rules and the config reader can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import AlertRecord
    from .rules import Observed, SiteView

SEVERITIES = ("info", "warning", "critical")
# The regional incident: not a kind a site can have, but an alert the grouping opens for a
# municipality (configured by `[grouping]`, worded by `alert.regional_grid_lost.*`).
INCIDENT_RULE = "regional_grid_lost"


class _Inherit:
    def __repr__(self) -> str:
        return "INHERIT"


# A field default meaning "the rule's own setting of the same name" (a fuel threshold's severity).
INHERIT: Any = _Inherit()

# Where a kind is evaluated (`Kind.scope`): "site", at every site; "gateway", once per full round
# at the gateway's own pseudo-target (its feeds of official alerts, say). A gateway alert has no
# site, like the regional incident, and the municipality GATEWAY_MUNICIPALITY: the contacts of
# municipality "*" in config/contacts.toml are told.
SCOPES = ("site", "gateway")
GATEWAY_TARGET = "gateway"
GATEWAY_MUNICIPALITY = "*"


@dataclass(frozen=True)
class Param:
    """One setting of a kind, a key of its `[rule.<kind>]` table.

    `type` is float, int, bool, str or list. A number is checked against `lo`..`hi`; a string,
    or each item of a list of strings, against `choices`. A list of tables (`fields` given) has
    each item read by `fields` and built by `make(**item)`. `check` sees the final value and
    returns what is wrong with it (None: nothing). `default` is the value when the key is absent
    (a tuple for a list)."""

    name: str
    type: type
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    fields: tuple[Param, ...] = ()
    make: Callable[..., Any] | None = None
    check: Callable[[Any], str | None] | None = None
    doc: str = ""


@dataclass(frozen=True)
class Threshold:
    """A step of fuel_low: fire (or rise to this step) below `hours` left, at `severity`."""

    hours: float
    severity: str


@dataclass(frozen=True)
class Rule:
    """A configured rule: the settings every kind has, and the kind's own in `params` (every
    declared param present, defaults filled in)."""

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
    # the kind's own settings: `rule.params["max_runtime_h"]`
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)


# (the rule, one site, now, the open alerts of this rule at this site by detail) -> Observed
Condition = Callable[["Rule", "SiteView", float, Mapping[str, "AlertRecord"]], "Observed"]


@dataclass(frozen=True)
class Kind:
    """A kind of alert rule: `evaluate` decides, per site, whether its condition holds;
    `params` are the settings it takes besides the common ones."""

    name: str
    evaluate: Condition
    params: tuple[Param, ...] = ()
    scope: str = "site"  # SCOPES

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


def registry(*kinds: Kind) -> dict[str, Kind]:
    """name -> Kind, in the order given (the order rules are evaluated and listed in)."""
    out: dict[str, Kind] = {}
    for k in kinds:
        if k.name in out or k.name == INCIDENT_RULE:
            raise ValueError(f"alert kind {k.name!r} registered twice (or named like the "
                             "regional incident)")
        out[k.name] = k
    return out
