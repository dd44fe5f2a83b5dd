"""Charts and maps as SVG made here, on the console's side: bar charts (with the 95% noise interval of a
differentially private value drawn as a whisker), histograms, a choropleth of the districts and the
site-selection candidates on a map of the city.

Everything drawn comes from a released output and from public geography (``saferoom.catalog.geography``);
every piece of text is escaped (output names and labels are chosen by researcher code: hostile).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
from markupsafe import Markup, escape

from saferoom.catalog.geography import CITY_BOUNDS, district_outlines

__all__ = ["Chart", "bar_chart", "charts_for", "choropleth", "histogram", "site_map"]

MAX_BARS = 40
_WIDTH = 640
_KX = math.cos(math.radians((CITY_BOUNDS[0] + CITY_BOUNDS[2]) / 2))
_MAP_H = _WIDTH * (CITY_BOUNDS[2] - CITY_BOUNDS[0]) / ((CITY_BOUNDS[3] - CITY_BOUNDS[1]) * _KX)
# A colour-blind-safe sequential ramp (light to dark), for choropleth classes and map markers.
_RAMP = ("#eff3ff", "#bdd7e7", "#6baed6", "#3182bd", "#08519c")


@dataclass(frozen=True)
class Chart:
    """One drawn figure: what it shows (a caption for screen readers too) and its SVG."""

    kind: str  # bar | histogram | choropleth | map
    title: str
    svg: Markup


def _num(value: float) -> str:
    if value != value or math.isinf(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _svg(title: str, width: float, height: float, body: list[str]) -> Markup:
    t = escape(title)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{t}" class="chart"><title>{t}</title>' + "".join(body) + "</svg>"
    )


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], errors: Sequence[float] | None = None
) -> Chart:
    """Horizontal bars, one per label (long labels stay readable on a phone); ``errors``: a ± whisker each."""
    labels, values = list(labels)[:MAX_BARS], list(values)[:MAX_BARS]
    errs = list(errors or [0.0] * len(values))[: len(values)]
    top = max([v + e for v, e in zip(values, errs, strict=True)] + [0.0]) or 1.0
    left, bar_h, gap = 170, 18, 6
    span = _WIDTH - left - 80
    height = 30 + len(values) * (bar_h + gap)
    body = [f'<text x="0" y="16" class="chart-title">{escape(title)}</text>']
    for i, (label, value, err) in enumerate(zip(labels, values, errs, strict=True)):
        y = 28 + i * (bar_h + gap)
        w = max(0.0, value) / top * span
        body.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" class="label">{escape(label[:28])}</text>')
        body.append(
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" class="bar"><title>'
            f"{escape(label)}: {_num(value)}{f' ± {_num(err)}' if err else ''}</title></rect>"
        )
        if err:
            lo, hi = left + max(0.0, value - err) / top * span, left + (value + err) / top * span
            mid = y + bar_h / 2
            body.append(
                f'<path d="M{lo:.1f} {mid} H{hi:.1f} M{lo:.1f} {y + 3} V{y + bar_h - 3} M{hi:.1f} {y + 3} '
                f'V{y + bar_h - 3}" class="whisker"/>'
            )
        body.append(
            f'<text x="{left + w + 4 + (err / top * span if err else 0):.1f}" y="{y + 13}" class="value">'
            f"{_num(value)}{f' ± {_num(err)}' if err else ''}</text>"
        )
    return Chart("bar", title, _svg(title, _WIDTH, height, body))


def histogram(title: str, bins: Sequence[tuple[float, float]], width: float) -> Chart:
    """Adjacent vertical bars: ``bins`` are (lower edge, value), each ``width`` wide."""
    bins = sorted(bins)[:MAX_BARS]
    top = max([v for _, v in bins] + [0.0]) or 1.0
    left, base, height = 50, 210, 250
    n = max(1, len(bins))
    bw = (_WIDTH - left - 10) / n
    body = [
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
        f'<path d="M{left} 30 V{base} H{_WIDTH - 10}" class="axis"/>',
        f'<text x="{left - 4}" y="34" text-anchor="end" class="label">{_num(top)}</text>',
    ]
    for i, (edge, value) in enumerate(bins):
        h = max(0.0, value) / top * (base - 30)
        x = left + i * bw
        body.append(
            f'<rect x="{x + 1:.1f}" y="{base - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{_num(edge)} to {_num(edge + width)}: {_num(value)}</title></rect>"
        )
        body.append(
            f'<text x="{x + bw / 2:.1f}" y="{base + 16}" text-anchor="middle" class="label">{_num(edge)}</text>'
        )
    return Chart("histogram", title, _svg(title, _WIDTH, height, body))


Bounds = tuple[float, float, float, float]  # (south, west, north, east)


def _xy(lat: float, lon: float, bounds: Bounds = CITY_BOUNDS) -> tuple[float, float]:
    south, west, north, east = bounds
    return (lon - west) / (east - west) * _WIDTH, (north - lat) / (north - south) * _MAP_H


def _districts(fills: Mapping[str, str], bounds: Bounds = CITY_BOUNDS) -> list[str]:
    body = []
    for d in district_outlines():
        points = " ".join("{:.1f},{:.1f}".format(*_xy(lat, lon, bounds)) for lat, lon in d.ring)
        fill = fills.get(d.name, "#f4f4f4")
        body.append(
            f'<polygon points="{points}" fill="{fill}" class="district"><title>{escape(d.name)}</title></polygon>'
        )
        x, y = _xy(*d.centre, bounds)
        body.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" class="place">{escape(d.name)}</text>')
    return body


def choropleth(title: str, values: Mapping[str, float]) -> Chart:
    """The districts shaded by ``values`` (five equal classes from the smallest to the largest), with a legend."""
    known = {d.name for d in district_outlines()}
    shown = {k: v for k, v in values.items() if k in known and v == v}
    lo, hi = min(shown.values(), default=0.0), max(shown.values(), default=1.0)

    def klass(v: float) -> int:
        return 0 if hi == lo else min(4, int((v - lo) / (hi - lo) * 5))

    body = [f'<text x="4" y="16" class="chart-title">{escape(title)}</text>']
    body += _districts({k: _RAMP[klass(v)] for k, v in shown.items()})
    for i, colour in enumerate(_RAMP):
        edge = lo + (hi - lo) * i / 5
        body.append(
            f'<rect x="{4 + i * 70}" y="{_MAP_H + 8:.0f}" width="70" height="12" fill="{colour}" class="key"/>'
            f'<text x="{4 + i * 70}" y="{_MAP_H + 34:.0f}" class="label">{_num(edge)}</text>'
        )
    for name, v in sorted(shown.items()):
        body.append(f"<desc>{escape(name)}: {_num(v)}</desc>")
    return Chart("choropleth", title, _svg(title, _WIDTH, _MAP_H + 40, body))


def _around(points: Sequence[tuple[float, float, float, str]]) -> Bounds:
    """The part of the city around ``points`` (with a margin; at least a fifth of the city across), with the
    city's own aspect ratio so the districts keep their shape."""
    south, west, north, east = CITY_BOUNDS
    lats = [p[0] for p in points if p[0] == p[0]]
    lons = [p[1] for p in points if p[1] == p[1]]
    if not lats:
        return CITY_BOUNDS
    half = max((max(lats) - min(lats)) * 0.7, (max(lons) - min(lons)) * 0.7, (north - south) / 10)
    half = min(half, (north - south) / 2)
    lat = min(max((max(lats) + min(lats)) / 2, south + half), north - half)
    lon = min(max((max(lons) + min(lons)) / 2, west + half), east - half)
    return (lat - half, lon - half, lat + half, lon + half)


