"""Active alerts as CAP 1.2 documents and as an Atom feed of them, for other crisis systems.

    GET /cap.atom          Atom feed (RFC 4287), one entry per active alert, each carrying its
                           CAP document inline (content type application/cap+xml)
    GET /cap/<id>.xml      one CAP document

CAP is OASIS Common Alerting Protocol 1.2. Element order follows the standard's schema (the
test validates every document against it). The mapping:

    status Actual, msgType Alert, scope Public; identifier `<sender>.alert.<id>`
    info twice: language sv-SE first, en-GB second; category Infra; certainty Observed
    severity  critical -> Severe, warning -> Moderate, info -> Minor
    urgency   critical -> Immediate, warning -> Expected, info -> Future
    area      the site's name and municipality, a 1 km circle around its position (an incident:
              one area per site)
    note      who acknowledged it, if someone has

Members of a regional incident are left out: the incident carries their areas, as a coordinator
gets one message for them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime

from ..store import AlertRecord
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
    """What the feed shows: firing and acknowledged alerts that are not part of an incident."""
    return [a for a in alerts if a.status in ("firing", "acknowledged") and a.incident is None]


def identifier(sender: str, a: AlertRecord) -> str:
    return f"{sender}.alert.{a.id}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, ns: str = CAP_NS) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}")
    if text is not None:
        el.text = text
    return el


def cap_alert(a: AlertRecord, *, sender: str, base_url: str | None = None) -> ET.Element:
    root = ET.Element(f"{{{CAP_NS}}}alert")
    _sub(root, "identifier", identifier(sender, a))
    _sub(root, "sender", sender)
    _sub(root, "sent", cap_time(a.fired or a.started))
    _sub(root, "status", "Actual")
    _sub(root, "msgType", "Alert")
    _sub(root, "scope", "Public")
    if a.status == "acknowledged" and a.acked_by:
        _sub(root, "note", f"Kvitterat av / acknowledged by {a.acked_by}")
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
            muni = "kommun" if idx == 0 else "municipality"
            _sub(area, "areaDesc", f"{name}, {a.municipality} {muni}")
            if isinstance(point, list) and len(point) == 2 and all(
                    isinstance(x, int | float) for x in point):
                _sub(area, "circle", f"{point[0]:.5f},{point[1]:.5f} {RADIUS_KM:g}")
    return root


def cap_document(a: AlertRecord, *, sender: str, base_url: str | None = None) -> str:
    return ET.tostring(cap_alert(a, sender=sender, base_url=base_url), encoding="unicode",
                       xml_declaration=True)


def atom_feed(alerts: Sequence[AlertRecord], *, sender: str, now: float,
              base_url: str | None = None) -> str:
    base = (base_url or "").rstrip("/")
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _sub(feed, "id", f"urn:sot-punkt:{sender}:cap", ATOM_NS)
    _sub(feed, "title", "SOT-punkter: aktiva larm / active alerts", ATOM_NS)
    _sub(feed, "updated", datetime.fromtimestamp(int(now), UTC).isoformat(), ATOM_NS)
    author = _sub(feed, "author", None, ATOM_NS)
    _sub(author, "name", sender, ATOM_NS)
    link = _sub(feed, "link", None, ATOM_NS)
    link.set("rel", "self")
    link.set("href", f"{base}/cap.atom")
    for a in feed_alerts(alerts):
        entry = _sub(feed, "entry", None, ATOM_NS)
        _sub(entry, "id", f"urn:sot-punkt:{identifier(sender, a)}", ATOM_NS)
        t_sv, t_en = texts.title(a.rule)
        where = a.data.get("site_name") or a.site or a.municipality
        _sub(entry, "title", f"{t_sv} / {t_en}: {where}", ATOM_NS)
        changed = max(x for x in (a.fired, a.acked_at, a.started) if x is not None)
        _sub(entry, "updated", datetime.fromtimestamp(int(changed), UTC).isoformat(), ATOM_NS)
        alt = _sub(entry, "link", None, ATOM_NS)
        alt.set("rel", "alternate")
        alt.set("type", CAP_TYPE)
        alt.set("href", f"{base}/cap/{a.id}.xml")
        _sub(entry, "summary", a.sv, ATOM_NS)
        content = _sub(entry, "content", None, ATOM_NS)
        content.set("type", CAP_TYPE)
        content.append(cap_alert(a, sender=sender, base_url=base_url))
    return ET.tostring(feed, encoding="unicode", xml_declaration=True)
