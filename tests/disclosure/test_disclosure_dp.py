"""Differential privacy: the rewrite of aggregates over DP datasets, OpenDP's noise at the declared scale, and
attacks (small cells, differencing, averaging) that noise must defeat. In process, on the default (DP) city."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as opendp
import pyarrow as pa
import pytest

from saferoom.api import Context, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import dp
from saferoom.disclosure.dp import QUANTILE_BINS, DPColumn, NoisyAggregate, noise
from saferoom.engine import plan
from saferoom.errors import InvalidPlan, ReleaseRefused
from tests.support import release_outputs

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, count, sum_, mean, median, std = NS["col"], NS["count"], NS["sum"], NS["mean"], NS["median"], NS["std"]
quantile = NS["quantile"]


@pytest.fixture(scope="module")
def city(dp_catalog_dir: Path):
    manifest = Manifest.load(dp_catalog_dir)
    catalog = Catalog.open(dp_catalog_dir)
    ctx = Context(manifest, ["population", "housing_transactions", "bus_stops"])
    yield manifest, catalog, ctx
    catalog.close()


def released(city, epsilon=1.0, **tables):
    manifest, catalog, _ = city
    spend = {"population": epsilon, "housing_transactions": epsilon}
    return release_outputs(manifest, catalog.table, tables, spend)


def exact(city, name: str):
    return city[1].table(name)


def laplace_ks(residuals: np.ndarray, scale: float) -> float:
    """Kolmogorov-Smirnov distance between residuals and Laplace(0, scale)."""
    x = np.sort(residuals)
    cdf = np.where(x < 0, 0.5 * np.exp(x / scale), 1 - 0.5 * np.exp(-x / scale))
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


# --------------------------------------------------------------------------- the mechanisms, statistically


def _aggregate(columns: tuple[DPColumn, ...], k: int = 1, keys: tuple[str, ...] = ("cell",)) -> NoisyAggregate:
    schema = tuple((c, "int64") for c in keys) + tuple((c.name, "int64" if c.integer else "float64") for c in columns)
    dummy = plan.Scan("population", ("person_id",))
    return NoisyAggregate("dp1", "population", keys, dummy, "__n", columns, {}, k, 10, schema)


def test_sum_noise_is_laplace_at_the_declared_scale() -> None:
    cells = 4000
    table = pa.table({"cell": range(cells), "__n": [10**6] * cells, "__x": [1000.0] * cells})
    agg = _aggregate((DPColumn("total", "sum", "__x", 0.0, 50.0),), k=2)
    out = noise(agg, table, {}, epsilon=0.5, delta=1e-7)
    assert out.table.num_rows == cells  # counts far above any threshold: every cell appears
    scale = 2 * 50.0 / 0.5  # k * max|bound| / epsilon
    entry = next(n for n in out.noise if n["column"] == "total")
    assert entry["scale"] == pytest.approx(scale) and entry["ci95"] == pytest.approx(scale * math.log(20))
    residuals = np.array(out.table.column("total").to_pylist()) - 1000.0
    assert np.std(residuals) == pytest.approx(math.sqrt(2) * scale, rel=0.1)
    assert laplace_ks(residuals, scale) < 2.2 / math.sqrt(cells)  # KS test at alpha ~ 1e-4
    inside = np.mean(np.abs(residuals) <= entry["ci95"])
    assert 0.93 < inside < 0.97


def test_count_noise_and_the_threshold_have_the_declared_scale() -> None:
    cells = 4000
    table = pa.table({"cell": range(cells), "__n": [10**6] * cells})
    agg = _aggregate((DPColumn("n", "count", integer=True),), k=1)
    out = noise(agg, table, {}, epsilon=0.2, delta=1e-7)
    residuals = np.array(out.table.column("n").to_pylist()) - 10**6
    assert np.std(residuals) == pytest.approx(math.sqrt(2) * 5.0, rel=0.1)  # scale 1 / 0.2
    assert out.noise[0]["mechanism"] == "laplace threshold" and out.noise[0]["delta"] <= 1e-7


def test_the_threshold_drawn_in_parts_keeps_each_cells_row_and_law() -> None:
    """Many cells go to OpenDP in parts, one per thread (``dp._thresholded``): each kept row keeps its own count
    (scale 0: exact), and cells of every part are kept and noised alike (the measurement's law per entry: at the
    threshold kept a little over half of the time, noise of the declared scale)."""
    cells = 6 * dp._MIN_THRESHOLD_PER_PART
    counts = np.random.default_rng(8).integers(0, 20, cells, dtype=np.int64)
    kept, noisy = dp._thresholded(dp._threshold_measurement(0.0, 10), counts)
    assert kept.tolist() == np.flatnonzero(counts >= 10).tolist()  # in row order
    assert noisy.tolist() == counts[counts >= 10].tolist()
    at = np.full(cells, 1_000, dtype=np.int64)
    kept, noisy = dp._thresholded(dp._threshold_measurement(5.0, 1_000), at)
    first, second = int(np.sum(kept < cells // 2)), int(np.sum(kept >= cells // 2))
    assert abs(first - second) / (cells / 2) < 0.04  # 5 standard deviations of the difference
    assert 0.5 < len(kept) / cells < 0.6  # P(discrete Laplace of scale 5 >= 0) = 0.55
    above = dp._thresholded(dp._threshold_measurement(5.0, 0), at)[1].astype(np.float64) - 1_000.0
    assert np.std(above[: cells // 2]) == pytest.approx(math.sqrt(2) * 5.0, rel=0.1)
    assert np.std(above[cells // 2 :]) == pytest.approx(math.sqrt(2) * 5.0, rel=0.1)


def test_a_cell_of_one_person_never_appears_and_large_cells_always_do() -> None:
    # 2,000 cells of exactly one person each (what group_by("person_id") makes) next to 2,000 large ones.
    table = pa.table({"cell": range(4000), "__n": [1] * 2000 + [500] * 2000})
    agg = _aggregate((DPColumn("n", "count", integer=True),), k=1)
    for _ in range(5):
        out = noise(agg, table, {}, epsilon=1.0, delta=1e-7)
        cells = out.table.column("cell").to_pylist()
        assert min(cells) >= 2000 and len(cells) == 2000
        assert out.threshold is not None and out.threshold >= 10


def test_a_mean_is_clamped_into_its_bounds_and_centred() -> None:
    table = pa.table({"cell": [1, 2], "__n": [1000, 1000], "__x": [0.0, 500.0 * 1000]})  # means 50 and 100
    agg = _aggregate((DPColumn("m", "mean", "__x", 0.0, 100.0),))
    draws = np.array([noise(agg, table, {}, 1.0, 1e-7).table.column("m").to_pylist() for _ in range(200)])
    assert np.all((draws >= 0) & (draws <= 100))
    assert abs(np.mean(draws[:, 0]) - 50.0) < 0.5  # centred sum noise of scale 50 over 1000 people


def test_a_noisy_median_lands_near_the_true_one() -> None:
    width = 1000.0 / QUANTILE_BINS
    values = np.random.default_rng(1).normal(400.0, 80.0, 5000).clip(0, 999)
    counts = np.bincount((values / width).astype(int), minlength=QUANTILE_BINS)
    histogram = pa.table({"cell": [1] * QUANTILE_BINS, "__bin": np.arange(QUANTILE_BINS), "__n": counts})
    table = pa.table({"cell": [1], "__n": [5000]})
    agg = _aggregate((DPColumn("med", "quantile", "__h", 0.0, 1000.0, 0.5),))
    medians = [noise(agg, table, {"__h": histogram}, 0.5, 1e-7).table.column("med")[0].as_py() for _ in range(50)]
    assert all(abs(m - np.median(values)) < 20 for m in medians)  # +- 10 candidates of 2.0


@pytest.mark.parametrize("keys", [("cell",), ("name",), ("cell", "name")])
def test_noisy_medians_of_many_cells_each_land_near_their_own(keys: tuple[str, ...]) -> None:
    """Enough cells that the draws run on several threads (``dp._draws``), keyed by an integer, a string with a
    null key among them, or both: every released cell gets its own median, in its own row, none is lost."""
    cells = 200
    width = 1000.0 / QUANTILE_BINS
    names = [None if c == 7 else f"c{c}" for c in range(cells)]
    low = [(37 * c) % (QUANTILE_BINS - 2) for c in range(cells)]  # half of each cell's values here...
    histogram = pa.table(
        {
            "cell": list(range(cells)) * 2,
            "name": names * 2,
            "__bin": low + [b + 2 for b in low],  # ...half two bins up: its median is candidate low + 1 or + 2
            "__n": [1500] * (2 * cells),
        }
    )
    histogram = histogram.append_column("__junk", pa.array([0] * (2 * cells)))  # extra columns change nothing
    extra = pa.table({"cell": [cells + 5], "name": ["unreleased"], "__bin": [0], "__n": [10**6], "__junk": [0]})
    histogram = pa.concat_tables([histogram, extra])  # a cell that was not released: ignored
    table = pa.table({"cell": range(cells), "name": names, "__n": [3000] * cells})
    columns = (DPColumn("med", "quantile", "__h", 0.0, 1000.0, 0.5),)
    schema = (*((k, "int64" if k == "cell" else "string") for k in keys), ("med", "float64"))
    dummy = plan.Scan("population", ("person_id",))
    agg = NoisyAggregate("dp1", "population", keys, dummy, "__n", columns, {}, 1, 10, schema)
    # Neighbouring candidates' scores differ by 1.5e6, the noise's scale 200 (400 a stage): one of the two.
    out = noise(agg, table, {"__h": histogram}, 5.0, 1e-7).table
    assert out.num_rows == cells
    rows = zip(*(out.column(k).to_pylist() for k in keys), strict=True)
    got = dict(zip(rows, out.column("med").to_pylist(), strict=True))
    for c in range(cells):
        key = tuple({"cell": c, "name": names[c]}[k] for k in keys)
        assert got[key] in ((low[c] + 1) * width, (low[c] + 2) * width), (key, got[key], low[c])


def _permute_and_flip_law(scores: np.ndarray, scale: float) -> np.ndarray:
    """The exact output law of OpenDP's report-noisy-min with max-divergence (permute and flip, MS20): in a random
    order, candidate j is accepted with probability p_j = exp(-(s_j - min s) / scale), the first accepted wins; so
    the winner is uniform over the set of candidates that each accept independently."""
    p = np.exp(-(scores - scores.min()) / scale)
    law = np.zeros(len(p))
    for j in range(len(p)):
        others = [i for i in range(len(p)) if i != j]
        for accepted in itertools.product((False, True), repeat=len(others)):
            weight = math.prod(p[i] if a else 1 - p[i] for i, a in zip(others, accepted, strict=True))
            law[j] += p[j] * weight / (1 + sum(accepted))
    return law


def test_batched_threaded_draws_follow_the_mechanisms_exact_law() -> None:
    """Many draws through ``dp._draws`` (batches on every thread) against the exact law of the mechanism: staged,
    a group by permute and flip over the groups' best scores, then a candidate of that group by permute and flip
    over its scores; not staged, permute and flip over every candidate. Chi-square tests whose critical value 45
    (3 degrees of freedom) is exceeded with probability below 1e-9, so they do not flake; the two laws differ by
    a statistic near 400, and the exponential mechanism's law (Gumbel noise) would give one near 300."""
    measurement, scale = dp._noisy_min(1, 1.0)
    assert scale == 2.0  # scores may move both ways: scale 2 * sensitivity / epsilon
    row = np.array([0, 1, 2, 4], dtype=np.int64)  # groups of two: {0, 1} (best 0) and {2, 4} (best 2)
    draws = 12_000
    rows = np.tile(row, (draws, 1))
    observed = np.bincount(dp._draws(measurement, measurement, rows, np.ones(draws, bool), 2), minlength=len(row))
    first = _permute_and_flip_law(np.array([0.0, 2.0]), scale)
    law = np.concatenate(
        [first[0] * _permute_and_flip_law(np.array([0.0, 1.0]), scale),
         first[1] * _permute_and_flip_law(np.array([2.0, 4.0]), scale)]
    )  # fmt: skip
    expected = draws * law
    assert float(np.sum((observed - expected) ** 2 / expected)) < 45.0, (observed, expected)
    single = draws * _permute_and_flip_law(row.astype(float), scale)
    assert float(np.sum((observed - single) ** 2 / single)) > 45.0  # the test tells the two laws apart
    unstaged = np.bincount(dp._draws(measurement, measurement, rows, np.zeros(draws, bool), 2), minlength=len(row))
    assert float(np.sum((unstaged - single) ** 2 / single)) < 45.0, (unstaged, single)  # one draw over all


