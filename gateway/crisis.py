"""Crisis messages from a coordinator to the sites: validation, the payload, publishing.

A message is published retained on `sot/v1/<site>/crisis/<id>` (docs/mqtt.md):

    {"id", "sv", "en"?, "severity": "info"|"warning"|"severe", "from", "ts", "expires"?}

An update keeps the id with a larger `ts` (the controller ignores a repeat of the same `ts`, so
two updates within one second still get distinct values); a withdrawal is an empty retained
payload. The text is untrusted input (docs/mqtt.md) and is checked here exactly as the
controller checks it (`firmware/sot/crisis.py`): the text is normalised to NFC, control
characters (C0, DEL, C1, U+2028/9) become spaces, runs of spaces collapse, and then the Swedish
text must be non-empty and each language at most `MAX_TEXT` characters; the whole PUBLISH at
most `MAX_PACKET` bytes on each target site's topic, and a site holds at most `MAX_MESSAGES`
unexpired messages. The gateway refuses rather than truncates, so what the coordinator sees on
the dashboard is what the panel shows. A controller that still cannot take a message says so
with a `crisis_refused` event, which the dashboard shows for that site. Nothing here ever
becomes HTML: the pages escape it and the signage script sets `textContent`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .store import CrisisStore

MAX_TEXT = 280  # characters per language: firmware/sot/crisis.py MAX_TEXT
MAX_FROM = 40  # firmware MAX_FROM
MAX_ID = 32
MAX_SITE_ID = 64  # the schema's longest site slug
# The one size limit both sides use (docs/mqtt.md, "Crisis messages: sizes and refusals"): the
# Remaining Length of the PUBLISH that reaches the controller - topic length field, topic,
# packet id and payload - is at most MAX_PACKET bytes, the controller's receive buffer
# (firmware/sot/mqtt/client.py MAX_PACKET). The payload's share depends on the site's topic.
MAX_PACKET = 2048
MAX_MESSAGES = 4  # messages a site holds at once: firmware/sot/crisis.py MAX_MESSAGES
MAX_INPUT = 4096  # characters accepted from a form field before it is even looked at
SEVERITIES = ("info", "warning", "severe")
ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_CONTROL = re.compile("[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]")


class CrisisError(ValueError):
    """A message the controller would refuse. `field` names the form field, `sv`/`en` say why."""

    def __init__(self, field: str, sv: str, en: str) -> None:
        super().__init__(f"{field}: {en}")
        self.field, self.sv, self.en = field, sv, en


def clean(text: str) -> str:
    """NFC (a decomposed a + U+0308 becomes one ä, as the panel's font draws it), control
    characters as spaces, runs of spaces collapsed."""
    return " ".join(_CONTROL.sub(" ", unicodedata.normalize("NFC", text)).split())


def packet_size(site: str, msg_id: str, payload: bytes) -> int:
    """The PUBLISH's Remaining Length at QoS 1: 2 + topic + 2 (packet id) + payload."""
    return 2 + len(topic(site, msg_id).encode()) + 2 + len(payload)


def _text(value: Any, field: str, *, required: bool, limit: int = MAX_TEXT) -> str | None:
    if value is None or value == "":
        if required:
            raise CrisisError(field, "Texten saknas", "Text is missing")
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CrisisError(field, "Texten är inte giltig UTF-8",
                              "Text is not valid UTF-8") from None
    if not isinstance(value, str):
        raise CrisisError(field, "Texten måste vara en sträng", "Text must be a string")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value[:MAX_INPUT + 1]):
        # lone surrogates: what invalid UTF-8 becomes with surrogateescape
        raise CrisisError(field, "Texten är inte giltig UTF-8", "Text is not valid UTF-8")
    if len(value) > MAX_INPUT:
        raise CrisisError(field, f"Texten är för lång (högst {limit} tecken)",
                          f"Text too long (at most {limit} characters)")
    text = clean(value)
    if not text:
        if required:
            raise CrisisError(field, "Texten är tom", "Text is empty")
        return None
    if len(text) > limit:
        raise CrisisError(field, f"Texten är för lång: {len(text)} tecken, högst {limit}",
                          f"Text too long: {len(text)} characters, at most {limit}")
    return text


@dataclass(frozen=True)
class CrisisMessage:
    id: str
    sv: str
    en: str | None
    severity: str
    source: str  # the payload's "from"
    ts: int
    expires: int | None = None

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "sv": self.sv}
        if self.en:
            out["en"] = self.en
        out.update(severity=self.severity, **{"from": self.source}, ts=self.ts)
        if self.expires is not None:
            out["expires"] = self.expires
        return out

    def encoded(self) -> bytes:
        return json.dumps(self.payload(), ensure_ascii=False, separators=(",", ":")).encode()


