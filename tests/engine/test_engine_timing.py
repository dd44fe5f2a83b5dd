"""The time model (``engine.timing``): its structure, and the bound on a DP quantile's draws.

That a release of adversarial data stays within its padding is measured, not timed here:
``tests/redteam/test_redteam_quantile_timing.py`` (CPU time, with a wide margin) and ``bench/bench_time_model.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from saferoom import disclosure
from saferoom.catalog.generate import _infos
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.disclosure import dp
from saferoom.engine import cost, plan, timing
from saferoom.engine.plan import AggExpr, Call, Col, Lit
from saferoom.jobs.pipeline import to_limits
from tests.engine.test_engine_cost_memory import _algorithm

COUNT_N = (("n", AggExpr("count")),)


def _manifest(persons: int, private: bool) -> Manifest:
    infos = _infos(persons, differential_privacy=private, output_checking=False)
    return Manifest(name="x", datasets={i.name: i for i in infos}, seed=7, scale=persons)


def _facts(rows: int, width: int = 16) -> cost.Facts:
    return cost.Facts(rows, {"k": cost.Value("int64", 8), "x": cost.Value("float64", width - 8)})


NODES: list[plan.Node] = [
    plan.Scan("t", ("k", "x")),
    plan.Filter(plan.Scan("t", ("k",)), Call("lt", (Col("k"), Lit(3)))),
    plan.Project(plan.Scan("t", ("k",)), (("v", Call("cast_str", (Col("x"),))), ("k", Col("k")))),
    plan.Aggregate(plan.Scan("t", ("k",)), ("k",), (("n", AggExpr("count")), ("m", AggExpr("median", Col("x"))))),
    plan.Sort(plan.Scan("t", ("k",)), (("k", False),)),
    plan.Bound(plan.Scan("t", ("k",)), "k", 1),
    plan.Threshold(plan.Scan("t", ("k",)), "k", 5, "t"),
]


@pytest.mark.parametrize("node", NODES, ids=lambda n: type(n).__name__)
def test_a_node_costs_more_the_more_rows_it_reads_and_makes(node: plan.Node) -> None:
    seconds = [timing.node_seconds(node, [_facts(rows)], _facts(rows)) for rows in (10, 1_000, 100_000, 10**7)]
    assert seconds == sorted(seconds) and seconds[-1] > seconds[0]


def test_a_join_and_a_union_cost_more_with_either_side() -> None:
    join = plan.Join(plan.Scan("a", ("k",)), plan.Scan("b", ("k",)), ("k",))
    union = plan.Union((plan.Scan("a", ("k",)), plan.Scan("b", ("k",))))
    for node in (join, union):
        small = timing.node_seconds(node, [_facts(1_000), _facts(1_000)], _facts(1_000))
        assert small < timing.node_seconds(node, [_facts(10**6), _facts(1_000)], _facts(10**6))
        assert small < timing.node_seconds(node, [_facts(1_000), _facts(10**6)], _facts(10**6))


def test_a_group_by_into_more_groups_costs_more_per_row() -> None:
    node = NODES[3]
    few, many = (timing.node_seconds(node, [_facts(10**6)], _facts(groups)) for groups in (6, 10**6))
    assert many > 10 * few


@pytest.mark.parametrize("private", [False, True], ids=["exact", "dp"])
@pytest.mark.parametrize("name", ["population_profile", "site_selection"])
def test_the_shipped_algorithms_padding_grows_with_the_persons(name: str, private: bool) -> None:
    caps = to_limits(ServerConfig.load(env={}).engine_limits, "data")
    padded = []
    for persons in (10_000, 1_000_000, 10_000_000):
        m = _manifest(persons, private)
        runs = cost.admit_job(disclosure.protect(plan.share_subtrees(_algorithm(name, m)), m), m, caps)
        padded.append(cost.padded_seconds(runs))
    assert padded == sorted(padded) and padded[-1] > padded[0]


def _median_by_age(persons: int) -> dp.NoisyAggregate:
    node = plan.Aggregate(
        plan.Scan("population", ("person_id", "income", "age")), ("age",), (("m", AggExpr("median", Col("income"))),)
    )
    (agg,) = disclosure.protect({"out": node}, _manifest(persons, True))["out"].noisy.values()
    return agg


def test_a_dp_quantiles_release_work_grows_with_its_cells() -> None:
    agg = _median_by_age(10_000)
    seconds = [timing.noise_seconds(agg, cells) for cells in (0, 1, 100, 10_000)]
    assert seconds == sorted(seconds) and seconds[1] > 0
    draws = [timing.draws_seconds(cells, dp.QUANTILE_BINS + 1) for cells in (0, 1, 100, 10_000)]
    assert draws == sorted(draws) and draws[0] == 0 and draws[1] > 0


@pytest.mark.parametrize("candidates", [1, 2, 501])
def test_the_bound_on_tries_lies_between_the_average_and_every_candidate(candidates: int) -> None:
    for draws in (1, 2, 10, 1_000, 40_000, 10**7):
        tries = timing.draw_tries(draws, candidates)
        assert draws * (candidates + 1) / 2 <= tries <= draws * candidates
    assert timing.draw_tries(1, candidates) == candidates  # one draw: no averaging, every candidate
    assert timing.draw_tries(0, candidates) == 0


def test_many_draws_are_padded_near_half_the_candidates_each() -> None:
    ratios = [timing.draw_tries(d, 501) / (d * 501) for d in (100, 10_000, 1_000_000)]
    assert ratios == sorted(ratios, reverse=True)
    assert 0.5 < ratios[-1] < 0.51 and ratios[1] < 0.56


def test_the_bound_on_tries_holds_for_simulated_worst_case_draws() -> None:
    """Draws whose best candidate is far better than the others try exactly up to its position in a uniform
    random order: simulated, the sums of 2,000 sets of draws stay within the bound (whose tail is 2^-40), and
    reach past the plain average (the bound is not loose by construction)."""
    rng = np.random.default_rng(11)
    for draws in (1, 30, 1_000):
        sums = rng.integers(1, 502, size=(2_000, draws)).sum(axis=1)
        assert sums.max() <= timing.draw_tries(draws, 501)
        assert sums.max() > draws * 251


def _adversarial(agg: dp.NoisyAggregate, cells: int, persons: int, gap: int) -> tuple[pa.Table, pa.Table]:
    """Exact cells whose median candidate is far better than every other: ``gap`` persons on either side of it
    (each a whole scale of the noise), the rest far away, so that permute and flip tries candidates until it
    meets the best one (all of them at worst)."""
    half = persons // 2
    masses = ((100, half - gap), (249, gap), (250, gap), (400, half - gap))
    rows = [(cell, b, n) for cell in range(cells) for b, n in masses]
    keys, bins, counts = zip(*rows, strict=True)
    histogram = pa.table({"age": list(keys), "__bin": list(bins), "__n": list(counts)})
    exact = pa.table({"age": list(range(cells)), agg.count: [persons] * cells})
    return exact, histogram


def test_a_dp_quantile_pads_its_draws_by_the_cells_it_released() -> None:
    agg = _median_by_age(10_000)
    exact, histogram = _adversarial(agg, 40, 40_000, gap=50)
    (source,) = agg.histograms
    told: list[float] = []
    noised = dp.noise(agg, exact, {source: histogram}, 1.0, 1e-6, told.append)
    assert noised.table.num_rows == 40  # every cell released
    assert told == [dp.quantile_draws_seconds(0, 40)]  # once, before the draws, by the released cells (staged)


def test_admission_pads_the_differencing_by_every_pair_of_selections(
    catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differencing walks both sides' cells for every pair of selections: with more outputs over one dataset the
    rows it walks grow with the pairs, and the padding with them (made a second a row here to stand out)."""
    monkeypatch.setattr(timing, "DIFFERENCING_ROW_NS", 1e9 / timing.TIME_SAFETY)
    manifest = Manifest.load(catalog_dir)
    caps = to_limits(ServerConfig.load(env={}).engine_limits, "data")
    people = plan.Scan("population", ("person_id", "district", "sex", "age"))

    def padded(*keyings: tuple[str, ...]) -> tuple[float, int]:
        outputs = {"_".join(k): plan.Aggregate(people, k, (("n", AggExpr("count")),)) for k in keyings}
        protected = disclosure.protect(outputs, manifest)
        runs = cost.admit_job(protected, manifest, caps)
        return runs[-1].release_seconds, cost._compared_rows(protected, runs[-1].roots)

    two, two_rows = padded(("district",), ("sex",))
    four, four_rows = padded(("district",), ("sex",), ("age",), ("district", "sex"))
    assert 0 < two_rows < four_rows
    assert two >= two_rows and four >= four_rows  # a second a row
    assert four - two >= four_rows - two_rows


