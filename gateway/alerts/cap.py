"""Active alerts as CAP 1.2 documents and as an Atom feed of them, for other crisis systems.

    GET /cap.atom          Atom feed (RFC 4287), one entry per active alert, each carrying its
                           CAP document inline (content type application/cap+xml)
    GET /cap/<id>.xml      one CAP document

CAP is OASIS Common Alerting Protocol 1.2. Element order follows the standard's schema (the
test validates every document against it). The mapping:

    status Actual, scope Public
    identifier  one per message, never reused for other content: `<sender>.alert.<id>` for
              the first message of an alert, `<sender>.alert.<id>.<n>` for its n-th version
    msgType   Alert for the first; a change of what the document says (acknowledged, new text,
              severity, sites) is a new message, msgType Update, whose `references` lists every
              earlier message of the alert as `sender,identifier,sent`
    info twice: language sv-SE first, en-GB second; category Infra; certainty Observed
    severity  critical -> Severe, warning -> Moderate, info -> Minor
    urgency   critical -> Immediate, warning -> Expected, info -> Future
    area      the site's name and municipality, a 1 km circle around its position (an incident:
              one area per site)
    note      that a coordinator acknowledged it, and when (never who: account names are not
              published)

Versions are kept in the store (`Store.cap_versions`): whoever renders an alert (the feed or
the single document) asks for the version of what it is about to publish, and a version is
added when the content's digest differs from the last one. Every text goes through
`gateway.safetext.clean` (in `_sub`), so text from a site never makes a document ill-formed.
Links are absolute: the configured base URL, else the address the request came to.

Members of a regional incident are left out: the incident carries their areas, as a coordinator
gets one message for them.

Official alerts the gateway republishes (a VMA or a Krisinformation item shown on the sites'
panels and signage, gateway/feeds/publish.py) are in the feed too, each as a message of this
gateway that names its origin (`official_alert`; docs/feeds.md, "The CAP feed out"):

    identifier  `<sender>.official.<crisis message id>`, `.<n>` for its n-th version
    source      the issuer and the feed it came through ("SOS Alarm (feed:vma)")
    note        that it is the issuer's message shown unchanged, the original's
              `sender,identifier,sent`, and the municipality's local note if one was added
    references  the original CAP message (when the source is CAP), then this message's earlier
              versions
    info        the official texts whole, in the languages the source gave (Swedish first),
              with the source's category, severity, urgency, certainty, expiry and link;
              senderName is the issuer
    area        the sites showing it (as for a site's alert)
    GET /cap/official/<crisis message id>.xml   one such document
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..model import AlertRecord
from ..safetext import clean
from . import texts
from .config import INCIDENT_RULE
from .rules import TZ

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_TYPE = "application/cap+xml"
SEVERITY = {"critical": "Severe", "warning": "Moderate", "info": "Minor"}
URGENCY = {"critical": "Immediate", "warning": "Expected", "info": "Future"}
RADIUS_KM = 1.0

ET.register_namespace("", ATOM_NS)
ET.register_namespace("cap", CAP_NS)


def cap_time(ts: float) -> str:
    """CAP's dateTime: local time with an explicit offset, no fraction, never 'Z'."""
    return datetime.fromtimestamp(int(ts), TZ).isoformat()


def feed_alerts(alerts: Sequence[AlertRecord]) -> list[AlertRecord]:
    """What the feed shows: firing and acknowledged alerts that are not part of an incident.
    Not the gateway's alerts about itself (a failing feed of official alerts: no site, no
    incident): they concern its coordinators, not other crisis systems, and have no place."""
    return [a for a in alerts if a.status in ("firing", "acknowledged") and a.incident is None
            and (a.site is not None or a.rule == INCIDENT_RULE)]


def identifier(sender: str, a: AlertRecord, n: int = 1) -> str:
    return f"{sender}.alert.{a.id}" if n <= 1 else f"{sender}.alert.{a.id}.{n}"


@dataclass(frozen=True)
class Version:
    """Which message of its alert a document is: the n-th (1 = the first), sent at `sent`,
    after the earlier ones sent at `earlier` (oldest first)."""

    n: int
    sent: float
    earlier: tuple[float, ...] = ()


