"""Where an official alert applies (gateway/feeds/geo.py): geocodes, Krisinformation names,
polygons and circles against the demo sites, and point-in-polygon checked by properties."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from feeds_fixtures import demo_sites, fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.feeds import (
    applies,
    haversine_km,
    in_filter,
    parse_cap,
    parse_krisinformation,
    point_in_polygon,
)
from gateway.feeds.model import Area, Circle


def where(alert) -> set[str]:
    return {sid for sid, s in demo_sites().items() if applies(alert, s)}


def test_demo_sites_have_their_codes() -> None:
    sites = demo_sites()
    assert {s.id: (s.county, s.municipality_code) for s in sites.values()} == {
        "are-kall": ("23", "2321"), "harjedalen-hede": ("23", "2361"),
        "krokom-follinge": ("23", "2309")}


def test_vma_for_are_kommun_reaches_kall_only() -> None:
    assert where(parse_cap(fixture("vma-are-actual.xml"))) == {"are-kall"}


def test_polygon_covers_kall_not_hede() -> None:
    a = parse_cap(fixture("cap-polygon-kall.xml"))
    assert where(a) == {"are-kall"}
    sites = demo_sites()
    kall, hede = sites["are-kall"], sites["harjedalen-hede"]
    assert (round(kall.lat, 2), round(kall.lon, 2)) == (63.47, 13.25)
    assert (round(hede.lat, 2), round(hede.lon, 2)) == (62.42, 13.5)


def test_circle_around_hede() -> None:
    assert where(parse_cap(fixture("cap-circle-hede.xml"))) == {"harjedalen-hede"}


def test_county_geocode_reaches_every_site_in_jamtland() -> None:
    doc = fixture("vma-are-actual.xml").replace(
        b"<valueName>Kommun</valueName><value>2321</value>",
        b"<valueName>L\xc3\xa4n</valueName><value>23</value>")
    assert where(parse_cap(doc)) == set(demo_sites())
    other = doc.replace(b"<value>23</value>", b"<value>12</value>")
    assert where(parse_cap(other)) == set()


def test_krisinformation_county_and_municipality() -> None:
    jmt, ska = parse_krisinformation(fixture("krisinformation-news.json")).alerts
    assert where(jmt) == set(demo_sites())
    assert where(ska) == set()
    vma = parse_krisinformation(fixture("krisinformation-vma.json")).alerts[0]
    assert where(vma) == {"are-kall"}
    # by the name alone (no geometry): "Åre kommun" is the municipality of Kall
    no_geom = replace(vma, areas=(replace(vma.areas[0], polygons=()),))
    assert where(no_geom) == {"are-kall"}


def test_site_without_codes_matches_by_geometry_only() -> None:
    kall = replace(demo_sites()["are-kall"], county=None, municipality_code=None,
                   municipality="")
    assert not applies(parse_cap(fixture("vma-are-actual.xml")), kall)
    assert applies(parse_cap(fixture("cap-polygon-kall.xml")), kall)


def test_feed_area_filter() -> None:
    vma = parse_cap(fixture("vma-are-actual.xml"))
    assert in_filter(vma, ["2321"]) and in_filter(vma, ["23"]) and in_filter(vma, [])
    assert not in_filter(vma, ["12"]) and not in_filter(vma, ["2361"])
    _, ska = parse_krisinformation(fixture("krisinformation-news.json")).alerts
    assert not in_filter(ska, ["23"]) and in_filter(ska, ["12"]) and in_filter(ska, ["1280"])
    assert in_filter(parse_cap(fixture("cap-polygon-kall.xml")), ["12"])  # geometry passes


def test_haversine_known_distance() -> None:
    # one degree of latitude is about 111.2 km
    assert haversine_km(63.0, 13.0, 64.0, 13.0) == pytest.approx(111.2, abs=0.2)
    assert haversine_km(62.42, 13.5, 62.42, 13.5) == 0


# --- properties of point-in-polygon -----------------------------------------------------------

lat = st.floats(min_value=-60, max_value=60, allow_nan=False)
lon = st.floats(min_value=-120, max_value=120, allow_nan=False)
size = st.floats(min_value=0.01, max_value=20, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(la=lat, lo=lon, h=size, w=size, pl=st.floats(0, 1), po=st.floats(0, 1),
       closed=st.booleans(), reverse=st.booleans())
def test_rectangle_matches_bounds(la, lo, h, w, pl, po, closed, reverse) -> None:
    """A point strictly within an axis-aligned box is inside, whatever the ring's direction and
    whether it is closed; one beyond it is outside."""
    ring = [(la, lo), (la + h, lo), (la + h, lo + w), (la, lo + w)]
    if reverse:
        ring.reverse()
    if closed:
        ring.append(ring[0])
    p_lat, p_lon = la + h * (0.001 + 0.998 * pl), lo + w * (0.001 + 0.998 * po)
    assert point_in_polygon(p_lat, p_lon, ring)
    assert not point_in_polygon(la + h * 1.5 + 0.1, p_lon, ring)
    assert not point_in_polygon(p_lat, lo - w * 0.5 - 0.1, ring)


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


@settings(max_examples=300, deadline=None)
@given(pts=st.lists(st.tuples(st.floats(-50, 50), st.floats(-50, 50)), min_size=4, max_size=4))
def test_triangle_agrees_with_the_sign_test(pts) -> None:
    """For a triangle, ray casting agrees with the orientation (cross product) test for any
    point not on or right next to an edge."""
    a, b, c, p = pts
    area2 = abs(_cross(a, b, c))
    if area2 < 1.0:
        return  # degenerate
    d1, d2, d3 = _cross(a, b, p), _cross(b, c, p), _cross(c, a, p)
    edges = [math.dist(a, b), math.dist(b, c), math.dist(c, a)]
    if min(abs(d1) / edges[0], abs(d2) / edges[1], abs(d3) / edges[2]) < 1e-6:
        return  # on an edge: either answer is right
    inside = (d1 > 0 and d2 > 0 and d3 > 0) or (d1 < 0 and d2 < 0 and d3 < 0)
    assert point_in_polygon(p[0], p[1], [a, b, c, a]) == inside


@settings(max_examples=200, deadline=None)
@given(la=st.floats(-80, 80), lo=st.floats(-179, 179), r=st.floats(0.1, 500),
       bearing=st.floats(0, 2 * math.pi), frac=st.floats(0, 0.99))
def test_circle_contains_points_within_radius(la, lo, r, bearing, frac) -> None:
    """A point at distance frac * r along any bearing is in the circle (spherical destination
    formula), and the circle is what an area with it applies to."""
    R = 6371.0088
    d = frac * r / R
    p1, l1 = math.radians(la), math.radians(lo)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(bearing))
    l2 = l1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    assert haversine_km(la, lo, math.degrees(p2), math.degrees(l2)) <= r + 1e-6

    @dataclass
    class P:
        lat: float
        lon: float
        municipality: str = ""
        county: str | None = None
        municipality_code: str | None = None

    from gateway.feeds.geo import area_applies

    assert area_applies(Area("c", circles=(Circle(la, lo, r),)),
                        P(math.degrees(p2), math.degrees(l2)))
