"""What happens to an official alert that applies to a site: the municipality's policy.

    [feed_policy]                      # config/gateway.toml
    default = "approve"                # auto | approve | off, for municipalities not listed
    municipalities = { "2321" = "auto", "2361" = "off" }   # by municipality code (SCB)

- `auto`: an alert that is Extreme or Severe, Immediate or Expected, and not Unlikely goes
  straight to the panels and signage of the sites it applies to. Anything milder is not
  dropped: it waits for a coordinator, as under `approve`.
- `approve`: every real alert waits for a coordinator, who approves it (and may add a local
  note; the official text is never edited) or lets it be.
- `off`: the municipality's sites show no official alerts; the coordinators still see them.

Whatever the policy, only status Actual can ever be published: Test, Exercise, System and Draft
are "ignore" here (coordinators see them, marked as test). A Cancel is not a decision: what it
withdraws leaves wherever it was shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model import OfficialAlert

POLICIES = ("auto", "approve", "off")
DECISIONS = ("publish", "await_approval", "ignore")
AUTO_SEVERITY = ("Extreme", "Severe")
AUTO_URGENCY = ("Immediate", "Expected")


def decide(alert: OfficialAlert, policy: str) -> str:
    """"publish" | "await_approval" | "ignore" (module docstring)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    if not alert.actual or alert.msg_type in ("Cancel", "Ack", "Error") or policy == "off":
        return "ignore"
    if (policy == "auto" and alert.severity in AUTO_SEVERITY and alert.urgency in AUTO_URGENCY
            and alert.certainty != "Unlikely"):
        return "publish"
    return "await_approval"


@dataclass(frozen=True)
class PolicyConfig:
    default: str = "approve"
    municipalities: dict[str, str] = field(default_factory=dict)

    def for_site(self, municipality_code: str | None) -> str:
        if municipality_code and municipality_code in self.municipalities:
            return self.municipalities[municipality_code]
        return self.default


def load_policy(raw: Any) -> PolicyConfig:
    """`[feed_policy]` of config/gateway.toml (None: the default, approve everywhere). Raises
    ValueError naming the key."""
    if raw is None:
        return PolicyConfig()
    if not isinstance(raw, dict):
        raise ValueError("[feed_policy] must be a table")
    unknown = sorted(set(raw) - {"default", "municipalities"})
    if unknown:
        raise ValueError(f"[feed_policy] unknown key '{unknown[0]}' (allowed: default, "
                         f"municipalities)")
    default = raw.get("default", "approve")
    if default not in POLICIES:
        raise ValueError(f"[feed_policy] default must be one of {', '.join(POLICIES)}, "
                         f"got {default!r}")
    munis = raw.get("municipalities", {})
    if not isinstance(munis, dict):
        raise ValueError("[feed_policy] municipalities must be a table of code = policy")
    out = {}
    for code, pol in munis.items():
        if not (isinstance(code, str) and len(code) == 4 and code.isdigit()):
            raise ValueError(f"[feed_policy] municipalities: '{code}' is not a four-digit "
                             f"municipality code such as \"2321\"")
        if pol not in POLICIES:
            raise ValueError(f"[feed_policy] municipalities.{code} must be one of "
                             f"{', '.join(POLICIES)}, got {pol!r}")
        out[code] = pol
    return PolicyConfig(default=default, municipalities=out)
