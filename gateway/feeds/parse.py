"""Parsing of the official sources: CAP 1.2 documents (and Atom/RSS feeds of them) and
Krisinformation's API v3 JSON, into `OfficialAlert`s. Pure functions of bytes; no I/O.

Everything here is untrusted input. XML is parsed with the standard library only after the
document has been checked: at most `max_bytes`, UTF-8, and no DOCTYPE or entity declaration at
all (CAP needs neither; refusing them rules out entity expansion and external entities). Every
refusal is a `FeedError` whose `reason` is one of `REASONS`, so the poller can count and log it
(docs/feeds.md, "Bad input").

The Swedish CAP profile used for VMA names the places in `<geocode>`s: valueName "Kommun" with
the municipality's four-digit code (SCB, e.g. 2321 Åre), "Län" with the county's two digits
(23 Jämtland), and "Sverige" (value 00) for the whole country. The names are matched without
regard to case, and also in their English forms ("municipality", "county"). Krisinformation
names counties and municipalities by name ("Jämtlands län", "Åre kommun") and may give a GeoJSON
geometry; both are turned into the same `Area`.
"""

from __future__ import annotations

import json
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .model import (
    CERTAINTIES,
    MSG_TYPES,
    SEVERITIES,
    STATUSES,
    URGENCIES,
    Area,
    Circle,
    OfficialAlert,
    Texts,
)

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
MAX_BYTES = 1024 * 1024  # a feed response or CAP document: VMAs are a few kB
MAX_FIELD = 8000  # characters of one text field; more is not an alert text
MAX_AREAS = 64
MAX_POINTS = 5000  # vertices of all polygons of one alert
MAX_ITEMS = 500  # entries of one feed response
STOCKHOLM = ZoneInfo("Europe/Stockholm")

REASONS = {
    "too_large": "larger than the size limit",
    "encoding": "not UTF-8",
    "doctype": "has a DOCTYPE or entity declaration",
    "xml": "not well-formed XML",
    "namespace": "not in the CAP 1.2 namespace",
    "not_cap": "neither a CAP alert nor an Atom/RSS feed",
    "json": "not valid JSON of the expected shape",
    "missing": "a required field is missing",
    "bad_value": "a field has a value outside the standard's list",
    "bad_time": "a time is not an ISO 8601 time with a zone",
    "bad_geometry": "a polygon or circle is malformed",
    "no_info": "no <info> block",
    "no_area": "says nowhere where it applies",
    "too_long": "a text is longer than any alert text",
    "timeout": "the feed did not answer in time",
    "http": "the feed answered with an HTTP error",
    "network": "the feed could not be reached",
    "too_many": "more entries than the limit",
    "foreign_link": "a feed entry links to a CAP document on another host",
}

COUNTIES = {
    "01": "Stockholms län", "03": "Uppsala län", "04": "Södermanlands län",
    "05": "Östergötlands län", "06": "Jönköpings län", "07": "Kronobergs län",
    "08": "Kalmar län", "09": "Gotlands län", "10": "Blekinge län", "12": "Skåne län",
    "13": "Hallands län", "14": "Västra Götalands län", "17": "Värmlands län",
    "18": "Örebro län", "19": "Västmanlands län", "20": "Dalarnas län",
    "21": "Gävleborgs län", "22": "Västernorrlands län", "23": "Jämtlands län",
    "24": "Västerbottens län", "25": "Norrbottens län",
}
_COUNTY_BY_NAME = {v.casefold(): k for k, v in COUNTIES.items()}
# also the bare names: "Jämtland" for "Jämtlands län", "Dalarna" for "Dalarnas län"
_COUNTY_BY_NAME |= {v.casefold().removesuffix(" län").removesuffix("s"): k
                    for k, v in COUNTIES.items()}
_MUNICIPALITY_NAMES = ("kommun", "kommunkod", "municipality", "municipalitycode")
_COUNTY_NAMES = ("län", "lan", "länskod", "lanskod", "county", "countycode")
_NATION_NAMES = ("sverige", "sweden", "land", "country")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u2028\u2029]")
_TAG = re.compile(r"<[^>]{0,200}>")


