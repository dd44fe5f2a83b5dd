"""Stored statistics: computed when a version is written (the generated city, an import), read back only for the
bytes they describe, and used by the engine to skip clamps that cannot change a value (the same tables)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.catalog import Catalog, Manifest, generate_catalog
from saferoom.catalog.statistics import ColumnStatistics, Statistics, sidecar
from saferoom.disclosure import protect
from saferoom.engine import ArrowEngine, plan
from saferoom.importer import import_dataset

DECLARATION = """
name = "people"
description = "Residents (test)"
sensitivity = "personal"
privacy_unit = "person_id"
one_row_per_unit = true

[[columns]]
name = "person_id"
type = "int64"
min = 1
max = 100

[[columns]]
name = "income"
type = "float64"
min = 0
max = 1000
may_be_null = true
"""


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("stats-city")
    generate_catalog(directory, scale=2_000, seed=3, differential_privacy=False, output_checking=False)
    return directory


def test_the_generated_city_has_statistics_of_every_numeric_column(city: Path) -> None:
    with Catalog.open(city) as catalog:
        for name in catalog.names():
            table = catalog.table(name)
            stored = catalog.statistics(name)
            numeric = [f.name for f in table.schema if f.type in (pa.int64(), pa.float64())]
            assert sorted(stored) == sorted(numeric)
            for column in numeric:
                extremes = pc.min_max(table.column(column))
                assert stored[column].low == extremes["min"].as_py()
                assert stored[column].high == extremes["max"].as_py()
                assert stored[column].nulls == table.column(column).null_count


def test_an_import_writes_statistics_bound_to_its_version(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("person_id,income\n1,10.5\n2,\n3,999\n", encoding="utf-8")
    declaration = tmp_path / "people.toml"
    declaration.write_text(DECLARATION, encoding="utf-8")
    result = import_dataset(str(source), declaration, tmp_path / "catalog")
    info = Manifest.load(tmp_path / "catalog").dataset("people")
    assert (tmp_path / "catalog" / sidecar(info.file)).exists()
    with Catalog.open(tmp_path / "catalog") as catalog:
        assert catalog.statistics("people") == {
            "person_id": ColumnStatistics(1, 3, 0, 0),
            "income": ColumnStatistics(10.5, 999.0, 1, 0),
        }
    assert result.version.version == info.version
    assert "income" not in Manifest.load(tmp_path / "catalog").to_data()["datasets"]["people"].get("statistics", {})


def test_statistics_count_nan_and_infinity() -> None:
    found = Statistics(pa.schema([("x", pa.float64()), ("i", pa.int64())]))
    found.add(pa.record_batch({"x": [math.nan, 1.0, None], "i": pa.array([None, None, None], pa.int64())}))
    found.add(pa.record_batch({"x": [math.inf, -2.0, math.nan], "i": pa.array([5, None, -7], pa.int64())}))
    assert found.result() == {"x": ColumnStatistics(-2.0, math.inf, 1, 2), "i": ColumnStatistics(-7, 5, 4, 0)}
    assert not found.result()["x"].within(-10, 10)  # NaN (and infinity) are no number within bounds
    assert found.result()["i"].within(-7, 5) and not found.result()["i"].within(-6.5, 5)
    only_nan = Statistics(pa.schema([("x", pa.float64())]))
    only_nan.add(pa.record_batch({"x": [math.nan]}))
    assert only_nan.result()["x"] == ColumnStatistics(None, None, 0, 1)


def test_released_plans_are_the_same_with_and_without_statistics(city: Path) -> None:
    """The engine skips the clamps the statistics allow, and every released table stays the same."""
    from saferoom.api import Context, export_outputs, namespace

    scope: dict[str, Any] = dict(namespace())
    exec(
        "def run(ctx):\n"
        "    people = ctx.table('population')\n"
        "    adults = people.filter(col('age') >= 18)\n"
        "    return {\n"
        "        'mean': people.group_by('district').agg(n=count(), income=mean('income'), age=mean('age')),\n"
        "        'sum': adults.group_by('sex').agg(s=sum('household_size'), m=median('income')),\n"
        "        'band': people.with_columns(b=histogram(col('lat'), 24.3, 24.95, 5)).group_by('b').agg(n=count()),\n"
        "    }\n",
        scope,
    )
    with Catalog.open(city) as catalog:
        outputs = export_outputs(scope["run"](Context(catalog.manifest, ["population"])))
        nodes = {k: plan.from_data(v["plan"]) for k, v in outputs.items()}
        plans = [p.plan for p in protect(nodes, catalog.manifest).values()]
        info, stored = catalog.info("population"), catalog.statistics("population")
        for column in ("income", "age", "household_size", "lat"):  # so these clamps are skipped
            declared = info.column(column)
            assert declared.min is not None and declared.max is not None
            assert stored[column].within(declared.min, declared.max)
        skipped = ArrowEngine(catalog.table, statistics=catalog.statistics).execute_all(plans)
        clamped = ArrowEngine(catalog.table).execute_all(plans)
        for a, b in zip(skipped, clamped, strict=True):
            assert a.table.equals(b.table) and a.dropped == b.dropped


def test_statistics_are_what_lets_a_clamp_be_skipped() -> None:
    """Why they must describe the mapped bytes: statistics that lie make the engine return values beyond the
    bounds (the catalog only ever hands the engine statistics it has checked against the file)."""
    table = pa.table({"x": pa.array([5.0, 500.0, None])})
    clamp = plan.Project(
        plan.Scan("t", ("x",)), (("x", plan.Call("clamp", (plan.Col("x"), plan.Lit(0), plan.Lit(10)))),)
    )
    lying = {"x": ColumnStatistics(0.0, 10.0, 1, 0)}
    honest = {"x": ColumnStatistics(5.0, 500.0, 1, 0)}

    def run(stats: dict[str, ColumnStatistics]) -> list[object]:
        engine = ArrowEngine({"t": table}.__getitem__, statistics=lambda _: stats)
        return engine.execute(clamp).table.column("x").to_pylist()

    assert run(lying) == [5.0, 500.0, None]
    assert run(honest) == [5.0, 10.0, None]
    assert ArrowEngine({"t": table}.__getitem__).execute(clamp).table.column("x").to_pylist() == [5.0, 10.0, None]
