"""Is DP mock data worth developing against? On a generated city with epsilon 1 per personal dataset, the
shipped algorithms run (in the real sandbox, `saferoom dev run`'s path) on mock data give results close to
what they give on the real data, and synthetic rows match real persons no more often than chance.

The real data appears in these tests only as the yardstick."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.catalog import generate_catalog
from saferoom.catalog.catalog import Catalog
from saferoom.catalog.download import write_downloaded_catalog
from saferoom.jobs.local import run_local
from saferoom.mock import Measurements, measure, measured_fidelity, sample, structure_of
from saferoom.mock.fidelity import along_structure
from saferoom.mock.select import SELECTION
from tests.conftest import ALGORITHMS

SCALE = 400_000
QUASI_IDENTIFIERS = ("district", "age", "sex", "education", "household_size")


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real-city")
    generate_catalog(out, scale=SCALE, seed=7)
    return out


def _mock_catalog(real_dir: Path, out: Path, epsilon: float = 1.0) -> dict[str, float]:
    """What `saferoom datasets mock` writes once an operator published every personal dataset at ``epsilon``:
    public datasets' real rows, personal ones sampled from their noisy measurements. Returns the mean TVD
    (real vs mock) along each personal dataset's structure."""
    tvds: dict[str, float] = {}
    with Catalog.open(real_dir) as real:
        tables = {}
        for name in real.names():
            info = real.info(name)
            if info.is_public:
                tables[name] = real.table(name)
                continue
            structure = structure_of(info)
            measurements = measure(real.table(name), info, structure, epsilon)
            tables[name] = sample(measurements, structure, info, measurements.total, seed=1)
            tvds[name] = along_structure(measured_fidelity(real.table(name), tables[name], structure), structure)
        write_downloaded_catalog(out, list(real.manifest.datasets.values()), tables)
    return tvds


