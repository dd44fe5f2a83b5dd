"""Dates in the plan language: literals, parts, truncation, differences; clear errors; the README's exercise
(average price per m² by district and year) in one try, on mock data and through the real server."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog.manifest import Manifest
from saferoom.catalog.mock import write_mock_catalog
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.functions import expr_domain
from saferoom.errors import SaferoomError, UserCodeError
from saferoom.jobs.local import run_local
from saferoom.server import SaferoomServer
from tests.support import Deployment

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_exercise() -> str:
    """The README's date example: the Python block right after its "### Dates" heading."""
    text = README.read_text()
    section = text[text.index("### Dates") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Dates section has a python block"
    return match.group(1)


@pytest.fixture(scope="module")
def ctx(catalog_dir: Path) -> Context:
    return Context(Manifest.load(catalog_dir), ["housing_transactions", "population"])


def _evaluate(expr: object, dates: list[dt.date | None]) -> list[object]:
    table = pa.table({"d": pa.array(dates, pa.date32())})
    node = plan.Project(plan.Input("t", (("d", "date32"),)), (("out", expr._node),))  # type: ignore[attr-defined]
    return ArrowEngine(lambda _: pa.table({}), {"t": table}).execute(node).table.column("out").to_pylist()


def test_parts_truncation_differences_and_literals() -> None:
    d = NS["col"]("d")
    days = [dt.date(2024, 2, 29), dt.date(2023, 12, 31), None]
    assert _evaluate(NS["year"](d), days) == [2024, 2023, None]
    assert _evaluate(NS["month"](d), days) == [2, 12, None]
    assert _evaluate(NS["day"](d), days) == [29, 31, None]
    assert _evaluate(NS["weekday"](d), days) == [4, 7, None]  # a Thursday, a Sunday
    assert _evaluate(NS["date_trunc"](d, "quarter"), days) == [dt.date(2024, 1, 1), dt.date(2023, 10, 1), None]
    assert _evaluate(NS["date_trunc"](d, "week"), days) == [dt.date(2024, 2, 26), dt.date(2023, 12, 25), None]
    assert _evaluate(NS["days_between"](NS["date"]("2024-01-01"), d), days) == [59, -1, None]
    assert _evaluate(NS["add_days"](d, 1), days) == [dt.date(2024, 3, 1), dt.date(2024, 1, 1), None]
    assert _evaluate(d >= NS["date"](2024, 1, 1), days) == [True, False, None]
    assert _evaluate(d.cast("int"), days) == [19782, 19722, None]  # days since 1970-01-01


def _evaluate_times(expr: object, moments: list[dt.datetime | None]) -> list[object]:
    table = pa.table({"t": pa.array(moments, pa.timestamp("s"))})
    node = plan.Project(plan.Input("t", (("t", "timestamp"),)), (("out", expr._node),))  # type: ignore[attr-defined]
    return ArrowEngine(lambda _: pa.table({}), {"t": table}).execute(node).table.column("out").to_pylist()


def test_timestamps_have_parts_truncation_differences_and_literals() -> None:
    t = NS["col"]("t")
    moments = [dt.datetime(2024, 2, 29, 13, 7, 5), dt.datetime(1969, 12, 31, 23, 59, 59), None]
    assert _evaluate_times(NS["hour"](t), moments) == [13, 23, None]
    assert _evaluate_times(NS["minute"](t), moments) == [7, 59, None]
    assert _evaluate_times(NS["second"](t), moments) == [5, 59, None]
    assert _evaluate_times(NS["year"](t), moments) == [2024, 1969, None]
    assert _evaluate_times(NS["weekday"](t), moments) == [4, 3, None]
    assert _evaluate_times(NS["to_date"](t), moments) == [dt.date(2024, 2, 29), dt.date(1969, 12, 31), None]
    hours = _evaluate_times(NS["date_trunc"](t, "hour"), moments)
    assert hours == [dt.datetime(2024, 2, 29, 13), dt.datetime(1969, 12, 31, 23), None]
    noon = NS["timestamp"]("2024-02-29 12:00:00")
    assert _evaluate_times(NS["seconds_between"](noon, t), moments) == [4_025, -1_709_208_001, None]
    assert _evaluate_times(t > NS["timestamp"](2024, 2, 29, 12), moments) == [True, False, None]
    assert _evaluate_times(t.cast("int"), moments) == [1_709_212_025, -1, None]  # seconds since 1970
    assert _evaluate_times(t.cast("str"), moments) == ["2024-02-29 13:07:05", "1969-12-31 23:59:59", None]


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: NS["timestamp"]("2024-02-30 10:00:00"), "a real time"),
        (lambda: NS["timestamp"]("2024-02-01 10:00:00+08:00"), "no time zone"),
        (lambda: NS["timestamp"]("2024-02-01"), "HH:MM:SS"),
        (lambda: NS["date_trunc"](NS["date"]("2024-01-01"), "hour"), "day, hour, minute for timestamps"),
        (lambda: NS["hour"](NS["date"]("2024-01-01")), "needs a timestamp"),
        (lambda: NS["timestamp"](2024, 1, 1) > NS["date"]("2024-01-01"), "to_date(x)"),
        (lambda: NS["timestamp"](2024, 1, 1) > "2024-01-01 00:00:00", 'timestamp("2024-01-31 08:30:00")'),
    ],
)
def test_timestamp_misuse_is_refused_clearly(build, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((UserCodeError, SaferoomError)) as caught:
        expr_domain(build()._node, {})  # the type check every plan passes before it runs
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda c: NS["date"]("2024-02-30"), "a real date"),
        (lambda c: NS["date"](2024, 13, 1), "a real date"),
        (lambda c: NS["date"]("yesterday"), "YYYY-MM-DD"),
        (lambda c: NS["date_trunc"](NS["col"]("date"), "decade"), "year, quarter, month, week, day, hour, minute"),
        (lambda c: c.table("population").with_columns(y=NS["year"](NS["col"]("age"))).schema, "needs a date"),
        (
            lambda c: c.table("housing_transactions").filter(NS["col"]("date") >= "2024-01-01").schema,
            'write a date as date("2024-01-31")',
        ),
    ],
)
def test_misuse_is_refused_clearly(ctx: Context, build, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((UserCodeError, SaferoomError)) as caught:
        build(ctx)
    assert fragment in str(caught.value)


def test_a_date_column_builds_a_plan_by_year(ctx: Context) -> None:
    col, year, date = NS["col"], NS["year"], NS["date"]
    sales = ctx.table("housing_transactions").filter(col("date") >= date("2021-01-01"))
    t = sales.with_columns(year=year(col("date"))).group_by("district", "year").agg(n=NS["count"]())
    assert t.schema == {"district": "string", "year": "int64", "n": "int64"}
    node = plan.from_data(export_outputs({"t": t})["t"]["plan"])
    assert isinstance(node, plan.Aggregate) and node.keys == ("district", "year")


def _package(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "main.py").write_text(_readme_exercise())
    (directory / "saferoom.toml").write_text(
        'name = "price-by-year"\nversion = "1.0.0"\nentrypoint = "main.py:run"\n'
        'datasets = ["housing_transactions"]\n\n[privacy]\nepsilon = { housing_transactions = 0.5 }\n'
    )
    return directory


def _check(table: pa.Table) -> None:
    assert table.column_names[:3] == ["district", "year", "sales"]
    years = set(table.column("year").to_pylist())
    assert years and years <= set(range(2019, 2026))
    assert all(p is None or p > 0 for p in table.column("price_m2").to_pylist())


def test_the_readme_exercise_on_mock_data(dp_catalog_dir: Path, tmp_path: Path) -> None:
    mock = tmp_path / "mock"
    write_mock_catalog(Manifest.load(dp_catalog_dir), mock, rows=3000, seed=1)
    outcome = run_local(_package(tmp_path / "pkg"), mock, {})
    (output,) = outcome.outputs
    assert output.table is not None
    _check(output.table)


def test_the_readme_exercise_through_the_server(server: SaferoomServer, deployment: Deployment, tmp_path: Path) -> None:
    with deployment.client("alice", server.port) as alice, deployment.client("olga", server.port) as olga:
        summary, _ = alice.submit_package(_package(tmp_path / "pkg"))
        olga.approve_package(summary.hash, days=1)
        job = alice.wait(alice.run_job(summary.hash, {}).id, timeout=120)
        assert job.state == "succeeded", job.error_message
        table = alice.get_result(job.id).output("price_by_year").table
    assert table is not None and table.num_rows > 0
    _check(table)
