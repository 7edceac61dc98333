"""Where an official alert applies: geocodes, polygons and circles against a site's place.

A site is matched by its codes first (the Swedish CAP profile names municipalities and counties
by their SCB codes; config/sites/*.toml `county` and `municipality_code`), by name for
Krisinformation's municipality areas, and by its point (lat, lon) inside a polygon or circle.
No GIS server: a polygon is tested by ray casting on the (lon, lat) plane, which is exact enough
for the areas an alert names (tens of kilometres, never across the antimeridian or a pole), and a
circle by the great-circle (haversine) distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from .model import Area, Circle, OfficialAlert

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)


class Place(Protocol):
    """What applies() needs of a site (gateway.config.Site has it)."""

    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def municipality(self) -> str: ...
    @property
    def county(self) -> str | None: ...
    @property
    def municipality_code(self) -> str | None: ...


def point_in_polygon(lat: float, lon: float, ring: Sequence[tuple[float, float]]) -> bool:
    """Ray casting (even-odd rule). `ring` is (lat, lon) pairs; closed or not, both work.
    A point exactly on an edge may fall either way."""
    inside = False
    n = len(ring)
    if n < 3:
        return False
    j = n - 1
    for i in range(n):
        yi, xi = ring[i]
        yj, xj = ring[j]
        if (yi > lat) != (yj > lat):
            x_cross = xi + (lat - yi) * (xj - xi) / (yj - yi)
            if lon < x_cross:
                inside = not inside
        j = i
    return inside


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def in_circle(lat: float, lon: float, c: Circle) -> bool:
    return haversine_km(lat, lon, c.lat, c.lon) <= c.radius_km


def _norm(name: str) -> str:
    return " ".join(name.casefold().split())


def area_applies(area: Area, site: Place) -> bool:
    if area.nationwide:
        return True
    muni = site.municipality_code
    county = site.county or (muni[:2] if muni else None)
    if muni and muni in area.municipalities:
        return True
    if county and county in area.counties:
        return True
    if site.municipality and _norm(site.municipality) in {_norm(n) for n in
                                                          area.municipality_names}:
        return True
    if any(point_in_polygon(site.lat, site.lon, ring) for ring in area.polygons):
        return True
    return any(in_circle(site.lat, site.lon, c) for c in area.circles)


def applies(alert: OfficialAlert, site: Place) -> bool:
    """Whether the alert concerns the site: any of its areas matches (CAP 1.2: the areas of an
    info block are alternatives, their union is where it applies)."""
    return any(area_applies(a, site) for a in alert.areas)


def in_filter(alert: OfficialAlert, codes: Sequence[str]) -> bool:
    """A feed's optional area filter (county or municipality codes): keeps an alert that may
    concern one of them. Geometry passes (the per-site applies() decides), and so does a county
    alert for a filtered municipality in it or a municipality alert in a filtered county."""
    if not codes:
        return True
    for a in alert.areas:
        if a.nationwide or a.polygons or a.circles or a.municipality_names:
            return True
        for code in codes:
            if code in a.municipalities or code in a.counties:
                return True
            if len(code) == 4 and code[:2] in a.counties:
                return True
            if len(code) == 2 and any(m[:2] == code for m in a.municipalities):
                return True
    return False