@pytest.fixture(scope="module")
def mock_dir(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("mock-city")
    return out, _mock_catalog(real_dir, out)


def _output(outcome, name: str) -> pa.Table:  # type: ignore[no-untyped-def]
    table = next(o.table for o in outcome.outputs if o.name == name)
    assert table is not None
    return table


def test_the_mock_keeps_the_marginals_along_the_structure(mock_dir: tuple[Path, dict[str, float]]) -> None:
    _, tvds = mock_dir
    # At 400,000 persons (1M: see bench/bench_mock.py and the README); housing has 20 times fewer rows.
    assert tvds["population"] <= 0.1, tvds
    assert tvds["housing_transactions"] <= 0.5, tvds  # 10,000 sales, k = 2 rows per buyer: coarse (bench: 1M)


def test_site_selection_on_mock_finds_the_real_top_cells(
    real_dir: Path, mock_dir: tuple[Path, dict[str, float]]
) -> None:
    package = ALGORITHMS / "site_selection"
    mock = _output(run_local(package, mock_dir[0], {"top": "10"}), "candidates")
    real = _output(run_local(package, real_dir, {"top": "20"}), "candidates")
    assert mock.num_rows == 10  # non-empty: the declared-domain fallback released 0 cells
    shared = set(mock.column("cell").to_pylist()) & set(real.column("cell").to_pylist())
    assert len(shared) >= 5, shared


def test_population_profile_on_mock_is_within_ten_percent_of_the_real_one(
    real_dir: Path, mock_dir: tuple[Path, dict[str, float]]
) -> None:
    outcome = run_local(ALGORITHMS / "population_profile", mock_dir[0], {})
    cells = _output(outcome, "age_sex_by_district").to_pylist()
    income = {r["district"]: r for r in _output(outcome, "income_by_district").to_pylist()}
    with Catalog.open(real_dir) as catalog:
        people = catalog.table("population")
        district = pc.cast(people.column("district"), pa.string()).to_numpy(zero_copy_only=False)
        band = (people.column("age").to_numpy() // 10) * 10
        sex = pc.cast(people.column("sex"), pa.string()).to_numpy(zero_copy_only=False)
        incomes = people.column("income").to_numpy()
        adult = people.column("age").to_numpy() >= 18
    truth: dict[tuple[str, int, str], int] = {}
    for d, b, s in zip(district, band, sex, strict=True):
        truth[(d, int(b), s)] = truth.get((d, int(b), s), 0) + 1
    assert len(cells) >= 0.9 * len(truth)  # the mock's cells are (almost) all the real ones
    errors = np.array([abs(c["persons"] - truth.get((c["district"], c["age_band"], c["sex"]), 0)) for c in cells])
    real_counts = np.array([truth.get((c["district"], c["age_band"], c["sex"]), 0) for c in cells])
    assert errors.sum() / real_counts.sum() <= 0.10  # persons counted in the wrong cell: under 10 %
    big = real_counts >= 500  # sizeable cells on their own: nine in ten within 10 %, none beyond 25 %
    ratio = errors[big] / real_counts[big]
    assert np.mean(ratio <= 0.10) >= 0.9 and ratio.max() <= 0.25, ratio.max()
    assert set(income) == set(district)  # every district, none missing or invented
    mean_errors = []
    for name, row in income.items():
        mine = (district == name) & adult
        assert abs(row["adults"] - mine.sum()) <= 0.10 * mine.sum(), name
        assert abs(row["median_income"] - np.median(incomes[mine])) <= 0.10 * np.median(incomes[mine]), name
        mean_errors.append(abs(row["mean_income"] - incomes[mine].mean()) / incomes[mine].mean())
    # The mean is not robust to the mock's noise: a noisy count in a top income bin that holds nobody really
    # (incomes reach 1e9) makes a few phantom high earners, and one moves a district's mean by percents. Measured
    # (447 mocks of this city, worst district of each): p90 1.6 %, p99 9 %, max 17 %; 4 of 447 had a district
    # beyond 10 %, never two (of the 198 counted). So, as for the cells above: all but one district within 10 %,
    # none beyond 25 % (the median, robust, stays within 10 % everywhere: max 1.9 %).
    assert sum(e > 0.10 for e in mean_errors) <= 1 and max(mean_errors) <= 0.25, mean_errors


def _match_rate(candidates: pa.Table, real: pa.Table, place: int | None = None) -> float:
    """The share of candidate rows equal to a real person's row on every quasi-identifier, where that
    combination belongs to one real person only (the rows an attacker could single out). ``place``: where the
    person lives is one more, latitude and longitude rounded to that many decimals (3: about 100 m)."""

    def keys(table: pa.Table) -> np.ndarray:
        parts = [pc.cast(table.column(q), pa.string()).to_numpy(zero_copy_only=False) for q in QUASI_IDENTIFIERS]
        if place is not None:
            parts += [np.round(table.column(c).to_numpy(), place) for c in ("lat", "lon")]
        return np.array(["|".join(map(str, row)) for row in zip(*parts, strict=True)])

    real_keys, counts = np.unique(keys(real), return_counts=True)
    unique = set(real_keys[counts == 1])
    return float(np.mean([k in unique for k in keys(candidates)]))


def test_synthetic_rows_match_unique_real_persons_no_more_often_than_chance(
    real_dir: Path, mock_dir: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    """Chance: a second city drawn from the same distribution (another seed) has none of these persons; its
    rows match the real city's unique persons at the rate any plausible population would."""
    generate_catalog(tmp_path, scale=SCALE, seed=8)
    with Catalog.open(real_dir) as real, Catalog.open(mock_dir[0]) as mock, Catalog.open(tmp_path) as other:
        n = 200_000  # half of each city: the rates' sampling error (binomial) is a twentieth of the 10% slack
        synthetic = _match_rate(mock.table("population").slice(0, n), real.table("population"))
        chance = _match_rate(other.table("population").slice(0, n), real.table("population"))
    assert synthetic <= chance * 1.1 + 0.001, (synthetic, chance)


@pytest.mark.parametrize("place", [2, 3], ids=["1 km", "100 m"])
def test_synthetic_rows_with_where_they_live_match_unique_real_persons_no_more_often_than_chance(
    real_dir: Path, mock_dir: tuple[Path, dict[str, float]], tmp_path: Path, place: int
) -> None:
    """The same with the location among the quasi-identifiers (the one an attacker most often has: a home
    address): the mock's coordinates come from noisy counts over a public grid, so a synthetic person sits
    where a real one does no more often than in another city drawn from the same distribution (measured at
    200,000 persons: 14.2% of rows single a person out at 1 km, chance 14.3%; 0.27% at 100 m, chance 0.30%)."""
    generate_catalog(tmp_path, scale=SCALE, seed=8)
    with Catalog.open(real_dir) as real, Catalog.open(mock_dir[0]) as mock, Catalog.open(tmp_path) as other:
        n = 200_000
        synthetic = _match_rate(mock.table("population").slice(0, n), real.table("population"), place)
        chance = _match_rate(other.table("population").slice(0, n), real.table("population"), place)
    assert synthetic <= chance * 1.1 + 0.001, (synthetic, chance)


def test_a_privately_selected_structure_recovers_the_citys_dependencies_within_one_charge(real_dir: Path) -> None:
    """A catalog that declares no graph ("auto"): the tree is selected from the data (MST-style, noisy max over
    dependence scores), inside the same publication epsilon, and stored with the measurements."""
    with Catalog.open(real_dir) as catalog:
        declared, real = catalog.info("population"), catalog.table("population")
        assert declared.mock is not None
        info = dataclasses.replace(declared, mock=dataclasses.replace(declared.mock, structure=(), select=True))
        structure = structure_of(info)
        assert structure.selected and not structure.edges
        measurements = measure(real, info, structure, 1.0)
        tree = measurements.structure(structure)
        mock = sample(measurements, structure, info, 100_000, seed=1)
        fidelity = measured_fidelity(real, mock, structure)
    pairs = {frozenset(edge) for edge in tree.edges}
    # Where people live, what they earn, by district and by age; education by age (the generator's own links).
    for a, b in (("district", "lat+lon"), ("district", "income"), ("age", "income"), ("age", "education")):
        assert frozenset((a, b)) in pairs, tree.describe()
    assert len(tree.edges) == len(tree.attributes) - 1 and all(len(p) == 1 for p in tree.parents.values())
    spent = sum(m.epsilon for m in measurements.marginals.values()) + measurements.selection_epsilon
    assert math.isclose(spent, 1.0, rel_tol=1e-12)  # one publication, one charge: selection included
    assert math.isclose(measurements.selection_epsilon, SELECTION, rel_tol=1e-12)
    assert "tree selection, MST (eps=0.1)" in measurements.describe()
    again = Measurements.from_bytes(measurements.to_bytes())
    assert again.structure(structure).edges == tree.edges and again.total == measurements.total
    assert along_structure(fidelity, tree) <= 0.15, tree.describe()  # 0.06 measured at 200,000 persons, 0.04 at 400,000
