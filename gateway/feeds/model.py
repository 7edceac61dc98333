"""The official alert as the gateway keeps it, whatever feed it came from.

`OfficialAlert` is one message of a national warning source (a CAP 1.2 document such as a VMA,
or an item of Krisinformation's API v3) reduced to what the panels, the signage and the
coordinators need: who issued it, whether it is real, what it replaces, where it applies, the
texts in Swedish and English, and the level it is shown at (docs/feeds.md).

Levels are those of the municipality's own crisis messages (gateway/crisis.py SEVERITIES, the
panel's and the signage's colours): "info" < "warning" < "severe". `level()` maps CAP severity
and urgency onto them:

    severity \\ urgency   Immediate  Expected  Future   Past   Unknown
    Extreme               severe     severe    warning  info   severe
    Severe                severe     severe    warning  info   warning
    Moderate              warning    warning   info     info   warning
    Minor                 info       info      info     info   info
    Unknown               info       info      info     info   info

Why: "severe" is the red "act now" page, so it needs both a severe event and one that is
happening or about to (an Extreme one with unknown timing is treated as now); a threat further
ahead is a "warning"; an event that is over (Past) or minor is information.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("Actual", "Exercise", "System", "Test", "Draft")
MSG_TYPES = ("Alert", "Update", "Cancel", "Ack", "Error")
SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor", "Unknown")
URGENCIES = ("Immediate", "Expected", "Future", "Past", "Unknown")
CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely", "Unknown")
LEVELS = ("info", "warning", "severe")  # gateway/crisis.py SEVERITIES, lowest first

_LEVEL = {
    "Extreme": {"Immediate": "severe", "Expected": "severe", "Future": "warning",
                "Past": "info", "Unknown": "severe"},
    "Severe": {"Immediate": "severe", "Expected": "severe", "Future": "warning",
               "Past": "info", "Unknown": "warning"},
    "Moderate": {"Immediate": "warning", "Expected": "warning", "Future": "info",
                 "Past": "info", "Unknown": "warning"},
}


def level(severity: str, urgency: str) -> str:
    """The panel/signage level of a CAP severity and urgency (table in the module docstring)."""
    return _LEVEL.get(severity, {}).get(urgency, "info")


@dataclass(frozen=True)
class Texts:
    """One language's texts of an alert (CAP `<info>`): headline, description, instruction."""

    language: str  # as the source gave it, e.g. "sv-SE"
    headline: str
    description: str = ""
    instruction: str = ""
    event: str = ""


@dataclass(frozen=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


@dataclass(frozen=True)
class Area:
    """One CAP `<area>` (or Krisinformation `Area` entry).

    `municipalities` and `counties` are the Swedish codes (SCB: 4 and 2 digits) the source named,
    by geocode or, for Krisinformation, by name; `nationwide` is an area for all of Sweden.
    `polygons` are closed rings of (lat, lon)."""

    description: str
    municipalities: tuple[str, ...] = ()
    municipality_names: tuple[str, ...] = ()  # Krisinformation names them: "Åre" of "Åre kommun"
    counties: tuple[str, ...] = ()
    nationwide: bool = False
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[tuple[str, str], ...] = ()  # every (valueName, value), also unknown ones

    def targeted(self) -> bool:
        """Whether this area says where, in a way the gateway can match to a site."""
        return bool(self.municipalities or self.municipality_names or self.counties
                    or self.nationwide or self.polygons or self.circles)


@dataclass(frozen=True)
class OfficialAlert:
    """One official message. `id` is the source kind and the source's identifier ("cap:" +
    sender + " " + identifier, "krisinformation:" + Identifier); `key` is what makes two
    messages the same alert when the same alert comes from two sources (docs/feeds.md,
    "Dedupe"); `references` are the (sender, identifier) pairs an Update or Cancel refers to.
    Times are epoch seconds."""

    id: str
    source: str  # "cap" | "krisinformation"
    identifier: str
    sender: str
    status: str
    msg_type: str
    sent: float
    expires: float | None
    severity: str
    urgency: str
    certainty: str
    sv: Texts | None
    en: Texts | None
    areas: tuple[Area, ...]
    origin: str  # the issuer's name (CAP senderName, Krisinformation SenderName), else sender
    references: tuple[tuple[str, str], ...] = ()
    scope: str = "Public"
    category: tuple[str, ...] = ()
    feed: str = ""  # the name of the configured feed it came from
    web: str = ""  # a link to the full text, where the source gives one
    aliases: tuple[str, ...] = field(default=())  # other identifiers this alert is known by

    @property
    def actual(self) -> bool:
        """Only status Actual is real: everything else is for coordinators, marked as test."""
        return self.status == "Actual"

    @property
    def level(self) -> str:
        return level(self.severity, self.urgency)

    @property
    def key(self) -> str:
        """The dedupe key: CAP identifiers are unique per sender (CAP 1.2, 3.2.1), so a CAP
        alert is the pair; a Krisinformation item is its Identifier."""
        if self.source == "cap":
            return f"cap {self.sender} {self.identifier}"
        return f"{self.source} {self.identifier}"

    def reference_keys(self) -> tuple[str, ...]:
        """The dedupe keys of the messages this one refers to (an Update's or a Cancel's)."""
        if self.source == "cap":
            return tuple(f"cap {s} {i}" for s, i in self.references)
        return tuple(f"{self.source} {i}" for _, i in self.references)

    def primary(self) -> Texts | None:
        """Swedish first, English where there is no Swedish."""
        return self.sv or self.en

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


def alert_json(a: OfficialAlert) -> dict[str, Any]:
    """`a` as plain JSON data (the feeds' state in the store, gateway/feeds/run.py)."""
    return asdict(a)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def alert_from_json(d: dict[str, Any]) -> OfficialAlert:
    """The inverse of `alert_json`."""
    def texts(t: dict[str, Any] | None) -> Texts | None:
        return None if t is None else Texts(**t)

    areas = tuple(Area(**{**{k: _tuples(v) for k, v in x.items()},
                          "circles": tuple(Circle(**c) for c in x.get("circles", ()))})
                  for x in d.get("areas", ()))
    plain = {k: _tuples(v) for k, v in d.items() if k not in ("sv", "en", "areas")}
    return OfficialAlert(**plain, sv=texts(d.get("sv")), en=texts(d.get("en")), areas=areas)