def new_id(now: float) -> str:
    """`k` + UTC date and time + 4 random hex digits: sortable, readable on a phone call."""
    return time.strftime("k%Y%m%d-%H%M%S-", time.gmtime(now)) + secrets.token_hex(2)


def validate(form: dict[str, Any], now: float, *, msg_id: str | None = None,
             previous_ts: int | None = None, sites: list[str] | None = None) -> CrisisMessage:
    """A message from the compose form (or the JSON API): `sv`, `en`, `severity`, `from`,
    `expires_min` (minutes from now; empty = no expiry). `sites`: where it goes (its packet
    must fit MAX_PACKET on each site's topic; without them, on the longest site id the
    contract allows). Raises CrisisError."""
    mid = msg_id or new_id(now)
    if not ID_RE.fullmatch(mid):
        raise CrisisError("id", "Ogiltigt id", "Invalid id")
    sv = _text(form.get("sv"), "sv", required=True)
    en = _text(form.get("en"), "en", required=False)
    source = _text(form.get("from"), "from", required=True, limit=MAX_FROM)
    severity = form.get("severity")
    if severity not in SEVERITIES:
        raise CrisisError("severity", "Okänd allvarlighetsgrad", "Unknown severity")
    expires = None
    raw_exp = form.get("expires_min")
    if raw_exp not in (None, "", 0, "0"):
        try:
            minutes = int(str(raw_exp))
        except ValueError:
            minutes = -1
        if not 1 <= minutes <= 60 * 24 * 30:
            raise CrisisError("expires_min", "Giltighetstid: 1 minut till 30 dygn",
                              "Expiry: 1 minute to 30 days")
        expires = int(now) + 60 * minutes
    ts = int(now) if previous_ts is None else max(int(now), previous_ts + 1)
    assert sv is not None and source is not None
    msg = CrisisMessage(mid, sv, en, str(severity), source, ts, expires)
    body = msg.encoded()
    size = max(packet_size(site, mid, body) for site in (sites or ["x" * MAX_SITE_ID]))
    if size > MAX_PACKET:
        raise CrisisError("sv", f"Meddelandet blir för stort för styrenheten: {size} byte, "
                                f"högst {MAX_PACKET} (skriv kortare)",
                          f"The message is too large for the controller: {size} bytes, at most "
                          f"{MAX_PACKET} (shorten it)")
    return msg


def full_sites(store: CrisisStore, sites: list[str], msg_id: str, now: float) -> list[str]:
    """The sites that already hold MAX_MESSAGES other unexpired messages: a new one would not
    fit on their controller. Withdraw one there first."""
    out = []
    for site in sites:
        held = 0
        for d in store.crisis_delivery(site=site):
            if d["crisis_id"] == msg_id:
                continue
            m = store.crisis_message(d["crisis_id"]) or {}
            if m.get("expires") is None or m["expires"] > now:
                held += 1
        if held >= MAX_MESSAGES:
            out.append(site)
    return out


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, retain: bool) -> bool: ...


def topic(site: str, msg_id: str) -> str:
    return f"sot/v1/{site}/crisis/{msg_id}"


class CrisisSender:
    """Publishes through the gateway's own MQTT session and files what it sent."""

    def __init__(self, store: CrisisStore, publisher: Publisher | None,
                 clock: Callable[[], float] = time.time,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.on_change = on_change

    def connected(self) -> bool:
        return self.publisher is not None and bool(getattr(self.publisher, "is_connected",
                                                           lambda: True)())

    def send(self, msg: CrisisMessage, sites: list[str], actor: str) -> list[str]:
        """Publish to each site; returns the sites it was handed to the broker for. The message
        is filed once the MQTT client accepted it (paho keeps it in its session until PUBACK)."""
        if self.publisher is None:
            return []
        done = []
        body = msg.encoded()
        self.store.save_crisis(msg.payload(), actor, self.clock())
        sent_at = self.clock()  # the gateway's clock, as the acks' receive times are
        for site in sites:
            if self.publisher.publish(topic(site, msg.id), body, retain=True):
                self.store.record_crisis_sent(site, msg.id, sent_at, actor=actor)
                done.append(site)
                if self.on_change:
                    self.on_change(site)
        return done

    def withdraw(self, msg_id: str, actor: str) -> list[str]:
        if self.publisher is None:
            return []
        done = []
        now = self.clock()
        for site in self.store.crisis_sites(msg_id):
            if self.publisher.publish(topic(site, msg_id), b"", retain=True):
                self.store.withdraw_crisis(site, msg_id, now, actor=actor)
                done.append(site)
                if self.on_change:
                    self.on_change(site)
        self.store.mark_crisis_withdrawn(msg_id, now)
        return done
