"""The generated city's public geography: its bounding box and the outlines of its six districts.

Nothing here comes from personal data. The outlines are the Voronoi cells of the published district centres
(``generate.DISTRICTS``), clipped to the city's published bounds (``generate.LAT`` / ``generate.LON``), with
distances measured on a local equirectangular projection: a plausible, public partition of the city that maps
(the web console's choropleth and site-selection map) can draw without a tile server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from saferoom.catalog.generate import DISTRICTS, LAT, LON

__all__ = ["CITY_BOUNDS", "DistrictOutline", "district_outlines"]

# (south, west, north, east) in degrees.
CITY_BOUNDS = (LAT[0], LON[0], LAT[1], LON[1])
_KX = math.cos(math.radians((LAT[0] + LAT[1]) / 2))  # a degree of longitude, in degrees of latitude

Point = tuple[float, float]  # (lat, lon)


@dataclass(frozen=True)
class DistrictOutline:
    """One district: its name, its published centre and its outline (a closed ring of (lat, lon) vertices)."""

    name: str
    centre: Point
    ring: tuple[Point, ...]


def _clip(ring: list[tuple[float, float]], a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
    """The part of a convex polygon (x, y) nearer to ``a`` than to ``b`` (one Sutherland-Hodgman step)."""
    nx, ny = b[0] - a[0], b[1] - a[1]
    mid = (a[0] + b[0]) / 2 * nx + (a[1] + b[1]) / 2 * ny

    def side(p: tuple[float, float]) -> float:
        return mid - (p[0] * nx + p[1] * ny)  # >= 0: on a's side

    out: list[tuple[float, float]] = []
    for i, p in enumerate(ring):
        q = ring[(i + 1) % len(ring)]
        sp, sq = side(p), side(q)
        if sp >= 0:
            out.append(p)
        if (sp >= 0) != (sq >= 0):
            t = sp / (sp - sq)
            out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
    return out


def district_outlines() -> tuple[DistrictOutline, ...]:
    """Every district's outline, in the order of ``generate.DISTRICTS``."""
    box = [(LON[0] * _KX, LAT[0]), (LON[1] * _KX, LAT[0]), (LON[1] * _KX, LAT[1]), (LON[0] * _KX, LAT[1])]
    centres = [(d.lon * _KX, d.lat) for d in DISTRICTS]
    outlines = []
    for i, district in enumerate(DISTRICTS):
        ring = list(box)
        for j, other in enumerate(centres):
            if j != i:
                ring = _clip(ring, centres[i], other)
        outlines.append(
            DistrictOutline(
                district.name,
                (district.lat, district.lon),
                tuple((round(y, 5), round(x / _KX, 5)) for x, y in ring),
            )
        )
    return tuple(outlines)
