"""grid_cell's domain over bounded coordinates: every id the engine computes lies within its bounds, and the
cells it can reach number no more than its ``distinct`` (the cost model bounds a group-by on cells by it), yet
not many more than are really reachable (a bound that is useful, not only sound)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from saferoom.engine import ArrowEngine, plan
from saferoom.engine.functions import Domain, expr_domain
from tests.support_functions import outside

BOXES = [
    (24.3, 24.95, 117.8, 118.45),  # the generated city's declared bounds (Xiamen)
    (-0.4, 0.3, -0.2, 0.25),  # across the equator and the meridian
    (-33.95, -33.7, 150.9, 151.3),  # south and east
    (64.0, 64.2, -22.1, -21.7),  # far north, west
    (89.5, 90.0, -180.0, 180.0),  # the pole: cosines near zero
]


def _cells(box: tuple[float, float, float, float], meters: int) -> tuple[pa.Array, Domain]:
    lat0, lat1, lon0, lon1 = box
    # Points on a lattice finer than a cell (a quarter of one) and the box's own edges: every reachable cell.
    steps_lat = min(2000, int((lat1 - lat0) * 110_574 / meters * 4) + 2)
    steps_lon = min(2000, int((lon1 - lon0) * 111_320 / meters * 4) + 2)
    lats, lons = np.meshgrid(np.linspace(lat0, lat1, steps_lat), np.linspace(lon0, lon1, steps_lon))
    table = pa.table({"lat": lats.ravel(), "lon": lons.ravel()})
    expr = plan.Call("grid_cell", (plan.Col("lat"), plan.Col("lon"), plan.Lit(meters)))
    node = plan.Project(plan.Input("t", (("lat", "float64"), ("lon", "float64"))), (("cell", expr),))
    out = ArrowEngine(lambda _: pa.table({}), {"t": table}).execute(node).table.column("cell")
    domains = {c: Domain("float64", lo, hi, null=False) for c, lo, hi in (("lat", lat0, lat1), ("lon", lon0, lon1))}
    return out.combine_chunks(), expr_domain(expr, domains)


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("meters", [100, 500, 5000])
def test_grid_cells_stay_within_their_domain(box: tuple[float, float, float, float], meters: int) -> None:
    cells, domain = _cells(box, meters)
    assert domain.distinct is not None and domain.lower is not None and domain.upper is not None
    found = set(cells.to_pylist())
    assert None not in found
    for value in found:
        assert outside(value, domain) is None, (value, domain)
    assert len(found) <= domain.distinct
    if len(found) > 1000:  # a useful bound: the slack is a cell on each side, and the cosine's spread
        assert domain.distinct <= 1.5 * len(found) + 4 * int(np.sqrt(len(found))) + 16, (domain.distinct, len(found))


def test_unbounded_coordinates_claim_nothing() -> None:
    expr = plan.Call("grid_cell", (plan.Col("lat"), plan.Col("lon"), plan.Lit(500)))
    huge = 1.7976931348623157e308
    lats = [Domain("float64", None, None), Domain("float64", 0.0, 1.0, nan=True), Domain("float64", 0, 1e300)]
    lats += [Domain("float64", huge, huge, null=False), Domain("float64", -huge, -huge, null=False)]
    lons = [Domain("float64", 0.0, 1.0, null=False), Domain("float64", -huge, huge, null=False)]
    for lat, lon in [(lat, lons[0]) for lat in lats] + [(lats[1], lons[1]), (Domain("float64", 0.0, 1.0), lons[1])]:
        domain = expr_domain(expr, {"lat": lat, "lon": lon})
        assert domain.distinct is None and domain.interval is None and domain.null
