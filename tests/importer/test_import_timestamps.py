"""Timestamp columns through `saferoom datasets import` and `propose`, from every kind of source, for real.

A timestamp is wall-clock time to the second without a time zone (Arrow timestamp[s]). Text is taken in the
form "YYYY-MM-DD HH:MM:SS" (or with a T) only; a timestamp column of another unit is converted when every value
is a whole second; a fraction of a second is a wrong value (dropping it would change the data), and a time zone
or numbers refuse the import: nothing is shifted or guessed.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saferoom.catalog import Catalog, Manifest
from saferoom.catalog.manifest import timestamp_seconds
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.duckdb_engine import DuckDBEngine
from saferoom.importer import (
    DeclarationError,
    ImportRefused,
    import_dataset,
    load_declaration,
    open_source,
    propose_declaration,
)
from saferoom.importer.validate import Validator

DECLARATION = """
name = "trips"
description = "Bus trips (test)"
sensitivity = "personal"
privacy_unit = "card_id"

[policy]
min_contributors = 10

[[columns]]
name = "card_id"
type = "int64"
min = 1
max = 1000

[[columns]]
name = "boarded"
type = "timestamp"
description = "when the card was tapped on boarding"
min = "2024-01-01 00:00:00"
max = "2024-12-31 23:59:59"