def test_admission_pads_a_table_laid_out_on_its_public_grid(catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table over public domains is listed in full on its grid (every combination, with its status), whatever
    its own bound on rows: admission pads that, by the grid."""
    from saferoom.disclosure import marks

    manifest = Manifest.load(catalog_dir)
    caps = to_limits(ServerConfig.load(env={}).engine_limits, "data")
    node = plan.Aggregate(plan.Scan("population", ("person_id", "district", "sex")), ("district", "sex"), COUNT_N)
    protected = disclosure.protect({"t": node}, manifest)
    (name,) = marks.marked(protected)
    table = protected[name].table
    assert table is not None and table.domains is not None
    grid = math.prod(len(d) for d in table.domains)
    with_grid = cost.admit_job(protected, manifest, caps)[-1]
    monkeypatch.setattr(marks, "marked", lambda protected: [])
    without = cost.admit_job(protected, manifest, caps)[-1]
    columns = len(with_grid.roots[name].columns)
    assert with_grid.release_seconds - without.release_seconds == pytest.approx(timing.marks_seconds(grid, columns))


def test_a_histogram_with_more_keys_is_padded_more_per_row() -> None:
    assert timing.histogram_seconds(1_000, 3) > timing.histogram_seconds(1_000, 1) > timing.histogram_seconds(1_000, 0)


def test_a_result_is_padded_for_being_stored_by_its_bytes() -> None:
    assert timing.store_seconds(0) == 0 < timing.store_seconds(1) < timing.store_seconds(2**20)