def test_a_quantiles_two_stages_spend_its_epsilon_between_them() -> None:
    """Each stage's measurement is calibrated to half the column's epsilon at the scores' sensitivity, and the
    groups' best scores move by no more than the scores themselves under any change of one person's rows."""
    k, epsilon = 3, 0.8
    column = DPColumn("med", "quantile", "__h", 0.0, 1000.0, 0.5)
    sensitivity = int(column.sensitivity(k))
    stage, _ = dp._noisy_min(sensitivity, epsilon / 2)
    assert stage.map(sensitivity) * 2 == pytest.approx(epsilon, rel=1e-9)
    rng = np.random.default_rng(5)
    for _ in range(200):
        counts = rng.integers(0, 50, QUANTILE_BINS)
        neighbour = counts.copy()
        for b in rng.integers(0, QUANTILE_BINS, k):  # one person: up to k rows added or removed
            neighbour[b] = max(0, neighbour[b] + rng.choice((-1, 1)))
        a, b = dp._quantile_scores(counts, 0.5), dp._quantile_scores(neighbour, 0.5)
        assert np.max(np.abs(a - b)) <= sensitivity
        ga, gb = dp._group_minima(a[np.newaxis, :])[0], dp._group_minima(b[np.newaxis, :])[0]
        assert len(ga) == dp.QUANTILE_STAGES[0] and np.max(np.abs(ga - gb)) <= sensitivity


