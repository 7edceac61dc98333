"""Official alerts to the panels and signage, through the crisis sender (gateway/crisis.py).

`FeedPublisher.handle(changes)` takes the reducer's changes (gateway/feeds/reduce.py) and, per
site the alert applies to (geo.applies), does what the site's municipality policy decides
(policy.decide):

- "publish": the alert goes out as a crisis message, retained on the site's topic, exactly as
  a coordinator's message does: the same validation, the same four-message limit per site, the
  same acknowledgement by staff, and the crisis table as audit (actor "feed:<feed name>").
  The store also keeps the alert as the gateway's CAP feed republishes it (`official_record`:
  the official texts whole, the origin, the source's identifier), so the feed names where it
  came from (gateway/alerts/cap.py `official_alert`, docs/feeds.md "The CAP feed out").
- "await_approval": the alert is kept in `pending` for a coordinator (the approval view is not
  built yet; `approve()` is what it will call).
- "ignore": nothing (a test message, a municipality with policy off).

An Update keeps the crisis message id of the alert it replaces, so the panel replaces the text
in place (a larger `ts`). It stays on the sites that show it wherever it still applies, even
where the policy would make a new alert wait: what was approved once is approved for the
authority's later versions of it. A site it no longer applies to has it withdrawn. A Cancel or
expiry withdraws it everywhere.

The running gateway owns one publisher, with one FeedPoller per `[[feeds]]` and the AlertSet
(gateway/feeds/run.py).

The panel holds at most crisis.MAX_TEXT characters per language, and the official text is never
edited: the message is the headline, then the instruction and then the description, each added
only if it fits whole. A headline longer than the limit is cut at a word and ends with "…";
the full text stays on the dashboard and at the source's link.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .. import crisis
from ..store import CrisisStore
from .geo import Place, applies
from .model import OfficialAlert, Texts
from .policy import PolicyConfig, decide
from .reduce import Change

log = logging.getLogger("gateway.feeds")


class Site(Place, Protocol):
    @property
    def id(self) -> str: ...


def crisis_id(key: str) -> str:
    """A crisis message id (crisis.ID_RE) for an alert's dedupe key: stable across restarts."""
    return "feed-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def panel_text(t: Texts | None, limit: int = crisis.MAX_TEXT) -> str | None:
    """Headline, then instruction, then description, each only if it fits whole (module
    docstring)."""
    if t is None:
        return None
    parts = [crisis.clean(p) for p in (t.headline or t.event, t.instruction, t.description)]
    parts = [p for p in parts if p]
    if not parts:
        return None
    out = parts[0]
    if len(out) > limit:
        cut = out[:limit - 1]
        out = (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"
    for p in parts[1:]:
        if len(out) + 1 + len(p) <= limit:
            out += " " + p
    return out


def _from(origin: str) -> str:
    text = crisis.clean(origin) or "Officiellt larm"
    return text if len(text) <= crisis.MAX_FROM else text[:crisis.MAX_FROM - 1] + "…"


NOTE_SV, NOTE_EN = "Kommunen: ", "Municipality: "


def official_record(alert: OfficialAlert, note: str | None = None) -> dict[str, Any]:
    """What the gateway's CAP feed says of a republished official alert: its origin (issuer,
    feed, source kind, the source's sender, identifier and sent time), its CAP values and its
    texts whole, Swedish first; `note` is the municipality's local note, if one was added."""
    texts = [{"language": t.language, "event": t.event, "headline": t.headline,
              "description": t.description, "instruction": t.instruction}
             for t in (alert.sv, alert.en) if t is not None]
    return {"origin": alert.origin, "feed": alert.feed, "source": alert.source,
            "sender": alert.sender, "identifier": alert.identifier, "sent": alert.sent,
            "expires": alert.expires, "severity": alert.severity, "urgency": alert.urgency,
            "certainty": alert.certainty, "category": list(alert.category), "web": alert.web,
            "texts": texts, "note": note}


class NoteTooLong(ValueError):
    def __init__(self, room: int) -> None:
        super().__init__(f"the note does not fit beside the official text: at most {room} "
                         f"characters")
        self.room = room


def note_room(alert: OfficialAlert) -> int:
    """How many characters a local note may have beside the alert's official text."""
    sv = panel_text(alert.sv) or panel_text(alert.en) or ""
    en = panel_text(alert.en) if alert.sv is not None else None
    room = crisis.MAX_TEXT - len(sv) - 1 - len(NOTE_SV)
    if en:
        room = min(room, crisis.MAX_TEXT - len(en) - 1 - len(NOTE_EN))
    return max(0, room)


@dataclass(frozen=True)
class Pending:
    alert: OfficialAlert
    sites: tuple[str, ...]


class FeedPublisher:
    def __init__(self, sender: crisis.CrisisSender, store: CrisisStore,
                 sites: Mapping[str, Site], policy: PolicyConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.sender, self.store, self.sites, self.policy = sender, store, sites, policy
        self.clock = clock
        self.published: dict[str, str] = {}  # alert key -> crisis message id
        self.pending: dict[str, Pending] = {}  # alert key -> awaiting a coordinator
        self.counts: Counter[str] = Counter()

    def decisions(self, alert: OfficialAlert) -> dict[str, str]:
        """site id -> decision, for the sites the alert applies to."""
        return {sid: decide(alert, self.policy.for_site(s.municipality_code))
                for sid, s in self.sites.items() if applies(alert, s)}

    def handle(self, changes: Sequence[Change]) -> None:
        for c in changes:
            if c.kind in ("withdrawn", "expired"):
                self._withdraw(c.alert)
            elif c.kind in ("added", "updated"):
                self._show(c.alert, c.replaced)

    def approve(self, key: str, actor: str, note: str | None = None) -> list[str]:
        """A coordinator approved a pending alert: it goes to the sites that awaited it.
        `note`: the coordinator's local note, shown after the official text (never instead of
        any of it); NoteTooLong when it does not fit beside it, and nothing is sent."""
        p = self.pending.get(key)
        if p is None:
            return []
        note = crisis.clean(note or "") or None
        if note is not None:
            room = note_room(p.alert)
            if len(note) > room:
                raise NoteTooLong(room)
        del self.pending[key]
        return self._send(p.alert, list(p.sites), actor, self.published.get(key), note)

    # --- internals --------------------------------------------------------------------------

    def _actor(self, alert: OfficialAlert) -> str:
        return f"feed:{alert.feed or alert.source}"

    def _show(self, alert: OfficialAlert, replaced: tuple[OfficialAlert, ...]) -> None:
        cid = None
        for r in replaced:
            self.pending.pop(r.key, None)
            old = self.published.pop(r.key, None)
            cid = cid or old
        decided = self.decisions(alert)
        publish = sorted(s for s, d in decided.items() if d == "publish")
        waiting = tuple(sorted(s for s, d in decided.items() if d == "await_approval"))
        if cid is not None:  # an update: its sites keep it in place, the others lose it
            was = set(self.store.crisis_sites(cid))
            keep = sorted(was & (set(publish) | set(waiting)))
            gone = sorted(was - set(keep))
            publish = sorted(set(publish) | set(keep))
            waiting = tuple(s for s in waiting if s not in keep)
            self._withdraw_sites(cid, gone, self._actor(alert))
        if waiting:
            self.pending[alert.key] = Pending(alert, waiting)
            self.counts["awaiting"] += 1
        if publish:
            self._send(alert, publish, self._actor(alert), cid)
        elif cid is not None and not self.store.crisis_sites(cid):
            self.store.mark_crisis_withdrawn(cid, self.clock())

    def _send(self, alert: OfficialAlert, sites: list[str], actor: str,
              cid: str | None, note: str | None = None) -> list[str]:
        now = self.clock()
        cid = cid or crisis_id(alert.key)
        sv = panel_text(alert.sv) or panel_text(alert.en)
        en = panel_text(alert.en) if alert.sv is not None else None
        if note:  # after the official text, which stays whole (approve checked the room)
            sv = f"{sv} {NOTE_SV}{note}" if sv else sv
            en = f"{en} {NOTE_EN}{note}" if en else en
        form = {"sv": sv, "en": en, "severity": alert.level, "from": _from(alert.origin),
                "expires_min": None}
        if alert.expires is not None:
            form["expires_min"] = str(max(1, min(60 * 24 * 30,
                                                 math.ceil((alert.expires - now) / 60))))
        old = self.store.crisis_message(cid)
        try:
            msg = crisis.validate(form, now, msg_id=cid, sites=sites,
                                  previous_ts=int(old["ts"]) if old else None)
        except crisis.CrisisError as e:
            self.counts["refused"] += 1
            log.warning("feed alert %s not sent: %s", alert.id, e)
            return []
        full = set(crisis.full_sites(self.store, sites, cid, now))
        if full:
            self.counts["site_full"] += len(full)
            log.warning("feed alert %s not sent to %s: %d messages there already", alert.id,
                        ", ".join(sorted(full)), crisis.MAX_MESSAGES)
        done = self.sender.send(msg, [s for s in sites if s not in full], actor)
        if done:
            self.store.save_official(cid, official_record(alert, note), now)
            self.published[alert.key] = cid
            self.counts["sent"] += 1
        return done

    def _withdraw(self, alert: OfficialAlert) -> None:
        self.pending.pop(alert.key, None)
        cid = self.published.pop(alert.key, None)
        if cid is not None:
            self.sender.withdraw(cid, self._actor(alert))
            self.counts["withdrawn"] += 1

    def _withdraw_sites(self, cid: str, sites: list[str], actor: str) -> None:
        publisher = self.sender.publisher
        if publisher is None:
            return
        now = self.clock()
        for site in sites:
            if publisher.publish(crisis.topic(site, cid), b"", retain=True):
                self.store.withdraw_crisis(site, cid, now, actor=actor)
                if self.sender.on_change:
                    self.sender.on_change(site)