# (alert id, digest of the content, now) -> the versions so far, oldest first, as (n, sent)
Versions = Callable[[int, str, float], list[tuple[int, float]]]


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = CAP_NS) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        el.text = clean(text)
    return el


def _set(el: ET.Element, name: str, value: str) -> None:
    el.set(name, clean(value))


def digest(a: AlertRecord, *, sender: str) -> str:
    """What the document says, without which message it is and without the link (which
    follows the address a reader used): equal digests, equal content."""
    doc = ET.tostring(cap_alert(a, sender=sender, version=None), encoding="unicode")
    return hashlib.sha256(doc.encode()).hexdigest()


def version(a: AlertRecord, versions: Versions, now: float, *, sender: str) -> Version:
    got = versions(a.id, digest(a, sender=sender), now)
    n, sent = got[-1]
    return Version(n, sent, tuple(t for _, t in got[:-1]))


def cap_alert(a: AlertRecord, *, sender: str, base_url: str | None = None,
              version: Version | None = None) -> ET.Element:
    """The CAP document of `a` as message `version` (None: without identifier, time and
    references, for `digest`)."""
    v = version or Version(0, 0.0)
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", identifier(sender, a, v.n) if version else "")
    _sub(root, "sender", sender)
    _sub(root, "sent", cap_time(v.sent) if version else "")
    _sub(root, "status", "Actual")
    _sub(root, "msgType", "Alert" if v.n <= 1 else "Update")
    _sub(root, "scope", "Public")
    if a.status == "acknowledged":
        when = f", {cap_time(a.acked_at)}" if a.acked_at else ""
        ack_sv, ack_en = texts.pair("cap.acknowledged")
        _sub(root, "note", f"{ack_sv} / {ack_en}{when}")
    if version is not None and v.earlier:
        _sub(root, "references", " ".join(
            f"{sender},{identifier(sender, a, i + 1)},{cap_time(t)}"
            for i, t in enumerate(v.earlier)))
    if a.rule == INCIDENT_RULE:
        sites = a.data.get("site_names") or a.data.get("sites") or []
        points = a.data.get("points") or []
    else:
        sites = [a.data.get("site_name") or a.site]
        points = [[a.data.get("lat"), a.data.get("lon")]]
    for lang, idx in (("sv-SE", 0), ("en-GB", 1)):
        info = _sub(root, "info")
        _sub(info, "language", lang)
        _sub(info, "category", "Infra")
        title = texts.title(a.rule)[idx]
        _sub(info, "event", title)
        _sub(info, "urgency", URGENCY.get(a.severity, "Unknown"))
        _sub(info, "severity", SEVERITY.get(a.severity, "Unknown"))
        _sub(info, "certainty", "Observed")
        code = _sub(info, "eventCode")
        _sub(code, "valueName", "sot-rule")
        _sub(code, "value", a.rule)
        _sub(info, "onset", cap_time(a.started))
        _sub(info, "senderName", "SOT-punkt gateway")
        where = a.municipality if a.rule == INCIDENT_RULE else \
            f"{a.data.get('site_name') or a.site}, {a.municipality}"
        _sub(info, "headline", f"{title}: {where}"[:160])
        _sub(info, "description", a.sv if idx == 0 else a.en)
        instruction = texts.instruction(a.rule)[idx]
        if instruction:
            _sub(info, "instruction", instruction)
        if base_url:
            _sub(info, "web", base_url.rstrip("/") + "/")
        for name, point in zip(sites, points, strict=False):
            area = _sub(info, "area")
            muni = texts.pair("cap.municipality")[idx]
            _sub(area, "areaDesc", f"{name}, {a.municipality} {muni}")
            if isinstance(point, list) and len(point) == 2 and all(
                    isinstance(x, int | float) for x in point):
                _sub(area, "circle", f"{point[0]:.5f},{point[1]:.5f} {RADIUS_KM:g}")
    return root


def cap_document(a: AlertRecord, *, sender: str, version: Version,
                 base_url: str | None = None) -> str:
    return ET.tostring(cap_alert(a, sender=sender, base_url=base_url, version=version),
                       encoding="unicode", xml_declaration=True)


# --- official alerts republished ---------------------------------------------------------------

CATEGORIES = ("Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
              "Transport", "Infra", "CBRNE", "Other")