class FeedError(ValueError):
    """Input refused; `reason` is a key of REASONS, `detail` says where."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Parsed:
    """What one response held: alerts, links to CAP documents still to fetch (Atom/RSS entries
    that link rather than carry their CAP), and the entries refused (each a FeedError)."""

    alerts: list[OfficialAlert] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    errors: list[FeedError] = field(default_factory=list)


# --- XML safety -----------------------------------------------------------------------------


def safe_xml(data: bytes, max_bytes: int = MAX_BYTES) -> ET.Element:
    if len(data) > max_bytes:
        raise FeedError("too_large", f"{len(data)} bytes, at most {max_bytes}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FeedError("encoding") from None
    head = text.lstrip()[:200].lower()
    if head.startswith("<?xml") and "encoding" in head:
        m = re.search(r"encoding\s*=\s*[\"']([^\"']+)", head)
        if m and m.group(1).replace("_", "-") not in ("utf-8", "utf8", "us-ascii", "ascii"):
            raise FeedError("encoding", m.group(1))
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        raise FeedError("doctype")
    try:
        return ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as e:
        raise FeedError("xml", str(e)) from None


# --- small helpers --------------------------------------------------------------------------


def clean_text(value: str | None, what: str) -> str:
    """NFC, control characters (except newline) as spaces, trailing spaces trimmed per line."""
    if not value:
        return ""
    if len(value) > MAX_FIELD:
        raise FeedError("too_long", f"{what}: {len(value)} characters")
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", value.replace("\r\n", "\n")))
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def parse_time(value: str | None, what: str, *, naive_zone: ZoneInfo | None = None) -> float:
    if not value:
        raise FeedError("missing", what)
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FeedError("bad_time", f"{what}: {value[:40]!r}") from None
    if t.tzinfo is None:
        if naive_zone is None:
            raise FeedError("bad_time", f"{what}: no time zone in {value[:40]!r}")
        t = t.replace(tzinfo=naive_zone)
    return t.timestamp()


def _choice(value: str | None, allowed: tuple[str, ...], what: str) -> str:
    if value is None or value.strip() not in allowed:
        raise FeedError("bad_value" if value else "missing", f"{what}: {value!r}")
    return value.strip()


def _lang(language: str) -> str:
    return language.strip().lower().split("-")[0].split("_")[0]


def geocode_area(description: str, geocodes: list[tuple[str, str]], polygons: list[Any],
                 circles: list[Circle]) -> Area:
    """An Area from geocodes as the Swedish profile writes them (module docstring)."""
    munis: list[str] = []
    counties: list[str] = []
    nation = False
    for name, value in geocodes:
        n = name.strip().casefold().replace(" ", "").replace("-", "")
        v = value.strip()
        if n in _MUNICIPALITY_NAMES and re.fullmatch(r"\d{4}", v):
            munis.append(v)
        elif n in _COUNTY_NAMES and re.fullmatch(r"\d{2}", v):
            if v == "00":
                nation = True
            else:
                counties.append(v)
        elif n in _NATION_NAMES:
            nation = True
    return Area(description=description, municipalities=tuple(munis), counties=tuple(counties),
                nationwide=nation, polygons=tuple(polygons), circles=tuple(circles),
                geocodes=tuple(geocodes))


def _polygon(text: str) -> tuple[tuple[float, float], ...]:
    """CAP polygon: "lat,lon lat,lon ...", at least 4 pairs, first = last (a closed ring)."""
    pts = []
    for pair in text.split():
        try:
            lat_s, lon_s = pair.split(",")
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise FeedError("bad_geometry", f"polygon point {pair[:40]!r}") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise FeedError("bad_geometry", f"polygon point {pair[:40]!r} out of range")
        pts.append((lat, lon))
    if len(pts) < 4 or pts[0] != pts[-1]:
        raise FeedError("bad_geometry", "a polygon needs at least 4 points, the last = the first")
    return tuple(pts)


def _circle(text: str) -> Circle:
    """CAP circle: "lat,lon radius" with the radius in km."""
    try:
        centre, radius = text.split()
        lat_s, lon_s = centre.split(",")
        c = Circle(float(lat_s), float(lon_s), float(radius))
    except ValueError:
        raise FeedError("bad_geometry", f"circle {text[:60]!r}") from None
    if not (-90 <= c.lat <= 90 and -180 <= c.lon <= 180 and 0 <= c.radius_km <= 20000):
        raise FeedError("bad_geometry", f"circle {text[:60]!r} out of range")
    return c


# --- CAP 1.2 --------------------------------------------------------------------------------


def _t(parent: ET.Element, tag: str) -> str | None:
    el = parent.find(f"{{{CAP_NS}}}{tag}")
    return el.text if el is not None and el.text is not None else None


def _all(parent: ET.Element, tag: str) -> list[ET.Element]:
    return parent.findall(f"{{{CAP_NS}}}{tag}")


def parse_cap_element(root: ET.Element, *, feed: str = "") -> OfficialAlert:
    if root.tag != f"{{{CAP_NS}}}alert":
        if root.tag.endswith("}alert") or root.tag == "alert":
            raise FeedError("namespace", root.tag[:80])
        raise FeedError("not_cap", root.tag[:80])
    identifier = (_t(root, "identifier") or "").strip()
    sender = (_t(root, "sender") or "").strip()
    if not identifier or not sender:
        raise FeedError("missing", "identifier and sender")
    if len(identifier) > 200 or len(sender) > 200:
        raise FeedError("too_long", "identifier or sender")
    sent = parse_time(_t(root, "sent"), "sent")
    status = _choice(_t(root, "status"), STATUSES, "status")
    msg_type = _choice(_t(root, "msgType"), MSG_TYPES, "msgType")
    scope = (_t(root, "scope") or "Public").strip()
    refs: list[tuple[str, str]] = []
    for triple in (_t(root, "references") or "").split():
        parts = triple.split(",")
        if len(parts) != 3:
            raise FeedError("bad_value", f"references: {triple[:80]!r}")
        refs.append((parts[0], parts[1]))
    if msg_type in ("Update", "Cancel") and not refs:
        raise FeedError("missing", f"references of a {msg_type}")
    infos = _all(root, "info")
    if not infos and msg_type not in ("Cancel", "Ack", "Error"):
        raise FeedError("no_info")
    texts: dict[str, Texts] = {}
    first: Texts | None = None
    areas: list[Area] = []
    expiries: list[float | None] = []
    primary: ET.Element | None = None
    origin = ""
    categories: list[str] = []
    web = ""
    points = 0
    for info in infos:
        language = (_t(info, "language") or "en-US").strip()  # CAP 1.2: en-US when absent
        tx = Texts(language=language,
                   headline=clean_text(_t(info, "headline"), "headline"),
                   description=clean_text(_t(info, "description"), "description"),
                   instruction=clean_text(_t(info, "instruction"), "instruction"),
                   event=clean_text(_t(info, "event"), "event"))
        lang = _lang(language)
        if lang in ("sv", "en") and lang not in texts:
            texts[lang] = tx
            if lang == "sv" or primary is None:
                primary = info
        first = first or tx
        origin = origin or clean_text(_t(info, "senderName"), "senderName")
        web = web or (_t(info, "web") or "").strip()[:500]
        categories += [c.text.strip() for c in _all(info, "category")
                       if c.text and c.text.strip() not in categories]
        exp = _t(info, "expires")
        expiries.append(parse_time(exp, "expires") if exp else None)
        for a in _all(info, "area"):
            polys = [_polygon(p.text or "") for p in _all(a, "polygon")]
            points += sum(len(p) for p in polys)
            circles = [_circle(c.text or "") for c in _all(a, "circle")]
            geos = [((_t(g, "valueName") or ""), (_t(g, "value") or ""))
                    for g in _all(a, "geocode")]
            areas.append(geocode_area(clean_text(_t(a, "areaDesc"), "areaDesc"), geos, polys,
                                      circles))
    if len(areas) > MAX_AREAS or points > MAX_POINTS:
        raise FeedError("too_many", f"{len(areas)} areas, {points} polygon points")
    if primary is None and infos:
        primary = infos[0]
    if msg_type in ("Alert", "Update") and not any(a.targeted() for a in areas):
        raise FeedError("no_area", identifier[:80])
    if primary is not None:
        severity = _choice(_t(primary, "severity"), SEVERITIES, "severity")
        urgency = _choice(_t(primary, "urgency"), URGENCIES, "urgency")
        certainty = _choice(_t(primary, "certainty"), CERTAINTIES, "certainty")
    else:
        severity, urgency, certainty = "Unknown", "Unknown", "Unknown"
    sv = texts.get("sv")
    en = texts.get("en")
    if sv is None and en is None and first is not None:
        sv = first  # neither language: shown as the message's own text, in its place
    expires = None if not expiries or None in expiries else max(e for e in expiries if e)
    return OfficialAlert(
        id=f"cap:{sender} {identifier}", source="cap", identifier=identifier, sender=sender,
        status=status, msg_type=msg_type, sent=sent, expires=expires, severity=severity,
        urgency=urgency, certainty=certainty, sv=sv, en=en, areas=tuple(areas),
        origin=origin or sender, references=tuple(refs), scope=scope,
        category=tuple(categories), feed=feed, web=web)


def parse_cap(data: bytes, *, feed: str = "", max_bytes: int = MAX_BYTES) -> OfficialAlert:
    return parse_cap_element(safe_xml(data, max_bytes), feed=feed)


def parse_cap_feed(data: bytes, *, feed: str = "", max_bytes: int = MAX_BYTES) -> Parsed:
    """A CAP document, or an Atom (RFC 4287) or RSS 2.0 feed whose entries carry a CAP alert
    in their content or link to one. A response that is not such a document at all (too large,
    not XML, a DOCTYPE, the wrong namespace) raises FeedError; a CAP alert that is refused (no
    area, a bad value) is listed in `errors`, and the other entries of a feed are kept."""
    root = safe_xml(data, max_bytes)
    out = Parsed()
    if root.tag == f"{{{ATOM_NS}}}feed":
        entries = root.findall(f"{{{ATOM_NS}}}entry")
        if len(entries) > MAX_ITEMS:
            raise FeedError("too_many", f"{len(entries)} entries")
        for entry in entries:
            _feed_entry(out, entry, feed, _atom_links(entry))
        return out
    if root.tag == "rss":
        items = root.findall("channel/item")
        if len(items) > MAX_ITEMS:
            raise FeedError("too_many", f"{len(items)} items")
        for item in items:
            links = [e.get("url", "") for e in item.findall("enclosure")]
            link = item.findtext("link")
            _feed_entry(out, item, feed, [u for u in links + [link or ""] if u.strip()])
        return out
    if root.tag != f"{{{CAP_NS}}}alert":
        parse_cap_element(root, feed=feed)  # raises: the reason (namespace, not_cap)
    try:
        out.alerts.append(parse_cap_element(root, feed=feed))
    except FeedError as e:
        out.errors.append(e)  # a CAP document, but not one to show: refused, the feed is fine
    return out


def _atom_links(entry: ET.Element) -> list[str]:
    links = []
    for ln in entry.findall(f"{{{ATOM_NS}}}link"):
        href = (ln.get("href") or "").strip()
        if href and ln.get("rel", "alternate") in ("alternate", "enclosure", "related"):
            if "cap" in (ln.get("type") or "").lower() or ln.get("type") is None:
                links.append(href)
    return links


def _feed_entry(out: Parsed, entry: ET.Element, feed: str, links: list[str]) -> None:
    inline = entry.find(f".//{{{CAP_NS}}}alert")
    if inline is None:
        other = [e for e in entry.iter() if e.tag.endswith("}alert") and e is not entry]
        if other:
            out.errors.append(FeedError("namespace", other[0].tag[:80]))
            return
    if inline is not None:
        try:
            out.alerts.append(parse_cap_element(inline, feed=feed))
        except FeedError as e:
            out.errors.append(e)
        return
    if links:
        out.links.append(links[0].strip())
    else:
        out.errors.append(FeedError("not_cap", "a feed entry with neither a CAP alert nor a link"))


# --- Krisinformation API v3 -----------------------------------------------------------------

KRIS_SENDER = "krisinformation.se"


def _is_vma(item: dict[str, Any]) -> bool:
    words = " ".join(str(item.get(k) or "") for k in ("Event", "Headline", "PushMessage"))
    return "VMA" in words or "viktigt meddelande till allmänheten" in words.casefold()


def _kris_area(raw: Any) -> Area:
    if not isinstance(raw, dict):
        raise FeedError("json", "an Area entry is not an object")
    kind = str(raw.get("Type") or "").strip().casefold()
    desc = clean_text(str(raw.get("Description") or ""), "Area.Description")
    counties: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    nation = False
    if kind == "county":
        code = _COUNTY_BY_NAME.get(desc.casefold())
        counties = (code,) if code else ()
    elif kind == "municipality":
        name = re.sub(r"\s+(kommun|stad)$", "", desc, flags=re.IGNORECASE).strip()
        names = (name,) if name else ()
    elif kind == "country" and desc.casefold() in ("sverige", "sweden"):
        nation = True
    polys = _geojson_polygons((raw.get("GeometryInformation") or {}).get("Geometry")
                              if isinstance(raw.get("GeometryInformation"), dict) else None)
    return Area(description=desc, counties=counties, municipality_names=names,
                nationwide=nation, polygons=polys)


def _geojson_polygons(geom: Any) -> tuple[tuple[tuple[float, float], ...], ...]:
    """The outer rings of a GeoJSON Polygon or MultiPolygon ([lon, lat] pairs) as (lat, lon)."""
    if not isinstance(geom, dict):
        return ()
    kind, coords = geom.get("type"), geom.get("coordinates")
    polys = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
    if not isinstance(polys, list):
        return ()
    out = []
    for poly in polys:
        try:
            ring = tuple((float(p[1]), float(p[0])) for p in poly[0])
        except (TypeError, ValueError, IndexError, KeyError):
            raise FeedError("bad_geometry", "GeoJSON polygon") from None
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise FeedError("bad_geometry", "GeoJSON ring not closed")
        out.append(ring)
    return tuple(out)


def parse_kris_item(item: Any, *, feed: str = "", max_age_s: float = 86400) -> OfficialAlert:
    """One Krisinformation v3 item (news or VMA). It has no severity, urgency or expiry of its
    own: a VMA (its Event or texts say VMA) counts as Severe/Immediate/Observed, any other item
    as Minor/Unknown, information; it stays `max_age_s` after its last update (docs/feeds.md)."""
    if not isinstance(item, dict):
        raise FeedError("json", "an item is not an object")
    identifier = str(item.get("Identifier") or "").strip()
    if not identifier:
        raise FeedError("missing", "Identifier")
    if len(identifier) > 200:
        raise FeedError("too_long", "Identifier")
    published = item.get("Published")
    sent = parse_time(str(item.get("Updated") or published or ""), "Updated",
                      naive_zone=STOCKHOLM)
    language = str(item.get("Language") or "sv").strip() or "sv"
    headline = clean_text(str(item.get("Headline") or item.get("PushMessage") or ""), "Headline")
    body = str(item.get("BodyText") or "")
    if "<" in body:
        body = _TAG.sub(" ", body)
    description = "\n\n".join(t for t in (clean_text(str(item.get("Preamble") or ""), "Preamble"),
                                          clean_text(body, "BodyText")) if t)
    tx = Texts(language=language, headline=headline, description=description,
               event=clean_text(str(item.get("Event") or ""), "Event"))
    raw_areas = item.get("Area") or []
    if not isinstance(raw_areas, list):
        raise FeedError("json", "Area is not a list")
    if len(raw_areas) > MAX_AREAS:
        raise FeedError("too_many", f"{len(raw_areas)} areas")
    areas = tuple(_kris_area(a) for a in raw_areas)
    if not any(a.targeted() for a in areas):
        raise FeedError("no_area", identifier[:80])
    vma = _is_vma(item)
    is_en = _lang(language) == "en"
    return OfficialAlert(
        id=f"krisinformation:{identifier}", source="krisinformation", identifier=identifier,
        sender=KRIS_SENDER, status="Test" if item.get("IsTest") is True else "Actual",
        msg_type="Alert", sent=sent, expires=sent + max_age_s,
        severity="Severe" if vma else "Minor", urgency="Immediate" if vma else "Unknown",
        certainty="Observed" if vma else "Unknown", sv=None if is_en else tx,
        en=tx if is_en else None, areas=areas,
        origin=clean_text(str(item.get("SenderName") or ""), "SenderName") or "Krisinformation",
        feed=feed, web=str(item.get("Web") or "")[:500])


def parse_krisinformation(data: bytes, *, feed: str = "", max_bytes: int = MAX_BYTES,
                          max_age_s: float = 86400) -> Parsed:
    """A v3 response: a JSON list of items (a single item object is taken as a list of one)."""
    if len(data) > max_bytes:
        raise FeedError("too_large", f"{len(data)} bytes, at most {max_bytes}")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise FeedError("encoding") from None
    except ValueError as e:
        raise FeedError("json", str(e)[:80]) from None
    items = [doc] if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise FeedError("json", "neither a list nor an object")
    if len(items) > MAX_ITEMS:
        raise FeedError("too_many", f"{len(items)} items")
    out = Parsed()
    for item in items:
        try:
            out.alerts.append(parse_kris_item(item, feed=feed, max_age_s=max_age_s))
        except FeedError as e:
            out.errors.append(e)
    return out