def site_map(title: str, points: Sequence[tuple[float, float, float, str]]) -> Chart:
    """Scored places (lat, lon, score, label) on the district map, zoomed to them: rank numbers, darker for
    higher scores."""
    bounds = _around(points)
    pale = {d.name: ("#f2f5ef", "#eef1f6", "#f6f1ec")[i % 3] for i, d in enumerate(district_outlines())}
    body = [*_districts(pale, bounds), f'<text x="4" y="16" class="chart-title">{escape(title)}</text>']
    scores = [p[2] for p in points if p[2] == p[2]]
    lo, hi = min(scores, default=0.0), max(scores, default=1.0)
    for rank, (lat, lon, score, label) in enumerate(points, start=1):
        if not (lat == lat and lon == lon):
            continue
        x, y = _xy(lat, lon, bounds)
        shade = _RAMP[2 if hi == lo else 1 + min(3, int((score - lo) / (hi - lo) * 4))]
        body.append(
            f'<g class="candidate"><circle cx="{x:.1f}" cy="{y:.1f}" r="11" fill="{shade}"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" class="rank">{rank}</text>'
            f"<title>#{rank} {escape(label)}: score {_num(score)} ({lat:.4f}, {lon:.4f})</title></g>"
        )
    km = (bounds[2] - bounds[0]) * 111.2
    body.append(
        f'<text x="{_WIDTH - 6}" y="{_MAP_H - 6:.0f}" text-anchor="end" class="label">'
        f"{km:.0f} km north to south; district outlines: public data</text>"
    )
    return Chart("map", title, _svg(title, _WIDTH, _MAP_H, body))