_CAP_SEVERITIES = ("Extreme", "Severe", "Moderate", "Minor")
_CAP_URGENCIES = ("Immediate", "Expected", "Future", "Past")
_CAP_CERTAINTIES = ("Observed", "Likely", "Possible", "Unlikely")

# (crisis message id, digest of the content, now) -> the versions so far, oldest first
OfficialVersions = Callable[[str, str, float], list[tuple[int, float]]]


def official_identifier(sender: str, crisis_id: str, n: int = 1) -> str:
    base = f"{sender}.official.{crisis_id}"
    return base if n <= 1 else f"{base}.{n}"


def _one_of(value: Any, allowed: Sequence[str]) -> str:
    return value if value in allowed else "Unknown"


def official_alert(o: Mapping[str, Any], *, sender: str, base_url: str | None = None,
                   version: Version | None = None) -> ET.Element:
    """The CAP document of a republished official alert `o` (an item of
    `Store.official_shown()`: crisis_id, alert = feeds.publish.official_record, sites), as
    message `version` (None: for the digest)."""
    v = version or Version(0, 0.0)
    a: Mapping[str, Any] = o["alert"]
    cid = str(o["crisis_id"])
    origin = str(a.get("origin") or a.get("sender") or "")
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", official_identifier(sender, cid, v.n) if version else "")
    _sub(root, "sender", sender)
    _sub(root, "sent", cap_time(v.sent) if version else "")
    _sub(root, "status", "Actual")
    _sub(root, "msgType", "Alert" if v.n <= 1 else "Update")
    via = a.get("feed") or a.get("source")
    _sub(root, "source", f"{origin} (feed:{via})" if via else origin)
    _sub(root, "scope", "Public")
    said_sv, said_en = texts.say("cap.official", origin=origin)
    orig_sv, orig_en = texts.pair("cap.official_original")
    original = ""
    refs = []
    if a.get("source") == "cap" and a.get("sender") and a.get("identifier"):
        original = f"{a['sender']},{a['identifier']},{cap_time(float(a.get('sent') or 0))}"
        if not any(c in f"{a['sender']}{a['identifier']}" for c in " ,\t\n"):
            refs.append(original)  # CAP 1.2: no space or comma in sender and identifier
    elif a.get("identifier"):
        original = f"{a.get('source')}:{a['identifier']}"
    note = f"{said_sv} / {said_en}."
    if original:
        note += f" {orig_sv} / {orig_en}: {original}."
    if a.get("note"):
        local_sv, local_en = texts.pair("cap.local_note")
        note += f" {local_sv} / {local_en}: {a['note']}"
    _sub(root, "note", note)
    if version is not None:
        refs += [f"{sender},{official_identifier(sender, cid, i + 1)},{cap_time(t)}"
                 for i, t in enumerate(v.earlier)]
    if refs:
        _sub(root, "references", " ".join(refs))
    categories = [c for c in a.get("category") or () if c in CATEGORIES] or ["Safety"]
    for t in a.get("texts") or ():
        info = _sub(root, "info")
        _sub(info, "language", str(t.get("language") or "sv-SE"))
        for c in categories:
            _sub(info, "category", c)
        _sub(info, "event", str(t.get("event") or t.get("headline") or origin))
        _sub(info, "urgency", _one_of(a.get("urgency"), _CAP_URGENCIES))
        _sub(info, "severity", _one_of(a.get("severity"), _CAP_SEVERITIES))
        _sub(info, "certainty", _one_of(a.get("certainty"), _CAP_CERTAINTIES))
        if a.get("expires"):
            _sub(info, "expires", cap_time(float(a["expires"])))
        _sub(info, "senderName", origin)
        if t.get("headline"):
            _sub(info, "headline", str(t["headline"]))
        if t.get("description"):
            _sub(info, "description", str(t["description"]))
        if t.get("instruction"):
            _sub(info, "instruction", str(t["instruction"]))
        if a.get("web"):
            _sub(info, "web", str(a["web"]))
        elif base_url:
            _sub(info, "web", base_url.rstrip("/") + "/")
        muni = texts.pair("cap.municipality")[0 if str(t.get("language", "")).startswith("sv")
                                              else 1]
        for site in o.get("sites") or ():
            area = _sub(info, "area")
            _sub(area, "areaDesc", f"{site['name']}, {site['municipality']} {muni}")
            if all(isinstance(site.get(k), int | float) for k in ("lat", "lon")):
                _sub(area, "circle", f"{site['lat']:.5f},{site['lon']:.5f} {RADIUS_KM:g}")
    return root


