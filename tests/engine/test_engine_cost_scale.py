"""The shipped algorithms are admitted at 10M persons under the default engine limits, with the exact rules and
with differential privacy: their worst cases, from the catalog alone, fit (no data is needed to decide it).

Site selection groups persons by grid cell: the cost model bounds those groups by the cells the clamped
coordinates can reach (``functions._d_grid``), not by the persons (which made its DP statistics up to
10M rows and refused it at 10M persons)."""

from __future__ import annotations

import pytest

from saferoom import disclosure
from saferoom.catalog.generate import _infos
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.engine import cost, plan
from saferoom.jobs.pipeline import to_limits
from tests.engine.test_engine_cost_memory import _algorithm

PERSONS = 10_000_000


@pytest.mark.parametrize("private", [False, True], ids=["exact", "dp"])
@pytest.mark.parametrize("name", ["site_selection", "population_profile"])
def test_shipped_algorithms_are_admitted_at_ten_million_persons(name: str, private: bool) -> None:
    infos = _infos(PERSONS, differential_privacy=private, output_checking=False)
    manifest = Manifest(name="xiamen-synthetic", datasets={i.name: i for i in infos}, seed=7, scale=PERSONS)
    assert manifest.dataset("population").rows == PERSONS
    caps = to_limits(ServerConfig.load(env={}).engine_limits, "data")
    protected = disclosure.protect(plan.share_subtrees(_algorithm(name, manifest)), manifest)  # as the pipeline does
    runs = cost.admit_job(protected, manifest, caps)  # raises LimitExceeded when refused
    assert runs
    if name == "site_selection":
        largest = max(f.rows for r in runs for k, f in r.roots.items())
        assert largest < PERSONS  # every output is bounded by the grid (cells, or cells x quantile bins)