def _numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def _floats(column: pa.ChunkedArray) -> list[float]:
    return [float("nan") if v is None else float(v) for v in column.to_pylist()]


def charts_for(name: str, table: pa.Table, intervals: Mapping[str, float]) -> list[Chart]:
    """The figures that fit one released table (``intervals``: column -> ci95 half-width of its noise).

    lat + lon: a map; a district column: a choropleth and a bar chart; an integer band column: a histogram;
    otherwise text keys and a number: a bar chart."""
    cols = {n: table.schema.field(n).type for n in table.column_names if n != "cell_status"}
    numbers = [n for n, t in cols.items() if _numeric(t) and n not in ("lat", "lon", "cell")]
    if not numbers or table.num_rows == 0:
        return []
    charts: list[Chart] = []
    if "lat" in cols and "lon" in cols:
        score = "score" if "score" in cols else numbers[0]
        labels = [str(v) for v in table["cell"].to_pylist()] if "cell" in cols else [""] * table.num_rows
        points = list(zip(_floats(table["lat"]), _floats(table["lon"]), _floats(table[score]), labels, strict=True))
        charts.append(site_map(f"{name}: {score} by place", points[:MAX_BARS]))
        charts.append(
            bar_chart(
                f"{name}: {score}",
                [f"#{i + 1}" for i in range(len(points))],
                [p[2] for p in points],
                _errors(table, score, intervals),
            )
        )
        return charts
    keys = [n for n, t in cols.items() if _text(t) or n == "district"]
    value = numbers[-1] if keys else numbers[0]
    if "district" in keys:
        sums: dict[str, float] = {}
        for district, v in zip(table["district"].to_pylist(), _floats(table[value]), strict=True):
            if district is not None and v == v:
                sums[str(district)] = sums.get(str(district), 0.0) + v
        how = "" if len(keys) == 1 and table.num_rows == len(sums) else " (sum)"
        charts.append(choropleth(f"{name}: {value}{how} by district", sums))
    bands = [n for n, t in cols.items() if pa.types.is_integer(t) and n.endswith("band") and n != value]
    if bands:
        band = bands[0]
        edges = sorted({int(v) for v in table[band].to_pylist() if v is not None})
        width = min((b - a for a, b in itertools.pairwise(edges)), default=1) or 1
        totals: dict[float, float] = {}
        for edge, v in zip(_floats(table[band]), _floats(table[value]), strict=True):
            if edge == edge and v == v:
                totals[edge] = totals.get(edge, 0.0) + v
        charts.append(histogram(f"{name}: {value} by {band}", list(totals.items()), float(width)))
    if keys and table.num_rows <= MAX_BARS:
        labels = [" · ".join(str(table[k][i].as_py()) for k in keys) for i in range(table.num_rows)]
        charts.append(bar_chart(f"{name}: {value}", labels, _floats(table[value]), _errors(table, value, intervals)))
    return charts


def _errors(table: pa.Table, column: str, intervals: Mapping[str, float]) -> list[float] | None:
    ci = intervals.get(column)
    return [ci] * table.num_rows if ci else None
