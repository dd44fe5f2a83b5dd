"""`saferoom datasets import` from every kind of source, for real: files, SQLite and a PostgreSQL server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from saferoom.catalog import Catalog, Manifest
from saferoom.cli.main import cli
from saferoom.importer import import_dataset
from saferoom.importer.sources import BATCH_ROWS, BLOCK_BYTES
from saferoom.importer.versions import history

DECLARATION = """
name = "people"
description = "Residents (test)"
sensitivity = "personal"
privacy_unit = "person_id"
one_row_per_unit = true

[policy]
min_contributors = 10
differential_privacy = true

[[columns]]
name = "person_id"
type = "int64"
description = "person identifier"
min = 1
max = 1000

[[columns]]
name = "age"
type = "int64"
unit = "years"
min = 0
max = 120

[[columns]]
name = "sex"
type = "string"
categories = ["female", "male"]

[[columns]]
name = "income"
type = "float64"
min = 0
max = 1000000
magnitude = true
may_be_null = true

[[columns]]
name = "born"
type = "date32"
min = "1900-01-01"
max = "2026-12-31"
"""

ROWS: dict[str, list[Any]] = {
    "person_id": [1, 2, 3, 4],
    "age": [30, 41, 7, 88],
    "sex": ["female", "male", "male", "female"],
    "income": [52000.5, None, 0.0, 18000.0],
    "born": ["1995-03-01", "1984-11-30", "2018-06-01", "1937-01-15"],
}


def _declaration(tmp_path: Path, text: str = DECLARATION) -> Path:
    path = tmp_path / "people.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _table() -> pa.Table:
    return pa.table({**ROWS, "born": pa.array(ROWS["born"]).cast(pa.date32())})


def _check_published(catalog: Path) -> None:
    with Catalog.open(catalog) as opened:  # the server's own loader: schema checked against the manifest
        table = opened.table("people")
        info = opened.info("people")
    assert table.num_rows == 4 and info.rows == 4
    assert table.column("person_id").to_pylist() == ROWS["person_id"]
    assert table.column("income").to_pylist() == ROWS["income"]
    assert pa.types.is_dictionary(table.schema.field("sex").type)
    assert table.column("sex").to_pylist() == ROWS["sex"]
    assert [str(d) for d in table.column("born").to_pylist()] == ROWS["born"]
    assert info.version is not None and info.file == f"people-{info.version[:16]}.arrow"
    assert info.declaration_hash is not None
    assert info.column("born").min == -25567.0  # 1900-01-01 in days since 1970, as the generated catalog stores
    assert [v.version for v in history(catalog, "people")] == [info.version]


def test_csv(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    pacsv.write_csv(pa.table({**ROWS}), source)
    result = import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    assert result.report.rows_read == 4 and not result.report.problems
    _check_published(tmp_path / "catalog")


def test_parquet(tmp_path: Path) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(_table(), source, row_group_size=2)
    import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _check_published(tmp_path / "catalog")


def test_jsonl(tmp_path: Path) -> None:
    source = tmp_path / "people.jsonl"
    lines = [json.dumps({k: ROWS[k][i] for k in ROWS}) for i in range(4)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _check_published(tmp_path / "catalog")


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_arrow_ipc(tmp_path: Path, stream: bool) -> None:
    source = tmp_path / "people.arrow"
    table = _table()
    with pa.OSFile(str(source), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=3):
                writer.write_batch(batch)
    import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _check_published(tmp_path / "catalog")


def test_sqlite_table_and_query(tmp_path: Path) -> None:
    db = tmp_path / "register.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (person_id INTEGER, age INTEGER, sex TEXT, income REAL, born TEXT)")
        conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", list(zip(*ROWS.values(), strict=True)))
        conn.execute("CREATE TABLE other (x INTEGER)")
    import_dataset(f"sqlite://{db}", _declaration(tmp_path), tmp_path / "catalog", table="people")
    _check_published(tmp_path / "catalog")
    query = "SELECT person_id, age, sex, income, born FROM people ORDER BY person_id"
    second = import_dataset(f"sqlite://{db}", _declaration(tmp_path), tmp_path / "by-query", query=query)
    assert second.report.rows_written == 4


def test_postgresql(tmp_path: Path, postgres_uri: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS people")
        cur.execute("CREATE TABLE people (person_id BIGINT, age INTEGER, sex TEXT, income DOUBLE PRECISION, born DATE)")
        for row in zip(*ROWS.values(), strict=True):
            cur.execute("INSERT INTO people VALUES ($1, $2, $3, $4, $5::date)", row)
        conn.commit()
    import_dataset(postgres_uri, _declaration(tmp_path), tmp_path / "catalog", table="people")
    _check_published(tmp_path / "catalog")
    query = "SELECT * FROM people WHERE age >= 0"
    assert import_dataset(postgres_uri, _declaration(tmp_path), tmp_path / "q", query=query).report.rows_written == 4


def test_spark_dataset_is_written_as_partitioned_parquet(tmp_path: Path) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(_table(), source)
    spark = 'one_row_per_unit = true\nengine = "spark"\npartition_by = "sex"'
    text = DECLARATION.replace("one_row_per_unit = true", spark)
    result = import_dataset(str(source), _declaration(tmp_path, text), tmp_path / "catalog")
    info = Manifest.load(tmp_path / "catalog").dataset("people")
    assert info.engine == "spark" and info.location is not None and info.version == result.version.version
    written = Path(info.location)
    assert sorted(p.name for p in written.iterdir()) == ["sex=female", "sex=male"]
    import pyarrow.dataset as ds

    assert ds.dataset(written, format="parquet", partitioning="hive").count_rows() == 4


def test_a_new_import_is_a_new_version_and_the_old_one_stays(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    pacsv.write_csv(pa.table({**ROWS}), source)
    catalog = tmp_path / "catalog"
    first = import_dataset(str(source), _declaration(tmp_path), catalog)
    pacsv.write_csv(pa.table({**ROWS, "age": [31, 42, 8, 89]}), source)
    second = import_dataset(str(source), _declaration(tmp_path), catalog)
    assert first.version.version != second.version.version
    assert Manifest.load(catalog).dataset("people").version == second.version.version
    assert (catalog / first.version.file).exists() and (catalog / second.version.file).exists()
    assert [v.version for v in history(catalog, "people")] == [first.version.version, second.version.version]
    assert not list(catalog.glob(".*.tmp"))


def test_cli_import_and_history(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    pacsv.write_csv(pa.table({**ROWS}), source)
    runner = CliRunner()
    catalog = tmp_path / "catalog"
    args = ["datasets", "import", str(source), "--declare", str(_declaration(tmp_path)), "--catalog", str(catalog)]
    done = runner.invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "published people version" in done.output
    shown = runner.invoke(cli, ["datasets", "history", "people", "--catalog", str(catalog)])
    assert shown.exit_code == 0, shown.output
    version = Manifest.load(catalog).dataset("people").version
    assert version is not None and version[:16] in shown.output


def _progress(source: str, tmp_path: Path, rows: int, **kwargs: Any) -> list[tuple[int, int | None, str]]:
    """The progress reports of importing ``source`` (a declaration allowing ``rows`` units)."""
    calls: list[tuple[int, int | None, str]] = []
    text = DECLARATION.replace("max = 1000\n", f"max = {rows}\n", 1)
    result = import_dataset(
        source, _declaration(tmp_path, text), tmp_path / "catalog", progress=lambda *a: calls.append(a), **kwargs
    )
    assert result.report.rows_written == rows
    return calls


def _many(rows: int) -> pa.Table:
    i = np.arange(1, rows + 1)
    return pa.table(
        {
            "person_id": i,
            "age": i % 100,
            "sex": np.array(["female", "male"])[i % 2],
            "income": i * 0.5,
            "born": pa.array(i % 20000, pa.int32()).cast(pa.date32()),
        }
    )


def test_progress_of_a_csv_file_is_in_bytes_up_to_its_size(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    rows = 1_000_000
    pacsv.write_csv(_many(rows), source)
    assert source.stat().st_size > 2 * BLOCK_BYTES  # three blocks, three reports
    calls = _progress(str(source), tmp_path, rows)
    done = [d for d, _, _ in calls]
    assert len(calls) >= 3 and done == sorted(set(done)) and done[-1] == source.stat().st_size
    assert {(total, unit) for _, total, unit in calls} == {(source.stat().st_size, "bytes")}


def test_progress_of_a_parquet_file_is_in_rows_up_to_its_row_count(tmp_path: Path) -> None:
    source = tmp_path / "people.parquet"
    rows = 2 * BATCH_ROWS + 1000
    pq.write_table(_many(rows), source)
    calls = _progress(str(source), tmp_path, rows)
    assert calls == [(BATCH_ROWS, rows, "rows"), (2 * BATCH_ROWS, rows, "rows"), (rows, rows, "rows")]


def test_progress_of_a_sql_query_has_no_total(tmp_path: Path) -> None:
    db = tmp_path / "register.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (person_id INTEGER, age INTEGER, sex TEXT, income REAL, born TEXT)")
        conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", list(zip(*ROWS.values(), strict=True)))
    calls = _progress(f"sqlite://{db}", tmp_path, 4, table="people")
    assert calls and calls[-1][0] == 4 and {(total, unit) for _, total, unit in calls} == {(None, "rows")}