def test_batched_draws_keep_each_cells_row() -> None:
    """Every row of scores gets its own draw, in its own place, whatever batch and thread ran it: with scale 0
    OpenDP's noisy min is the exact argmin, so each draw must be its row's minimum."""
    exact: Any = opendp.m.make_noisy_max(
        opendp.vector_domain(opendp.atom_domain(T="i64")),
        opendp.linf_distance(T="i64", monotonic=False),
        opendp.max_divergence(),
        scale=0.0,
        negate=True,
    )
    rng = np.random.default_rng(3)
    for cells in (1, 15, 17, 1000, 1237):  # sequential, one batch short of threading, threads, uneven batches
        scores = np.argsort(rng.random((cells, QUANTILE_BINS + 1)), axis=1).astype(np.int64)  # distinct scores
        staged = rng.random(cells) < 0.5  # either way, the exact argmin
        assert dp._draws(exact, exact, scores, staged) == list(np.argmin(scores, axis=1))


def test_one_measurement_for_every_cell_charges_what_one_per_cell_would() -> None:
    """The column's one noisy-min measurement has the privacy map a measurement built for one cell has (OpenDP's,
    at the column's sensitivity), and the release charges each statistic's epsilon once, whatever the number of
    cells: a person changes at most k cells, and the sensitivities are over all cells at once."""
    k, epsilon = 2, 0.3
    column = DPColumn("med", "quantile", "__h", 0.0, 1000.0, 0.5)
    sensitivity = int(column.sensitivity(k))
    shared, scale = dp._noisy_min(sensitivity, epsilon)
    one_cell: Any = opendp.m.make_noisy_max(
        opendp.vector_domain(opendp.atom_domain(T="i64"), size=QUANTILE_BINS + 1),
        opendp.linf_distance(T="i64", monotonic=False),
        opendp.max_divergence(),
        scale=scale,
        negate=True,
    )
    assert shared.map(sensitivity) == one_cell.map(sensitivity) == pytest.approx(epsilon, rel=1e-9)
    for cells in (1, 40, 400):
        histogram = pa.table(
            {"cell": list(range(cells)) * 2, "__bin": [10] * cells + [20] * cells, "__n": [30] * 2 * cells}
        )
        table = pa.table({"cell": range(cells), "__n": [60] * cells, "__x": [600.0] * cells})
        agg = _aggregate((DPColumn("n", "count", integer=True), column, DPColumn("s", "sum", "__x", 0.0, 50.0)), k=k)
        agg = replace(agg, histograms={"__h": plan.Scan("population", ("person_id",))})
        out = noise(agg, table, {"__h": histogram}, epsilon, 1e-7)
        charged = {entry["column"]: entry["epsilon"] for entry in out.noise}
        assert charged == {"(cells)": pytest.approx(epsilon), "n": 0.0, "med": epsilon, "s": epsilon}
        assert sum(charged.values()) == pytest.approx(epsilon * agg.measurements)
        assert next(e for e in out.noise if e["column"] == "med")["scale"] == scale


