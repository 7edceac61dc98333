"""Parsing the official sources (gateway/feeds/parse.py): CAP 1.2 with the Swedish VMA profile,
Atom/RSS feeds of CAP, Krisinformation API v3 JSON, and every bad input refused with its
reason."""

from __future__ import annotations

import pytest
from feeds_fixtures import FIXTURES, fixture, oversized, ts

from gateway.feeds import FeedError, parse_cap, parse_cap_feed, parse_krisinformation
from gateway.feeds.parse import REASONS

GOOD_CAP = ["vma-are-actual.xml", "vma-are-test.xml", "vma-are-update.xml", "vma-are-cancel.xml",
            "vma-cancel-unknown.xml", "cap-polygon-kall.xml", "cap-circle-hede.xml"]


def test_vma_actual_for_are_kommun() -> None:
    a = parse_cap(fixture("vma-are-actual.xml"), feed="vma")
    assert a.id == "cap:vma@cap.example.se TEST-VMA-2026-1205-001"
    assert (a.source, a.status, a.msg_type, a.actual) == ("cap", "Actual", "Alert", True)
    assert a.sent == ts("2026-12-05T08:00:00+01:00")
    assert a.expires == ts("2026-12-05T20:00:00+01:00")
    assert (a.severity, a.urgency, a.certainty, a.level) == ("Severe", "Immediate", "Observed",
                                                             "severe")
    # Swedish first, English where present
    assert a.sv is not None and a.en is not None
    assert a.sv.headline == "VMA: Storm och långvarigt elavbrott i Åre kommun"
    assert a.sv.description.splitlines()[1] == "Elen kan vara borta i flera dygn."
    assert a.sv.instruction.startswith("Håll dig inomhus.")
    assert a.en.headline == "VMA: Storm and long power cut in Åre municipality"
    assert a.primary() is a.sv
    assert a.origin == "Räddningstjänsten Jämtland"
    assert a.feed == "vma"
    # the Swedish profile's geocode: valueName "Kommun", the SCB code
    assert {m for ar in a.areas for m in ar.municipalities} == {"2321"}
    assert a.areas[0].geocodes == (("Kommun", "2321"),)
    assert a.category == ("Met", "Infra")


def test_test_status_is_kept_but_not_actual() -> None:
    a = parse_cap(fixture("vma-are-test.xml"))
    assert a.status == "Test" and not a.actual


def test_update_and_cancel_reference_what_they_replace() -> None:
    up = parse_cap(fixture("vma-are-update.xml"))
    assert up.msg_type == "Update"
    assert up.references == (("vma@cap.example.se", "TEST-VMA-2026-1205-001"),)
    assert up.severity == "Extreme" and up.level == "severe"
    cancel = parse_cap(fixture("vma-are-cancel.xml"))
    assert cancel.msg_type == "Cancel"
    assert cancel.references == (("vma@cap.example.se", "TEST-VMA-2026-1205-002"),)


def test_polygon_and_circle() -> None:
    poly = parse_cap(fixture("cap-polygon-kall.xml"))
    ring = poly.areas[0].polygons[0]
    assert ring[0] == ring[-1] == (63.30, 12.90) and len(ring) == 5
    circle = parse_cap(fixture("cap-circle-hede.xml")).areas[0].circles[0]
    assert (circle.lat, circle.lon, circle.radius_km) == (62.42, 13.50, 15.0)


def test_county_and_nationwide_geocodes() -> None:
    doc = fixture("vma-are-actual.xml").replace(
        b"<valueName>Kommun</valueName><value>2321</value>",
        b"<valueName>L\xc3\xa4n</valueName><value>23</value></geocode>"
        b"<geocode><valueName>Sverige</valueName><value>00</value>")
    a = parse_cap(doc)
    assert a.areas[0].counties == ("23",) and a.areas[0].nationwide


@pytest.mark.parametrize("name", GOOD_CAP)
def test_fixtures_are_valid_cap_1_2(name: str) -> None:
    """The fixtures follow the standard: each validates against the OASIS CAP 1.2 XSD."""
    from test_notify_cap import cap_schema

    cap_schema().validate(str(FIXTURES / name))


def test_atom_feed_inline_and_linked() -> None:
    p = parse_cap_feed(fixture("atom-inline.xml"), feed="atom")
    assert [a.identifier for a in p.alerts] == ["TEST-CAP-POLY-001"]
    assert p.links == ["vma-are-actual.xml"]
    assert p.errors == []


def test_rss_feed_links() -> None:
    p = parse_cap_feed(fixture("rss-links.xml"))
    assert p.alerts == [] and p.links == ["vma-are-test.xml", "cap-circle-hede.xml"]


def test_single_document_through_the_feed_parser() -> None:
    p = parse_cap_feed(fixture("vma-are-actual.xml"))
    assert [a.identifier for a in p.alerts] == ["TEST-VMA-2026-1205-001"]