def official_version(o: Mapping[str, Any], versions: OfficialVersions, now: float, *,
                     sender: str) -> Version:
    doc = ET.tostring(official_alert(o, sender=sender, version=None), encoding="unicode")
    got = versions(str(o["crisis_id"]), hashlib.sha256(doc.encode()).hexdigest(), now)
    n, sent = got[-1]
    return Version(n, sent, tuple(t for _, t in got[:-1]))


def official_document(o: Mapping[str, Any], *, sender: str, version: Version,
                      base_url: str | None = None) -> str:
    return ET.tostring(official_alert(o, sender=sender, base_url=base_url, version=version),
                       encoding="unicode", xml_declaration=True)


def atom_feed(alerts: Sequence[AlertRecord], *, sender: str, now: float, base_url: str,
              versions: Versions, official: Sequence[Mapping[str, Any]] = (),
              official_versions: OfficialVersions | None = None) -> str:
    """`base_url` is absolute (http(s)://host[:port]/...): every link in the feed is.
    `official`: the official alerts shown (`Store.official_shown()`), after the site alerts."""
    base = base_url.rstrip("/")
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _sub(feed, "id", f"urn:sot-punkt:{sender}:cap", ATOM_NS)
    _sub(feed, "title", " / ".join(texts.pair("cap.feed_title")), ATOM_NS)
    _sub(feed, "updated", datetime.fromtimestamp(int(now), UTC).isoformat(), ATOM_NS)
    author = _sub(feed, "author", None, ATOM_NS)
    _sub(author, "name", sender, ATOM_NS)
    link = _sub(feed, "link", None, ATOM_NS)
    _set(link, "rel", "self")
    _set(link, "href", f"{base}/cap.atom")
    for a in feed_alerts(alerts):
        v = version(a, versions, now, sender=sender)
        entry = _sub(feed, "entry", None, ATOM_NS)
        _sub(entry, "id", f"urn:sot-punkt:{identifier(sender, a, v.n)}", ATOM_NS)
        t_sv, t_en = texts.title(a.rule)
        where = a.data.get("site_name") or a.site or a.municipality
        _sub(entry, "title", f"{t_sv} / {t_en}: {where}", ATOM_NS)
        _sub(entry, "updated", datetime.fromtimestamp(int(v.sent), UTC).isoformat(), ATOM_NS)
        alt = _sub(entry, "link", None, ATOM_NS)
        _set(alt, "rel", "alternate")
        _set(alt, "type", CAP_TYPE)
        _set(alt, "href", f"{base}/cap/{a.id}.xml")
        _sub(entry, "summary", a.sv, ATOM_NS)
        content = _sub(entry, "content", None, ATOM_NS)
        _set(content, "type", CAP_TYPE)
        content.append(cap_alert(a, sender=sender, base_url=base_url, version=v))
    for o in official if official_versions is not None else ():
        assert official_versions is not None
        v = official_version(o, official_versions, now, sender=sender)
        cid = str(o["crisis_id"])
        entry = _sub(feed, "entry", None, ATOM_NS)
        _sub(entry, "id", f"urn:sot-punkt:{official_identifier(sender, cid, v.n)}", ATOM_NS)
        first: Mapping[str, Any] = next(iter(o["alert"].get("texts") or ()), {})
        origin = o["alert"].get("origin") or ""
        headline = first.get("headline") or first.get("event") or ""
        _sub(entry, "title", f"{origin}: {headline}", ATOM_NS)
        _sub(entry, "updated", datetime.fromtimestamp(int(v.sent), UTC).isoformat(), ATOM_NS)
        alt = _sub(entry, "link", None, ATOM_NS)
        _set(alt, "rel", "alternate")
        _set(alt, "type", CAP_TYPE)
        _set(alt, "href", f"{base}/cap/official/{cid}.xml")
        _sub(entry, "summary", headline, ATOM_NS)
        content = _sub(entry, "content", None, ATOM_NS)
        _set(content, "type", CAP_TYPE)
        content.append(official_alert(o, sender=sender, base_url=base_url, version=v))
    return ET.tostring(feed, encoding="unicode", xml_declaration=True)