def test_count_noise_is_discrete_laplace_at_the_declared_scale() -> None:
    """Kolmogorov-Smirnov distance of 200,000 noisy counts from the discrete Laplace law P(x) ~ exp(-|x| / b): the
    bound 3.3 / sqrt(n) is exceeded with probability below 1e-9 (conservative for a discrete law), and a scale of 5
    instead of 4 would exceed it (its CDF differs by 0.012 at 0)."""
    cells, b = 200_000, 4.0
    noisy, scale = dp._laplace_int(np.full(cells, 5000, dtype=np.int64), 2, 0.5)  # as noise() calls it
    assert scale == b  # k / epsilon
    residuals = np.sort(np.array(noisy) - 5000)
    x = np.arange(residuals.min() - 1, residuals.max() + 1)  # the CDFs' jumps are at integers
    r = math.exp(-1 / b)
    cdf = np.where(x >= 0, 1 - r ** (x + 1) / (1 + r), r ** np.abs(x) / (1 + r))  # P(X <= x)
    empirical = np.searchsorted(residuals, x, side="right") / cells
    distance = float(np.max(np.abs(empirical - cdf)))
    assert distance < 3.3 / math.sqrt(cells), distance


# --------------------------------------------------------------------------- the rewrite on the city


def test_median_income_by_district_is_close_on_a_log_scale_of_candidates(city) -> None:
    q = city[2].table("population").group_by("district").agg(median_income=median("income"), age=median("age"))
    out = released(city, epsilon=2.0, q=q)["q"]
    people = exact(city, "population")
    for row in out.table.to_pylist():
        mine = people.filter(pa.compute.equal(people["district"], row["district"]))
        true_income = float(np.median(mine["income"].to_numpy()))
        assert abs(row["median_income"] - true_income) < 0.05 * true_income  # candidates ~2% apart
        assert abs(row["age"] - float(np.median(mine["age"].to_numpy()))) <= 2
    notes = [n["note"] for r in out.report.rules for n in r.noise if n["column"] == "median_income"]
    assert "log scale" in notes[0]


