"""The gateway's domain model: what a site, an alert and a notification are, and the one answer
to "is this site online, stale or lost?".

Nothing here touches the database, a clock or the network: the store (`gateway/store/`) fills
these types, the alert rules (`gateway/alerts/rules.py`), the dashboard and the public signage
read them.

**Site status.** `site_status(snap, now)` is the only place the gateway decides a site's link
and the freshness of its data; the rule it follows is written in docs/mqtt.md, "Site status".
In short:

- `link` is `"online"`, `"lost"` (the controller's MQTT Will, newer than the site's latest
  state), or `"unknown"` (no `status` filed: never heard since it was configured, or reset).
  A Will older than the latest state is superseded: the site has spoken since, so it is online.
- `stale` is true when there is no state, or the latest state is older than
  `STALE_HEARTBEATS` x the site's heartbeat (`effective_heartbeat`). The state's age is taken from
  the older of the controller's `ts` and the receive time: a retained state replayed by the
  broker keeps its old `ts`, and a controller clock running ahead cannot keep a silent site
  looking fresh.

`site_summary(snap, now)` is one row of the overview (dashboard, `/api/sites`, `sot sites`,
signage) built on that status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_HEARTBEAT_S = 30
STALE_HEARTBEATS = 3
OPEN = ("pending", "firing", "acknowledged")

Link = Literal["online", "lost", "unknown"]


@dataclass(frozen=True)
class SiteInfo:
    """What the gateway knows about a site from configuration, before any message."""

    id: str
    name: str
    municipality: str
    lat: float
    lon: float
    heartbeat_s: int | None = None


@dataclass(frozen=True)
class SiteSnapshot:
    """Everything the gateway knows about one site at a moment: configuration, latest messages,
    and the crisis messages it has not acknowledged. Payloads are parsed JSON; times are
    epoch s."""

    info: SiteInfo
    status: dict[str, Any] | None
    status_received: float | None
    birth: dict[str, Any] | None
    state: dict[str, Any] | None
    state_ts: float | None
    state_received: float | None
    crisis_unacked: tuple[tuple[str, float], ...] = ()
    reset_at: float | None = None  # when a coordinator last reset the site (`reset_site`)

    @property
    def heartbeat_s(self) -> int:
        return effective_heartbeat(self.birth, self.info.heartbeat_s)


def effective_heartbeat(birth: dict[str, Any] | None, configured: int | None) -> int:
    """The heartbeat the gateway judges a site by: the site's configuration (or
    `DEFAULT_HEARTBEAT_S`, the controller's own default) is the most a site may claim; a birth
    may only claim a shorter one. A birth cannot postpone "stale" or "silent"."""
    cap = int(configured or DEFAULT_HEARTBEAT_S)
    claimed = (birth or {}).get("heartbeat_s")
    if isinstance(claimed, int) and not isinstance(claimed, bool) and 1 <= claimed < cap:
        return claimed
    return cap


@dataclass(frozen=True)
class SiteStatus:
    """A site's link and the freshness of its data at one moment (docs/mqtt.md, "Site status").

    - `link`: "online" | "lost" | "unknown" (no status filed yet, or since a reset).
    - `lost`: `link == "lost"`: the controller's Will is the newest thing the site said.
    - `link_since`: when the gateway received the status `link` is taken from (None: unknown).
    - `last_heard`: when the latest state was taken: the older of its `ts` and its receive
      time (None: no state).
    - `age_s`: `now - last_heard` (None: no state).
    - `stale`: no state, or it is older than `stale_after_s`. Stale data is shown as the last
      known, never as current (docs/alerts.md, A6).
    - `heartbeat_s`: the heartbeat the site is judged by (`effective_heartbeat`).
    """

    link: Link
    link_since: float | None
    last_heard: float | None
    age_s: float | None
    stale: bool
    heartbeat_s: int

    @property
    def lost(self) -> bool:
        return self.link == "lost"

    @property
    def stale_after_s(self) -> int:
        return STALE_HEARTBEATS * self.heartbeat_s

    @property
    def current(self) -> bool:
        """The data may be shown as the situation now: a fresh state from a site not lost."""
        return not self.stale and not self.lost


def site_status(snap: SiteSnapshot, now: float) -> SiteStatus:
    """The one derivation of a site's link and freshness (docs/mqtt.md, "Site status")."""
    hb = snap.heartbeat_s
    last: float | None = None
    age: float | None = None
    if snap.state is not None and snap.state_ts is not None and snap.state_received is not None:
        last = min(float(snap.state_ts), float(snap.state_received))
        age = now - last
    said = (snap.status or {}).get("state")
    link: Link
    if said == "lost":
        superseded = snap.state_received is not None and snap.status_received is not None \
            and snap.status_received < snap.state_received
        link = "online" if superseded else "lost"  # a Will older than the latest state
    elif said == "online":
        link = "online"
    else:
        link = "unknown"
    return SiteStatus(link=link, link_since=snap.status_received if link != "unknown" else None,
                      last_heard=last, age_s=age,
                      stale=age is None or age > STALE_HEARTBEATS * hb, heartbeat_s=hb)


