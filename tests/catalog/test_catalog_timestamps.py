"""Timestamp columns in the catalog: their bounds written as times in catalog.json, checked when declared, and
files holding another unit or a time zone refused when the catalog opens (never converted there)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
from rich.console import Console

from saferoom.catalog import Catalog, Column, DatasetInfo, Manifest
from saferoom.catalog.manifest import COLUMN_TYPES, timestamp_seconds, timestamp_text
from saferoom.cli.render import print_dataset
from saferoom.disclosure import protect
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.cost import STRING_BYTES, WIDTHS
from saferoom.errors import InvalidRequest

START, END = timestamp_seconds("2024-01-01 00:00:00"), timestamp_seconds("2024-12-31 23:59:59")


def _info(rows: int = 3) -> DatasetInfo:
    return DatasetInfo(
        name="trips",
        description="Trips (test)",
        file="trips.arrow",
        rows=rows,
        sensitivity="personal",
        privacy_unit="person_id",
        columns=(
            Column("person_id", "int64", min=1, max=100),
            Column("started", "timestamp", "when the trip started", min=START, max=END),
        ),
    )


def _write(directory: Path, started: pa.Array) -> None:
    table = pa.table({"person_id": pa.array([1, 2, 3]), "started": started})
    with pa.OSFile(str(directory / "trips.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    Manifest("test", {"trips": _info()}).save(directory)


def test_bounds_are_written_as_times_and_read_back_as_seconds(tmp_path: Path) -> None:
    Manifest("test", {"trips": _info()}).save(tmp_path)
    stored = json.loads((tmp_path / "catalog.json").read_text(encoding="utf-8"))
    column = stored["datasets"]["trips"]["columns"][1]
    assert (column["type"], column["min"], column["max"]) == ("timestamp", "2024-01-01 00:00:00", "2024-12-31 23:59:59")
    loaded = Manifest.load(tmp_path).dataset("trips").column("started")
    assert (loaded.min, loaded.max) == (1_704_067_200.0, 1_735_689_599.0) == (START, END)
    assert timestamp_text(timestamp_seconds("0001-01-01T00:00:00")) == "0001-01-01 00:00:00"


@pytest.mark.parametrize(
    "written",
    [
        "2024-01-01",  # a date alone
        "2024-01-01 00:00:00.5",  # a fraction of a second
        "2024-01-01 00:00:00+01:00",  # a time zone
        "2024-01-01 00:00:00Z",
        "2024-02-30 00:00:00",  # no such day
        "0000-01-01 00:00:00",  # before year 1
        1_704_067_200,  # seconds: catalog.json writes the time
    ],
)
def test_a_bound_that_is_not_a_time_in_catalog_json_is_refused(tmp_path: Path, written: object) -> None:
    Manifest("test", {"trips": _info()}).save(tmp_path)
    path = tmp_path / "catalog.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored["datasets"]["trips"]["columns"][1]["min"] = written
    path.write_text(json.dumps(stored), encoding="utf-8")
    with pytest.raises(InvalidRequest, match=r"'started': min of a timestamp is written \"YYYY-MM-DD HH:MM:SS\""):
        Manifest.load(tmp_path)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ((START + 0.5, END), "to the second"),
        ((-62_135_596_801.0, END), "years 1 to 9999"),  # a second before 0001-01-01 00:00:00
        ((START, 253_402_300_800.0), "years 1 to 9999"),  # 10000-01-01 00:00:00
        ((START, float("inf")), "years 1 to 9999"),
        ((END, START), "min 2024-12-31 23:59:59 is after max"),
    ],
)
def test_bounds_are_real_whole_second_times_in_order(bounds: tuple[float, float], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        Column("started", "timestamp", min=bounds[0], max=bounds[1])


def test_a_timestamp_file_is_mapped_as_it_is(tmp_path: Path) -> None:
    _write(tmp_path, pa.array([START, START + 3600, END], pa.timestamp("s")))
    with Catalog.open(tmp_path) as catalog:
        assert catalog.table("trips").schema.field("started").type == pa.timestamp("s")


@pytest.mark.parametrize(
    "stored", [pa.timestamp("ms"), pa.timestamp("us"), pa.timestamp("s", tz="UTC"), pa.timestamp("s", tz="+08:00")]
)
def test_another_unit_or_a_time_zone_is_refused_not_converted(tmp_path: Path, stored: pa.DataType) -> None:
    factor = {"s": 1, "ms": 1000, "us": 1_000_000}[stored.unit]
    _write(tmp_path, pa.array([START * factor, (START + 3600) * factor, END * factor], stored))
    message = f"column 'started' is {stored} in the file, timestamp[s] in the manifest"
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        Catalog.open(tmp_path)


def test_personal_times_are_clamped_to_their_bounds_before_anything_reads_them(tmp_path: Path) -> None:
    # A file written by hand (the importer would refuse these times): one an hour early, one a day late.
    _write(tmp_path, pa.array([START - 3600, START + 60, END + 86_400], pa.timestamp("s")))
    started = plan.Col("started")
    counted = plan.Aggregate(
        plan.Project(plan.Scan("trips", ("started",)), (("hour", plan.Call("hour", (started,))),)),
        ("hour",),
        (("n", plan.AggExpr("count")),),
    )
    with Catalog.open(tmp_path) as catalog:
        (protected,) = protect({"by_hour": counted}, catalog.manifest).values()
        assert protected.clamped == {"trips": ("started",)}
        (scan,) = [
            n for n in plan.walk(protected.plan) if isinstance(n, plan.Project) and isinstance(n.input, plan.Scan)
        ]
        (read,) = ArrowEngine(catalog.table).execute_all([scan])
    assert read.table.column("started").cast(pa.int64()).to_pylist() == [START, START + 60, END]


def test_describe_shows_the_bounds_as_times_and_dates() -> None:
    info = _info()
    info = DatasetInfo(**{**info.__dict__, "columns": (*info.columns, Column("born", "date32", min=-25567, max=0))})
    console = Console(record=True, width=200)
    print_dataset(console, info)
    shown = console.export_text()
    assert "[2024-01-01 00:00:00, 2024-12-31 23:59:59]" in shown
    assert "[1900-01-01, 1970-01-01]" in shown


def test_every_column_type_has_a_width_in_the_cost_model() -> None:
    assert {t: WIDTHS.get(t, STRING_BYTES) for t in COLUMN_TYPES if t != "string"} == {
        "int64": 8,
        "float64": 8,
        "bool": 1,
        "date32": 4,
        "timestamp": 8,
    }