def test_small_cell_attacks_release_nothing_personal(city) -> None:
    people = city[2].table("population")
    by_person = people.group_by("person_id").agg(n=count())
    # Keys without a public domain: cells are chosen by the noisy threshold (a lone person shows with p <= delta).
    banded = people.with_columns(band=(col("age") // 10) * 10)
    one = banded.filter(col("person_id") == 42).group_by("band").agg(n=count(), income=mean("income"))
    crosstab = people.group_by("district", "age", "household_size", "education").agg(n=count())
    out = released(city, by_person=by_person, one=one, crosstab=crosstab)
    assert out["by_person"].table.num_rows == 0
    assert out["one"].table.num_rows == 0
    threshold = out["crosstab"].report.rules[0].threshold
    assert threshold is not None and threshold >= 10
    assert min(out["crosstab"].table.column("n").to_pylist(), default=threshold) >= threshold
    assert all(r.rule in ("differential_privacy", "clamp") for r in out["crosstab"].report.rules)


def test_differencing_a_district_with_and_without_one_person_does_not_recover_their_income(city) -> None:
    people = city[2].table("population")
    victim = 4242
    row = exact(city, "population").filter(pa.compute.equal(exact(city, "population")["person_id"], victim))
    district, income = row["district"][0].as_py(), row["income"][0].as_py()
    everyone = people.filter(col("district") == district).agg(total=sum_("income"))
    but_one = people.filter((col("district") == district) & (col("person_id") != victim)).agg(total=sum_("income"))
    guesses = []
    for _ in range(30):
        out = released(city, epsilon=1.0, everyone=everyone, but_one=but_one)
        guesses.append(out["everyone"].table["total"][0].as_py() - out["but_one"].table["total"][0].as_py())
    # Each sum has Laplace noise of scale 5,000,000 / 0.5: the difference says nothing about one income.
    errors = np.abs(np.array(guesses) - income)
    assert np.median(errors) > 1_000_000
    assert out["everyone"].report.rules[0].rule == "differential_privacy"


def test_averaging_repeated_answers_converges_no_faster_than_the_budget_allows(city) -> None:
    people = city[2].table("population")
    query = people.filter(col("district") == "Siming").agg(n=count())
    truth = exact(city, "population").filter(pa.compute.equal(exact(city, "population")["district"], "Siming"))
    budget, runs = 1.0, 10  # ten runs of epsilon 0.1 each
    averages = []
    for _ in range(40):
        answers = [released(city, epsilon=budget / runs, q=query)["q"].table["n"][0].as_py() for _ in range(runs)]
        averages.append(np.mean(answers) - truth.num_rows)
    # One answer at epsilon 0.1 has std sqrt(2) * 10; the mean of ten has sqrt(2) * 10 / sqrt(10) = 4.47,
    # never below what a single query spending the whole budget (std 1.41) would give.
    spread = float(np.std(averages))
    assert spread > 0.55 * math.sqrt(2) * 10 / math.sqrt(runs)
    assert spread > math.sqrt(2) * 1.0 / budget


def test_post_processing_of_noisy_aggregates_is_allowed(city) -> None:
    people = city[2].table("population")
    by_district = people.group_by("district").agg(n=count(), income=median("income"))
    stops = city[2].table("bus_stops").group_by("district").agg(stops=count())
    ranked = by_district.join(stops, on="district").with_columns(per_stop=col("n") / col("stops"))
    ranked = ranked.sort("per_stop", descending=True).head(3)
    out = released(city, ranked=ranked)["ranked"]
    assert out.table.num_rows == 3 and out.table.column_names == ["district", "n", "income", "stops", "per_stop"]
    incomes = out.table["income"].to_pylist()
    assert all(0 <= v <= 5_000_000 for v in incomes)
    assert [r.rule for r in out.report.rules][:1] == ["differential_privacy"]


def test_nested_noisy_aggregates_run_in_rounds(city) -> None:
    people = city[2].table("population")
    per_district = people.group_by("district").agg(n=count())
    # Rows joined to a noisy aggregate of the same dataset, aggregated again: two rounds of noise.
    big = people.join(per_district.filter(col("n") > 1000).select("district"), on="district")
    out = released(city, q=big.group_by("sex").agg(people=count(), age=mean("age")))["q"]
    assert out.table.num_rows == 2
    assert sum(r.rule == "differential_privacy" for r in out.report.rules) == 2


def test_budget_is_split_evenly_over_the_measurements(city) -> None:
    people = city[2].table("population")
    q = people.group_by("district").agg(n=count(), income=mean("income"), age=quantile("age", 0.9))
    out = released(city, epsilon=0.9, q=q)["q"]
    spent = [n["epsilon"] for r in out.report.rules for n in r.noise if n["column"] != "n"]
    assert spent == pytest.approx([0.3, 0.3, 0.3])  # cells, income, age


def test_buyers_with_several_purchases_are_bounded_to_max_contributions(city) -> None:
    manifest, catalog, _ = city
    housing = exact(city, "housing_transactions")
    counts = pa.compute.value_counts(housing["buyer_id"]).field("counts").to_pylist()
    assert max(counts) == 2  # some buyers really have two sales
    info = manifest.dataset("housing_transactions")
    one_each = replace(info, policy=replace(info.policy, max_contributions=1))
    strict = replace(manifest, datasets={**manifest.datasets, "housing_transactions": one_each})
    q = Context(strict, ["housing_transactions"]).table("housing_transactions").agg(sales=count())
    totals = [
        release_outputs(strict, catalog.table, {"q": q}, {"housing_transactions": 5.0})["q"].table["sales"][0].as_py()
        for _ in range(20)
    ]
    assert abs(np.mean(totals) - len(counts)) < 3  # one sale per buyer (noise scale 1 / 5)
    assert len(counts) < housing.num_rows
    out = released(city, epsilon=5.0, q=city[2].table("housing_transactions").agg(sales=count()))["q"]
    assert "at most 2 rows" in out.report.rules[0].explanation


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda ctx: ctx.table("population").agg(s=std("income")), "not available under differential privacy"),
        (lambda ctx: ctx.table("population").agg(s=sum_(col("income") / col("age"))), "needs public bounds"),
        (lambda ctx: ctx.table("population").head(100).agg(n=count()), "head"),
        (
            lambda ctx: (
                ctx.table("population")
                .select("district", "age")
                .join(ctx.table("housing_transactions").select("district", "price"), on="district")
                .agg(n=count())
            ),
            "combine its rows with public data only",
        ),
    ],
)
def test_unsupported_dp_aggregates_are_refused_with_the_reason(city, build, message) -> None:
    with pytest.raises(ReleaseRefused, match=message):
        released(city, q=build(city[2]))