@dataclass(frozen=True)
class SiteSummary:
    """One site as the overview shows it (dashboard, `GET /api/sites`, `sot sites`, signage).
    The attributes up to `stale` are the JSON API's fields (`as_json`); `status` there is the
    link as the gateway judges it (None: unknown), never a superseded Will."""

    id: str
    name: str
    municipality: str
    lat: float
    lon: float
    status: str | None
    fw: str | None
    heartbeat_s: int
    mode: str | None = None
    grid_state: str | None = None
    genset_state: str | None = None
    fuel_pct: float | None = None
    hours_left: float | None = None
    devices: dict[str, str] = field(default_factory=dict)
    updated_ts: float | None = None
    age_s: float | None = None
    stale: bool = True
    # not in the JSON API: the full status, for the dashboard and the signage
    link: Link = "unknown"
    last_heard: float | None = None
    lost: bool = False

    def as_json(self) -> dict[str, Any]:
        """The dict `GET /api/sites` returns for the site (`SiteSummary` in
        gateway/web/openapi.json)."""
        return {k: getattr(self, k) for k in SUMMARY_JSON_FIELDS}

    @property
    def has_data(self) -> bool:
        return self.mode is not None

    @property
    def current(self) -> bool:
        """Data to show as the situation now (else greyed: the last known)."""
        return self.has_data and not self.stale and not self.lost

    @property
    def stale_after_s(self) -> int:
        return STALE_HEARTBEATS * self.heartbeat_s


SUMMARY_JSON_FIELDS = ("id", "name", "municipality", "lat", "lon", "status", "fw", "heartbeat_s",
                       "mode", "grid_state", "genset_state", "fuel_pct", "hours_left", "devices",
                       "updated_ts", "age_s", "stale")


def site_summary(snap: SiteSnapshot, now: float) -> SiteSummary:
    st = site_status(snap, now)
    info = snap.info
    base: dict[str, Any] = {
        "id": info.id, "name": info.name, "municipality": info.municipality,
        "lat": info.lat, "lon": info.lon,
        "status": None if st.link == "unknown" else st.link,
        "fw": snap.birth.get("fw") if snap.birth else None,
        "heartbeat_s": st.heartbeat_s, "stale": st.stale,
        "link": st.link, "last_heard": st.last_heard, "lost": st.lost,
    }
    state = snap.state
    if state is not None and st.age_s is not None:
        grid = state.get("grid") or {}
        genset = state.get("genset") or {}
        fuel = state.get("fuel") or {}
        base.update(
            mode=state.get("mode"), grid_state=grid.get("state"),
            genset_state=genset.get("state"), fuel_pct=fuel.get("pct"),
            hours_left=fuel.get("hours_left"), devices=state.get("devices") or {},
            updated_ts=snap.state_ts, age_s=round(st.age_s, 1))
    return SiteSummary(**base)


@dataclass(frozen=True)
class AlertRecord:
    """One alert as stored. `level` is the highest escalation step notified (-1: none yet);
    `incident` is the key of the regional incident it was grouped into, if any."""

    id: int
    key: str
    rule: str
    site: str | None
    municipality: str
    detail: str
    severity: str
    status: str
    started: float
    fired: float | None = None
    clearing_since: float | None = None
    resolved: float | None = None
    resolve_reason: str | None = None
    level: int = -1
    level_since: float | None = None
    notified: float | None = None
    notify_count: int = 0
    incident: str | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    ack_note: str | None = None
    sv: str = ""
    en: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.status in OPEN


ALERT_FIELDS = ("key", "rule", "site", "municipality", "detail", "severity", "status", "started",
                "fired", "clearing_since", "resolved", "resolve_reason", "level", "level_since",
                "notified", "notify_count", "incident", "acked_by", "acked_at", "ack_note", "sv",
                "en", "data")


@dataclass(frozen=True)
class Notification:
    """One message to one contact over one channel. `idem` is its idempotency key: the same on
    every retry, so a receiver that saw an attempt that timed out can drop the repeat."""

    id: int
    alert_id: int
    kind: str
    contact: str
    channel: str
    target: str
    subject: str
    body: str
    idem: str
    status: str = "queued"
    attempts: int = 0
    next_at: float = 0.0
    last_error: str | None = None