[[columns]]
name = "alighted"
type = "timestamp"
min = 2024-01-01 00:00:00
max = 2025-01-01T23:59:59
may_be_null = true
"""
BOARDED = ["2024-01-31 08:30:00", "2024-06-01 17:05:09", "2024-12-31 23:59:59", "2024-01-01 00:00:00"]
ALIGHTED = ["2024-01-31 08:51:00", None, "2025-01-01 00:20:00", "2024-01-01 00:10:00"]


def _declaration(tmp_path: Path, text: str = DECLARATION) -> Path:
    path = tmp_path / "trips.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _seconds(texts: Sequence[str | None]) -> list[int | None]:
    return [None if t is None else timestamp_seconds(t) for t in texts]


def _times(texts: Sequence[str | None], unit: str = "s") -> pa.Array:
    per_second = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[unit]
    return pa.array([None if s is None else s * per_second for s in _seconds(texts)], pa.timestamp(unit))


def _published(catalog: Path) -> pa.Table:
    with Catalog.open(catalog) as opened:  # the server's own loader: timestamp[s] without a zone, or refused
        table = opened.table("trips")
    assert table.schema.field("boarded").type == pa.timestamp("s")
    assert table.column("boarded").cast(pa.int64()).to_pylist() == _seconds(BOARDED)
    assert table.column("alighted").cast(pa.int64()).to_pylist() == _seconds(ALIGHTED)
    return table


def _csv(tmp_path: Path, boarded: list[str], alighted: list[str | None] | None = None) -> Path:
    alighted = alighted if alighted is not None else ["2024-02-01 00:00:00"] * len(boarded)
    lines = [f"{i},{b},{a or ''}" for i, (b, a) in enumerate(zip(boarded, alighted, strict=True), 1)]
    source = tmp_path / "trips.csv"
    source.write_text("card_id,boarded,alighted\n" + "".join(f"{line}\n" for line in lines), encoding="utf-8")
    return source


def _refused(tmp_path: Path, source: Path | str, **options: Any) -> ImportRefused:
    with pytest.raises(ImportRefused) as refused:
        import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog", **options)
    assert not (tmp_path / "catalog" / "catalog.json").exists()  # nothing published
    return refused.value


def test_bounds_are_declared_as_text_or_toml_times(tmp_path: Path) -> None:
    info = load_declaration(_declaration(tmp_path)).info
    assert (info.column("boarded").min, info.column("boarded").max) == (1_704_067_200.0, 1_735_689_599.0)
    assert info.column("alighted").max == timestamp_seconds("2025-01-01 23:59:59")


@pytest.mark.parametrize(
    "bound",
    [
        '"2024-01-01"',  # a date alone: which second of it?
        "2024-01-01",  # the same as a TOML date
        '"2024-01-01 00:00:00.5"',
        "2024-01-01 00:00:00.5",
        '"2024-01-01 00:00:00+08:00"',
        "2024-01-01T00:00:00+08:00",  # a TOML offset date-time
        "2024-01-01T00:00:00Z",
        '"2024-02-30 00:00:00"',
        '"0000-01-01 00:00:00"',
        "1704067200",  # seconds: write the time
    ],
)
def test_a_bound_that_is_not_a_wall_clock_second_is_refused(tmp_path: Path, bound: str) -> None:
    text = DECLARATION.replace('min = "2024-01-01 00:00:00"', f"min = {bound}")
    with pytest.raises(DeclarationError, match=r"columns\[2\]\.min: a timestamp bound"):
        load_declaration(_declaration(tmp_path, text))


def test_min_after_max_is_refused(tmp_path: Path) -> None:
    text = DECLARATION.replace('max = "2024-12-31 23:59:59"', 'max = "2023-12-31 23:59:59"')
    with pytest.raises(DeclarationError, match="min is above max"):
        load_declaration(_declaration(tmp_path, text))


def test_csv_with_a_space_or_a_t(tmp_path: Path) -> None:
    written = [b if i % 2 else b.replace(" ", "T") for i, b in enumerate(BOARDED)]
    result = import_dataset(str(_csv(tmp_path, written, ALIGHTED)), _declaration(tmp_path), tmp_path / "catalog")
    assert result.report.rows_written == 4 and not result.report.problems
    _published(tmp_path / "catalog")
    shown = json.loads((tmp_path / "catalog" / "catalog.json").read_text(encoding="utf-8"))
    assert shown["datasets"]["trips"]["columns"][1]["min"] == "2024-01-01 00:00:00"


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_parquet_and_arrow_in_any_unit_of_whole_seconds(tmp_path: Path, unit: str, suffix: str) -> None:
    table = pa.table({"card_id": [1, 2, 3, 4], "boarded": _times(BOARDED, unit), "alighted": _times(ALIGHTED, unit)})
    source = tmp_path / f"trips{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, source, row_group_size=3)
    else:
        with pa.OSFile(str(source), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _published(tmp_path / "catalog")


def test_jsonl(tmp_path: Path) -> None:
    source = tmp_path / "trips.jsonl"
    pairs = enumerate(zip(BOARDED, ALIGHTED, strict=True), 1)
    rows = [{"card_id": i, "boarded": b, "alighted": a} for i, (b, a) in pairs]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _published(tmp_path / "catalog")


def test_jsonl_text_is_judged_by_the_importer_not_the_json_reader(tmp_path: Path) -> None:
    # The JSON reader alone would take "+01:00" to UTC (07:30) and a date alone for its midnight.
    source = tmp_path / "trips.jsonl"
    boarded = ["2024-01-31 08:30:00", "2024-01-31T08:30:00+01:00", "2024-02-01", "2024-03-01 10:00:00"]
    rows = [{"card_id": i, "boarded": b, "alighted": None} for i, b in enumerate(boarded, 1)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    report = _refused(tmp_path, source).report
    assert report is not None and report.problems == {("boarded", "wrong type"): 2}
    assert report.examples[("boarded", "wrong type")] == [2, 3]


def test_jsonl_times_are_text_in_every_block_and_a_later_block_may_lack_a_nullable_one(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"card_id": i, "boarded": "2024-03-01 10:00:00", "alighted": "2024-03-01 10:20:00"} for i in range(1, 201)
    ]
    rows[150]["boarded"] = "2024-03-01T10:00:00+01:00"  # in a later block: its reader alone would move it to UTC
    rows[160]["boarded"] = 1709287200  # seconds since 1970 among text: a wrong value, not an unreadable file
    for row in rows[170:]:
        del row["alighted"]  # the last blocks have no such key: null there
    source = tmp_path / "trips.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    info = load_declaration(_declaration(tmp_path)).info
    with (
        Validator(info, (), False, False) as validator,
        open_source(
            str(source), string_columns=("card_id",), timestamp_columns=("boarded", "alighted"), block_bytes=600
        ) as opened,
        pytest.raises(ImportRefused),
    ):
        list(validator.batches(opened.batches))
    assert validator.report.rows_read == 200
    assert validator.report.problems == {("boarded", "wrong type"): 2}
    assert validator.report.examples == {("boarded", "wrong type"): [151, 161]}


def test_jsonl_without_the_column_is_refused_as_missing(tmp_path: Path) -> None:
    source = tmp_path / "trips.jsonl"
    source.write_text("".join(json.dumps({"card_id": i, "boarded": b}) + "\n" for i, b in enumerate(BOARDED, 1)))
    with pytest.raises(ImportRefused, match="declared but not in the data: alighted"):
        import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")


def test_sqlite_text(tmp_path: Path) -> None:
    db = tmp_path / "fares.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE trips (card_id INTEGER, boarded TEXT, alighted DATETIME)")
        rows = [(i, b, a) for i, (b, a) in enumerate(zip(BOARDED, ALIGHTED, strict=True), 1)]
        conn.executemany("INSERT INTO trips VALUES (?, ?, ?)", rows)
    import_dataset(f"sqlite://{db}", _declaration(tmp_path), tmp_path / "catalog", table="trips")
    _published(tmp_path / "catalog")


def test_sqlite_unix_seconds_are_refused_not_guessed(tmp_path: Path) -> None:
    db = tmp_path / "fares.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE trips (card_id INTEGER, boarded INTEGER, alighted TEXT)")
        conn.executemany("INSERT INTO trips VALUES (?, ?, NULL)", [(i, s) for i, s in enumerate(_seconds(BOARDED), 1)])
    with pytest.raises(ImportRefused, match="'boarded' is declared timestamp but the source holds int64"):
        import_dataset(f"sqlite://{db}", _declaration(tmp_path), tmp_path / "catalog", table="trips")
    query = "SELECT card_id, datetime(boarded, 'unixepoch') AS boarded, alighted FROM trips"
    done = import_dataset(f"sqlite://{db}", _declaration(tmp_path), tmp_path / "catalog", query=query)
    assert done.report.rows_written == 4  # converted where the owner says how


def _postgres_table(postgres_uri: str, zone_type: str, alighted: str = "timestamp") -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS trips")
        cur.execute(f"CREATE TABLE trips (card_id BIGINT, boarded {zone_type}, alighted {alighted})")
        for i, (b, a) in enumerate(zip(BOARDED, ALIGHTED, strict=True), 1):
            cur.execute(f"INSERT INTO trips VALUES ($1, $2::{zone_type}, $3::{alighted})", (i, b, a))
        conn.commit()


def test_postgresql_timestamp_without_time_zone(tmp_path: Path, postgres_uri: str) -> None:
    _postgres_table(postgres_uri, "timestamp without time zone", "timestamp(0)")
    import_dataset(postgres_uri, _declaration(tmp_path), tmp_path / "catalog", table="trips")
    _published(tmp_path / "catalog")


def test_postgresql_timestamptz_is_refused_until_converted_in_the_query(tmp_path: Path, postgres_uri: str) -> None:
    _postgres_table(postgres_uri, "timestamptz")
    with pytest.raises(ImportRefused, match=r"'boarded' holds times with the time zone UTC: .* AT TIME ZONE"):
        import_dataset(postgres_uri, _declaration(tmp_path), tmp_path / "catalog", table="trips")
    assert not (tmp_path / "catalog" / "catalog.json").exists()
    # The session's zone is UTC here, so the values inserted as text come back as they were written.
    query = "SELECT card_id, boarded AT TIME ZONE 'UTC' AS boarded, alighted FROM trips"
    import_dataset(postgres_uri, _declaration(tmp_path), tmp_path / "catalog", query=query)
    _published(tmp_path / "catalog")


# (CSV values of "boarded" among good ones, issue, row numbers): every way a timestamp can be wrong.
CASES = {
    "a date alone": (["2024-01-31"], "wrong type", [2]),
    "minutes only": (["2024-01-31 08:30"], "wrong type", [2]),
    "a fraction of a second": (["2024-01-31 08:30:00.250"], "wrong type", [2]),
    "a time zone": (["2024-01-31T08:30:00Z", "2024-01-31 08:30:00+08:00"], "wrong type", [2, 3]),
    "no such day": (["2024-02-30 08:30:00", "2023-02-29 00:00:00"], "wrong type", [2, 3]),
    "no such second": (["2024-01-31 24:00:00", "2024-12-31 23:59:60"], "wrong type", [2, 3]),
    "year 0": (["0000-01-01 00:00:00"], "wrong type", [2]),
    "not a time": (["soon", " 2024-01-31 08:30:00", "2024-1-31 08:30:00"], "wrong type", [2, 3, 4]),
    "null": ([""], "null", [2]),
    "below min": (["2023-12-31 23:59:59"], "below min", [2]),
    "above max": (["2025-01-01 00:00:00"], "above max", [2]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_wrong_timestamp_is_counted_with_its_rows(tmp_path: Path, case: str) -> None:
    bad, issue, rows = CASES[case]
    source = _csv(tmp_path, ["2024-03-01 10:00:00", *bad, "2024-03-01 11:00:00"])
    report = _refused(tmp_path, source).report
    assert report is not None and report.problems == {("boarded", issue): len(rows)}
    assert report.examples[("boarded", issue)] == rows
    assert f"boarded: {len(rows)} row(s) with {issue}" in "\n".join(report.lines())


def test_clamp_does_not_move_a_time_and_drop_invalid_drops_it(tmp_path: Path) -> None:
    source = _csv(tmp_path, ["2024-03-01 10:00:00", "2025-06-01 00:00:00", "2024-03-01 11:00:00.5"])
    report = _refused(tmp_path, source, clamp=True).report
    assert report is not None and report.problems == {("boarded", "above max"): 1, ("boarded", "wrong type"): 1}
    assert not report.clamped
    done = import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog", clamp=True, drop_invalid=True)
    assert (done.report.rows_written, done.report.dropped) == (1, 2)


def test_a_fraction_of_a_second_in_parquet_is_a_wrong_value(tmp_path: Path) -> None:
    boarded = pa.array([timestamp_seconds(b) * 1000 for b in BOARDED], pa.timestamp("ms"))
    boarded = pa.concat_arrays([boarded.slice(0, 2), pa.array([boarded[2].value + 1], boarded.type), boarded[3:]])
    source = tmp_path / "trips.parquet"
    pq.write_table(pa.table({"card_id": [1, 2, 3, 4], "boarded": boarded, "alighted": _times(ALIGHTED, "ms")}), source)
    report = _refused(tmp_path, source).report
    assert report is not None and report.problems == {("boarded", "wrong type"): 1}
    assert report.examples[("boarded", "wrong type")] == [3]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai", "+01:00"])
def test_a_time_zone_in_parquet_refuses_the_import(tmp_path: Path, zone: str) -> None:
    source = tmp_path / "trips.parquet"
    boarded = _times(BOARDED).cast(pa.timestamp("s", tz=zone))
    pq.write_table(pa.table({"card_id": [1, 2, 3, 4], "boarded": boarded, "alighted": _times(ALIGHTED)}), source)
    message = f"'boarded' holds times with the time zone {zone}: a timestamp column"
    with pytest.raises(ImportRefused, match=re.escape(message)):
        import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")


@pytest.mark.parametrize(
    "values", [pa.array([1, 2, 3, 4]), pa.array([1.0, 2, 3, 4]), pa.array([0, 1, 2, 3], pa.date32())]
)
def test_numbers_or_dates_for_a_timestamp_refuse_the_import(tmp_path: Path, values: pa.Array) -> None:
    source = tmp_path / "trips.parquet"
    pq.write_table(pa.table({"card_id": [1, 2, 3, 4], "boarded": values, "alighted": _times(ALIGHTED)}), source)
    with pytest.raises(ImportRefused, match=re.escape(f"declared timestamp but the source holds {values.type}:")):
        import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")


def test_propose_marks_the_times_it_read(tmp_path: Path) -> None:
    draft = propose_declaration(str(_csv(tmp_path, BOARDED, ALIGHTED)), "trips")
    assert '[[columns]]\nname = "boarded"\ntype = "timestamp"' in draft
    assert 'min = "2024-01-01 00:00:00"  # FROM DATA' in draft and 'max = "2024-12-31 23:59:59"  # FROM DATA' in draft
    assert '"columns.boarded.min", "columns.boarded.max"' in draft
    with pytest.raises(DeclarationError, match="values taken from the data"):
        import_dataset(str(tmp_path / "trips.csv"), _declaration(tmp_path, draft), tmp_path / "catalog")
    # Replaced by public bounds (the card scheme's numbers, the service's first and last hour), the draft imports.
    public = {
        "min": ["1", '"2023-06-01 05:00:00"', '"2023-06-01 05:00:00"'],
        "max": ["1000", *['"2025-06-30 23:00:00"'] * 2],
    }
    lines = []
    for line in draft.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("from_data"):
            line = "from_data = []"
        elif "# FROM DATA" in line:
            key = line.split(" = ")[0]
            line = f"{key} = {public[key].pop(0)}"
        lines.append(line)
    text = "\n".join(lines).replace('privacy_unit = ""', 'privacy_unit = "card_id"')
    result = import_dataset(str(tmp_path / "trips.csv"), _declaration(tmp_path, text), tmp_path / "catalog")
    assert result.info.column("boarded").max == timestamp_seconds("2025-06-30 23:00:00")


def test_propose_of_sub_seconds_and_zones(tmp_path: Path) -> None:
    source = tmp_path / "trips.parquet"
    boarded = pa.array([-1500, 1500], pa.timestamp("ms"))  # around 1970-01-01 00:00:00, both sides
    zoned = pa.array([0, 60], pa.timestamp("s", tz="Asia/Shanghai"))
    pq.write_table(pa.table({"card_id": [1, 2], "boarded": boarded, "alighted": zoned}), source)
    draft = propose_declaration(str(source), "trips")
    assert 'min = "1969-12-31 23:59:58"  # FROM DATA' in draft  # whole seconds around every value
    assert 'max = "1970-01-01 00:00:02"  # FROM DATA' in draft
    assert "# time zone Asia/Shanghai: convert to wall-clock time in the source (the import refuses it)" in draft


def test_spark_dataset_is_written_as_parquet_times_without_a_zone(tmp_path: Path) -> None:
    spark = 'privacy_unit = "card_id"\nengine = "spark"'
    text = DECLARATION.replace('privacy_unit = "card_id"', spark)
    import_dataset(str(_csv(tmp_path, BOARDED, ALIGHTED)), _declaration(tmp_path, text), tmp_path / "catalog")
    info = Manifest.load(tmp_path / "catalog").dataset("trips")
    assert info.location is not None
    (written,) = Path(info.location).rglob("*.parquet")
    # Parquet has no seconds: milliseconds, not adjusted to UTC, which Spark reads as timestamp_ntz.
    field = pq.read_schema(written).field("boarded")
    assert field.type == pa.timestamp("ms") and field.type.tz is None
    logical = pq.ParquetFile(written).schema.column(1).logical_type
    assert (logical.type, json.loads(logical.to_json())["isAdjustedToUTC"]) == ("TIMESTAMP", False)
    milliseconds = pq.read_table(written).column("boarded").cast(pa.int64()).to_pylist()
    assert milliseconds == [timestamp_seconds(b) * 1000 for b in BOARDED]


def trip_plans() -> list[plan.Node]:
    """Plans over the trips that read their times every way (parts, text, differences, a filter, an aggregate)."""
    boarded, alighted = plan.Col("boarded"), plan.Col("alighted")
    scan = plan.Scan("trips", ("card_id", "boarded", "alighted"))
    later = plan.Filter(scan, plan.Call("ge", (boarded, plan.Call("timestamp", (plan.Lit("2024-06-01 17:05:09"),)))))
    project = plan.Project(
        later,
        (
            ("card_id", plan.Col("card_id")),
            ("hour", plan.Call("hour", (boarded,))),
            ("second", plan.Call("second", (boarded,))),
            ("text", plan.Call("cast_str", (boarded,))),
            ("ride", plan.Call("seconds_between", (boarded, alighted))),
        ),
    )
    by_hour = plan.Aggregate(
        plan.Project(scan, (("hour", plan.Call("hour", (boarded,))), ("boarded", boarded))),
        ("hour",),
        (("n", plan.AggExpr("count")), ("first", plan.AggExpr("min", plan.Col("boarded")))),
    )
    return [project, by_hour]


def test_an_imported_timestamp_reads_the_same_on_arrow_and_duckdb(tmp_path: Path) -> None:
    import_dataset(str(_csv(tmp_path, BOARDED * 2, ALIGHTED * 2)), _declaration(tmp_path), tmp_path / "catalog")
    with Catalog.open(tmp_path / "catalog") as catalog:
        for p in trip_plans():  # each output's first column is a key: sorted by it, the tables are equal
            arrow, duck = (e.execute(p).table for e in (ArrowEngine(catalog.table), DuckDBEngine(catalog.table)))
            key = arrow.column_names[0]
            assert arrow.num_rows > 0 and arrow.sort_by(key).equals(duck.sort_by(key))