def test_a_clipped_expression_has_the_bounds_it_is_clipped_to(city) -> None:
    per_age = city[2].table("population").agg(s=sum_((col("income") / col("age")).clip(0, 1000)))
    out = released(city, q=per_age)["q"]
    assert out.report.rules[0].noise[1]["sensitivity"] == 1000


def test_models_are_refused_on_dp_data(city) -> None:
    from saferoom.disclosure import protect

    node = plan.Aggregate(plan.Scan("population", ("age",)), (), (("n", plan.AggExpr("count")),))
    with pytest.raises(ReleaseRefused, match="models"):
        protect({"m": node}, city[0], models={"m"})


@pytest.mark.parametrize(
    "node",
    [
        plan.Bound(plan.Scan("population", ("age",)), "age", 1),
        plan.Input("dp1", (("age", "int64"),)),
    ],
)
def test_algorithms_cannot_write_release_only_nodes(city, node) -> None:
    from saferoom.disclosure import protect

    with pytest.raises(InvalidPlan, match="reserved for the release step"):
        protect({"x": plan.Aggregate(node, (), (("n", plan.AggExpr("count")),))}, city[0])


def test_keys_with_public_domains_are_released_on_their_grid_without_delta(city) -> None:
    q = city[2].table("population").group_by("district", "sex").agg(n=count())
    out = released(city, epsilon=1.0, q=q)["q"]
    assert out.table.num_rows == 12  # every district x sex: each has hundreds of people
    cells = out.report.rules[0].noise[0]
    assert cells["mechanism"] == "laplace over every combination of public keys" and cells["delta"] == 0.0
    assert out.report.rules[0].threshold == 10  # the policy's minimum, not a delta-driven threshold
    # A computed key has no public domain: its cells are chosen by the noisy threshold, which spends delta.
    banded = city[2].table("population").with_columns(band=(col("age") // 10) * 10).group_by("band").agg(n=count())
    chosen = released(city, epsilon=1.0, q=banded)["q"].report.rules[0]
    assert chosen.noise[0]["mechanism"] == "laplace threshold" and 0 < chosen.noise[0]["delta"] <= 1e-7
    assert chosen.threshold > 10


def test_a_grid_cell_nobody_is_in_is_released_only_when_noise_lifts_it_over_the_minimum(city) -> None:
    very_old = city[2].table("population").filter(col("age") >= 100).group_by("district", "education")
    outs = [released(city, epsilon=1.0, q=very_old.agg(n=count()))["q"] for _ in range(20)]
    # Nobody in this city is 100: every combination is empty, and noise of scale 1 almost never reaches 10.
    assert sum(o.table.num_rows for o in outs) <= 2


def test_a_cell_is_staged_by_its_released_noisy_count_never_its_exact_one() -> None:
    """Every cell holds exactly the persons that put it, at epsilon 0.5 and k 1, on the boundary of staging (n
    epsilon / k = ``QUANTILE_STAGED_FROM``): which cells draw in two stages follows their released noisy counts,
    so about half do, and the report says how many."""
    cells, persons = 200, 2 * dp.QUANTILE_STAGED_FROM
    histogram = pa.table(
        {"cell": list(range(cells)) * 2, "__bin": [100] * cells + [102] * cells, "__n": [persons // 2] * 2 * cells}
    )
    table = pa.table({"cell": range(cells), "__n": [persons] * cells})
    agg = _aggregate((DPColumn("n", "count", integer=True), DPColumn("med", "quantile", "__h", 0.0, 1000.0, 0.5)))
    out = noise(agg, table, {"__h": histogram}, 0.5, 1e-7)
    counts = out.table.column("n").to_pylist()
    assert len(counts) == cells
    entry = next(e for e in out.noise if e["column"] == "med")
    assert entry["staged_cells"] == sum(1 for n in counts if n * 0.5 >= dp.QUANTILE_STAGED_FROM)
    assert 0 < entry["staged_cells"] < cells  # exact counts alone would stage all or none
    assert set(out.table.column("med").to_pylist()) <= {101 * 2.0, 102 * 2.0}  # either way: the two best candidates
