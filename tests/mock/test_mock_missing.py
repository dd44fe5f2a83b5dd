"""Missing values survive into DP mock data: the rate of nulls per column, conditional on the column's parents
in the structure, and NaN (not null) for a column declared never null but possibly NaN. Code developed on the
mock then meets the missing values the real data holds, in the form the catalog declares."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.catalog import generate_catalog
from saferoom.catalog.catalog import Catalog
from saferoom.catalog.manifest import DatasetInfo
from saferoom.mock import measure, sample, structure_of

PERSONS = 60_000


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, DatasetInfo]:
    out = tmp_path_factory.mktemp("missing-city")
    generate_catalog(out, scale=PERSONS, seed=7)
    with Catalog.open(out) as catalog:
        return catalog.table("population").combine_chunks(), catalog.info("population")


def _with_income(info: DatasetInfo, **declared: object) -> DatasetInfo:
    columns = tuple(replace(c, **declared) if c.name == "income" else c for c in info.columns)  # type: ignore[arg-type]
    return replace(info, columns=columns)


def _missing_income(table: pa.Table, value: float | None) -> tuple[pa.Table, str]:
    """Income missing for 15% of one district's persons and 5% of everyone else's (as ``value``: None or NaN)."""
    rng = np.random.default_rng(3)
    district = table.column("district").to_pylist()
    first = district[0]
    rate = np.where(np.array(district) == first, 0.15, 0.05)
    gone = rng.random(table.num_rows) < rate
    income = table.column("income").to_numpy()
    if value is None:
        column = pa.array(income, pa.float64(), mask=gone)
    else:
        column = pa.array(np.where(gone, value, income), pa.float64())
    return table.set_column(table.schema.get_field_index("income"), "income", column), first


def _rates(table: pa.Table, first: str, missing: pa.Array) -> tuple[float, float, float]:
    here = np.asarray(pc.equal(table.column("district").cast(pa.string()), first).to_pylist(), dtype=bool)
    gone = np.asarray(missing.to_pylist(), dtype=bool)
    return float(gone.mean()), float(gone[here].mean()), float(gone[~here].mean())


def test_null_rates_survive_overall_and_within_their_parents(city: tuple[pa.Table, DatasetInfo]) -> None:
    table, info = city
    info = _with_income(info, may_be_null=True)
    real, first = _missing_income(table, None)
    structure = structure_of(info)
    assert "district" in structure.parents["income"]  # the conditional rate has a path to survive by
    measurements = measure(real, info, structure, epsilon=1.0)
    mock = sample(measurements, structure, info, measurements.total, seed=1)
    want = _rates(real, first, pc.is_null(real.column("income")).combine_chunks())
    got = _rates(mock, first, pc.is_null(mock.column("income")).combine_chunks())
    assert got[0] == pytest.approx(want[0], abs=0.01)  # overall, within a percentage point
    assert got[1] == pytest.approx(want[1], abs=0.02) and got[2] == pytest.approx(want[2], abs=0.01)
    assert got[1] > 2 * got[2]  # the district's higher rate is kept, not averaged away


def test_a_column_declared_nan_but_never_null_gets_nan_in_the_mock(city: tuple[pa.Table, DatasetInfo]) -> None:
    table, info = city
    info = _with_income(info, may_be_null=False, may_be_nan=True)
    real, first = _missing_income(table, float("nan"))
    structure = structure_of(info)
    measurements = measure(real, info, structure, epsilon=1.0)
    mock = sample(measurements, structure, info, measurements.total, seed=1)
    income = mock.column("income").combine_chunks()
    assert income.null_count == 0  # the declaration says never null
    want = _rates(real, first, pc.is_nan(real.column("income")).combine_chunks())
    got = _rates(mock, first, pc.is_nan(income))
    assert got[0] == pytest.approx(want[0], abs=0.01)
    assert got[1] > 2 * got[2]


def test_a_column_declared_never_missing_is_never_missing(city: tuple[pa.Table, DatasetInfo]) -> None:
    """The noise may put a few phantom rows in a missing-value bin; a declared column never gets them."""
    table, info = city
    declared = {"income", "age", "district", "education"}
    columns = tuple(replace(c, may_be_null=False, may_be_nan=False) if c.name in declared else c for c in info.columns)
    info = replace(info, columns=columns)
    structure = structure_of(info)
    measurements = measure(table, info, structure, epsilon=1.0)
    mock = sample(measurements, structure, info, 200_000, seed=2)
    for name in sorted(declared):
        column = mock.column(name).combine_chunks()
        assert column.null_count == 0, name  # no missing values appear from noise alone
        if pa.types.is_floating(column.type):
            assert not pc.any(pc.is_nan(column)).as_py(), name