def test_krisinformation_news_county_by_name() -> None:
    p = parse_krisinformation(fixture("krisinformation-news.json"), feed="ki", max_age_s=3600)
    assert p.errors == []
    jmt, ska = p.alerts
    assert jmt.id == "krisinformation:TEST-KI-2026-1205-JMT"
    assert jmt.areas[0].counties == ("23",) and ska.areas[0].counties == ("12",)
    assert jmt.sent == ts("2026-12-05T09:15:00+01:00")  # Updated, not Published
    assert jmt.expires == jmt.sent + 3600
    assert jmt.sv is not None and jmt.en is None
    assert jmt.sv.headline == "Stormen ger elavbrott i Jämtlands län"
    # markup of BodyText is dropped: the panel and the signage show text
    assert "<p>" not in jmt.sv.description and "Elbolagen arbetar" in jmt.sv.description
    assert jmt.origin == "Länsstyrelsen Jämtlands län (exempel)"
    # news is information; a VMA is severe
    assert (jmt.severity, jmt.level) == ("Minor", "info")
    vma = parse_krisinformation(fixture("krisinformation-vma.json")).alerts[0]
    assert (vma.severity, vma.urgency, vma.level) == ("Severe", "Immediate", "severe")
    assert vma.areas[0].municipality_names == ("Åre",)
    assert vma.areas[0].polygons[0][0] == (63.0, 12.1)  # GeoJSON [lon, lat] turned round


def test_krisinformation_county_names() -> None:
    from gateway.feeds.parse import COUNTIES, _kris_area

    for code, name in COUNTIES.items():
        assert _kris_area({"Type": "County", "Description": name}).counties == (code,)
    bare = {"Jämtland": "23", "dalarna": "20", "Skåne": "12", "Kalmar": "08",
            "Västra Götaland": "14", "Stockholm": "01"}
    for name, code in bare.items():
        assert _kris_area({"Type": "County", "Description": name}).counties == (code,)
    assert _kris_area({"Type": "County", "Description": "Atlantis"}).counties == ()


def test_krisinformation_is_test_flag() -> None:
    doc = fixture("krisinformation-vma.json").replace(b'"IsTest": false', b'"IsTest": true')
    assert parse_krisinformation(doc).alerts[0].status == "Test"


@pytest.mark.parametrize(("name", "reason"), [
    ("broken.xml", "xml"),
    ("cap-wrong-namespace.xml", "namespace"),
    ("cap-no-area.xml", "no_area"),
    ("doctype.xml", "doctype"),
])
def test_bad_cap_refused_with_reason(name: str, reason: str) -> None:
    with pytest.raises(FeedError) as e:
        parse_cap(fixture(name))
    assert e.value.reason == reason and reason in REASONS
    try:
        p = parse_cap_feed(fixture(name))
    except FeedError as e2:
        assert e2.reason == reason and reason != "no_area"  # the response is not CAP at all
    else:  # a CAP document, refused: the feed itself works
        assert reason == "no_area" and p.alerts == [] and [x.reason for x in p.errors] == [reason]


def test_oversized_refused_before_parsing() -> None:
    with pytest.raises(FeedError) as e:
        parse_cap(oversized())
    assert e.value.reason == "too_large"
    with pytest.raises(FeedError) as e:
        parse_krisinformation(b"[" + b" " * (5 * 1024 * 1024) + b"]")
    assert e.value.reason == "too_large"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: d.replace(b"<status>Actual", b"<status>Real"), "bad_value"),
    (lambda d: d.replace(b"2026-12-05T08:00:00+01:00</sent>", b"2026-12-05T08:00:00</sent>"),
     "bad_time"),
    (lambda d: d.replace(b"<identifier>TEST-VMA-2026-1205-001</identifier>", b""), "missing"),
    (lambda d: d.replace(b"<severity>Severe</severity>", b"<severity>Huge</severity>", 1),
     "bad_value"),
    (lambda d: d.replace(b"UTF-8", b"ISO-8859-1"), "encoding"),
    (lambda d: d.replace("Åre".encode(), "Åre".encode("latin-1")), "encoding"),
    (lambda d: d.replace(b'<geocode><valueName>Kommun</valueName><value>2321</value></geocode>',
                         b"<polygon>63.3,12.9 63.6,13.6</polygon>"), "bad_geometry"),
])
def test_bad_values_refused(mutate, reason: str) -> None:
    with pytest.raises(FeedError) as e:
        parse_cap(mutate(fixture("vma-are-actual.xml")))
    assert e.value.reason == reason


def test_bad_entry_in_a_feed_keeps_the_others() -> None:
    atom = fixture("atom-inline.xml").replace(b"<status>Actual</status>",
                                              b"<status>Nope</status>")
    p = parse_cap_feed(atom)
    assert p.alerts == [] and [e.reason for e in p.errors] == ["bad_value"]
    assert p.links == ["vma-are-actual.xml"]
    ki = fixture("krisinformation-news.json").replace(b'"Description": "Sk\xc3\xa5ne l\xc3\xa4n"',
                                                      b'"Description": ""')
    p = parse_krisinformation(ki)
    assert [a.identifier for a in p.alerts] == ["TEST-KI-2026-1205-JMT"]
    assert [e.reason for e in p.errors] == ["no_area"]


@pytest.mark.parametrize("body", [b"{not json", b'"a string"', b"[1, 2]", b"\xff\xfe"])
def test_bad_krisinformation(body: bytes) -> None:
    try:
        p = parse_krisinformation(body)
    except FeedError as e:
        assert e.reason in ("json", "encoding")
    else:
        assert p.alerts == [] and {e.reason for e in p.errors} == {"json"}
