"""Red team: data that does not match its declaration never reaches the catalog, and the owner learns where.

Each case is a file an owner might really have (or an attacker with write access to an export might plant):
the import is refused with counts per column and row numbers, and nothing is published: no catalog.json, no
version file, no temporary file left behind. Layer that must stop each: saferoom.importer (validate, units,
sources, lines, declaration).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saferoom.catalog import Manifest
from saferoom.catalog.statistics import sidecar
from saferoom.importer import DeclarationError, ImportRefused, SourceError, import_dataset, propose_declaration

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
name = "age"
type = "int64"
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
"""
HEADER = "person_id,age,sex,income\n"
GOOD = ["1,30,female,100.0", "2,40,male,200.0", "3,50,female,300.0"]


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    source = tmp_path / "people.csv"
    source.write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    return source


def _write_jsonl(tmp_path: Path, rows: list[str]) -> Path:
    """The CSV ``rows`` as JSON Lines: numbers as JSON numbers, other text as strings, an empty field left out."""
    source = tmp_path / "people.jsonl"
    names = HEADER.strip().split(",")
    lines = []
    for row in rows:
        fields = zip(names, row.split(","), strict=True)
        lines.append(json.dumps({k: json.loads(v) if NUMBER.fullmatch(v) else v for k, v in fields if v != ""}))
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return source


WRITERS = {"csv": _write, "jsonl": _write_jsonl}
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?(e[0-9]+)?")


def _declaration(tmp_path: Path, text: str = DECLARATION) -> Path:
    path = tmp_path / "people.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _nothing_published(catalog: Path) -> None:
    visible = sorted(p.name for p in catalog.iterdir()) if catalog.exists() else []
    assert visible in ([], [".catalog.lock"]), visible


# (rows, column, issue, row numbers): one bad value of each kind among good rows, as CSV and as JSON Lines (where
# {"age": "forty"} among numbers is a block pyarrow's JSON reader cannot read: importer.lines reads it again).
CASES = {
    "wrong type": (["1,30,female,100", "2,forty,male,200", "3,50,female,3e2"], "age", "wrong type", [2]),
    "float where int": (["1,30.5,female,1", "2,40,male,2"], "age", "wrong type", [1]),
    "below min": ([*GOOD, "4,-1,male,1"], "age", "below min", [4]),
    "above max": (["1,121,male,1", *GOOD[1:]], "age", "above max", [1]),
    "unknown category": ([*GOOD, "4,20,other,5"], "sex", "unknown category", [4]),
    "null": ([*GOOD, "4,,male,5"], "age", "null", [4]),
    "null unit": ([*GOOD, ",20,male,5"], "person_id", "null unit", [4]),
    "duplicate unit": ([*GOOD, "2,20,male,5", "5,1,male,1", "2,3,male,2"], "person_id", "duplicate unit", [4, 6]),
    "NaN": ([*GOOD, "4,20,male,nan"], "income", "NaN", [4]),
    "infinity above max": ([*GOOD, "4,20,male,inf"], "income", "above max", [4]),
    "unit out of bounds": ([*GOOD, "101,20,male,5"], "person_id", "above max", [4]),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_refuses_the_import_and_says_where(tmp_path: Path, case: str, kind: str) -> None:
    rows, column, issue, numbers = CASES[case]
    catalog = tmp_path / "catalog"
    with pytest.raises(ImportRefused) as refused:
        import_dataset(str(WRITERS[kind](tmp_path, rows)), _declaration(tmp_path), catalog)
    report = refused.value.report
    assert report is not None
    assert report.problems == {(column, issue): len(numbers)}
    assert report.examples[(column, issue)] == numbers
    assert any(f"{column}: {len(numbers)} row(s) with {issue}" in line for line in report.lines())
    _nothing_published(catalog)


# How the privacy unit is declared: a bitmap holds a bounded integer; anything else is spilled (importer.units).
UNITS = {
    "bounded int": ('type = "int64"\nmin = 1\nmax = 1000000', lambda i: i),
    "unbounded int": ('type = "int64"', lambda i: i * 10**12 - 5 * 10**17),
    "string": ('type = "string"', lambda i: f"91350200{i:010d}"),  # an 18-character credit code
}
SPREAD_ROWS = 600_000  # three Parquet batches (BATCH_ROWS rows each)
REPEATS = {5: 3, 300_001: 17, 599_990: 262_150}  # row -> the earlier row whose unit it repeats


def _units_source(tmp_path: Path, kind: str) -> tuple[Path, Path, list[object]]:
    """A Parquet file of SPREAD_ROWS rows whose unit repeats at REPEATS, with its declaration."""
    make = UNITS[kind][1]
    units = [make(i) for i in range(1, SPREAD_ROWS + 1)]
    for row, earlier in REPEATS.items():
        units[row - 1] = units[earlier - 1]
    if kind == "string":
        units[400_000 - 1] = "X1"  # a batch of strings of mixed lengths (hashed another way) against fixed ones
    n = len(units)
    table = pa.table({"person_id": units, "age": [30] * n, "sex": ["male"] * n, "income": [1.0] * n})
    source = tmp_path / "people.parquet"
    pq.write_table(table, source)
    text = DECLARATION.replace('type = "int64"\nmin = 1\nmax = 100', UNITS[kind][0], 1)
    return source, _declaration(tmp_path, text), units


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_duplicate_units_are_found_across_batches(tmp_path: Path, kind: str) -> None:
    source, declaration, _ = _units_source(tmp_path, kind)
    with pytest.raises(ImportRefused) as refused:
        import_dataset(str(source), declaration, tmp_path / "catalog")
    report = refused.value.report
    assert report is not None and report.rows_read == SPREAD_ROWS
    assert report.problems == {("person_id", "duplicate unit"): len(REPEATS)}
    assert report.examples[("person_id", "duplicate unit")] == sorted(REPEATS)
    _nothing_published(tmp_path / "catalog")


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_drop_invalid_drops_the_later_rows_of_a_repeated_unit(tmp_path: Path, kind: str) -> None:
    source, declaration, units = _units_source(tmp_path, kind)
    catalog = tmp_path / "catalog"
    result = import_dataset(str(source), declaration, catalog, drop_invalid=True)
    assert result.report.dropped == len(REPEATS) and result.report.rows_written == SPREAD_ROWS - len(REPEATS)
    import pyarrow.ipc as ipc

    published = ipc.open_file(pa.memory_map(str(catalog / result.info.file))).read_all().column("person_id")
    assert published.to_pylist() == [u for row, u in enumerate(units, 1) if row not in REPEATS]  # in order
    assert sorted(p.name for p in catalog.iterdir() if p.name.startswith(".")) == [".catalog.lock"]  # no spill left


def test_distinct_units_are_never_taken_for_repeats(tmp_path: Path) -> None:
    # Two different 2048-character strings with the same 64-bit hash (Thue-Morse: a polynomial hash modulo 2**64
    # with any odd base cannot tell them apart), among many distinct codes: every row is published.
    morse = [0]
    for _ in range(11):
        morse += [1 - bit for bit in morse]
    colliding = ["".join("ab"[bit] for bit in morse), "".join("ba"[bit] for bit in morse)]
    from saferoom.importer.units import _string_keys

    assert _string_keys(pa.array(colliding)).tolist() == [_string_keys(pa.array(colliding))[0]] * 2
    # An import refuses text over 60 bytes (the cost model's width), so the spill itself is fed: in batches hashed
    # two different ways, the colliding pair among distinct codes is no repeat; the same string twice is one.
    from saferoom.importer.units import UnitSpill

    units = [f"91350200{i:010d}" for i in range(SPREAD_ROWS)]
    units[10], units[500_000] = colliding
    for repeated, expected in ((False, 0), (True, 1)):
        if repeated:
            units[400_000] = colliding[0]
        spill = UnitSpill(pa.string(), tmp_path)
        for start in range(0, len(units), 250_000):
            batch = pa.array(units[start : start + 250_000])
            spill.add(batch, np.ones(len(batch), dtype=bool), np.arange(start, start + len(batch)) + 1)
        found = spill.repeats(10)
        assert found.count == expected and found.first_rows == ([400_001] if repeated else [])


def test_clamp_and_drop_invalid_are_reported(tmp_path: Path) -> None:
    rows = [*GOOD, "4,130,male,2000000", "5,20,alien,1", "6,-3,female,1"]
    catalog = tmp_path / "catalog"
    result = import_dataset(str(_write(tmp_path, rows)), _declaration(tmp_path), catalog, clamp=True, drop_invalid=True)
    assert result.report.clamped == {"age": 2, "income": 1}
    assert result.report.dropped == 1 and result.report.rows_written == 5
    assert "1 invalid row(s) dropped" in result.report.lines()
    info = Manifest.load(catalog).dataset("people")
    assert info.rows == 5
    import pyarrow.ipc as ipc

    table = ipc.open_file(pa.memory_map(str(catalog / info.file))).read_all()
    assert table.column("age").to_pylist() == [30, 40, 50, 120, 0]
    assert table.column("income").to_pylist()[3] == 1_000_000.0
    assert [v["report"]["dropped"] for v in [result.version.to_data()]] == [1]


def test_clamp_alone_still_refuses_what_it_cannot_fix(tmp_path: Path) -> None:
    with pytest.raises(ImportRefused):
        import_dataset(
            str(_write(tmp_path, [*GOOD, "4,20,alien,1"])), _declaration(tmp_path), tmp_path / "c", clamp=True
        )
    _nothing_published(tmp_path / "c")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty file", "", "is empty"),
        ("header only", HEADER, "no rows"),
        ("truncated row", HEADER + "1,30,female,100\n2,40", "cannot read"),
    ],
)
def test_empty_and_truncated_csv(tmp_path: Path, name: str, content: str, message: str) -> None:
    source = tmp_path / "people.csv"
    source.write_text(content, encoding="utf-8")
    with pytest.raises((ImportRefused, SourceError), match=message):
        import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _nothing_published(tmp_path / "catalog")


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_truncated_binary_files(tmp_path: Path, suffix: str) -> None:
    table = pa.table({"person_id": [1, 2], "age": [3, 4], "sex": ["male", "male"], "income": [1.0, 2.0]})
    source = tmp_path / f"people{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, source)
    else:
        with pa.OSFile(str(source), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="cannot read"):
        import_dataset(str(source), _declaration(tmp_path), tmp_path / "catalog")
    _nothing_published(tmp_path / "catalog")


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("person_id,age,sex\n", ["1,2,male"], "declared but not in the data: income"),
        ("person_id,age,sex,income,secret\n", ["1,2,male,3,x"], "not declared .*: secret"),
    ],
)
def test_a_declaration_that_does_not_match_the_data(tmp_path: Path, header: str, rows: list[str], message: str) -> None:
    with pytest.raises(ImportRefused, match=message):
        import_dataset(str(_write(tmp_path, rows, header)), _declaration(tmp_path), tmp_path / "catalog")
    _nothing_published(tmp_path / "catalog")


def test_an_ignored_column_is_left_out(tmp_path: Path) -> None:
    text = DECLARATION.replace("one_row_per_unit = true", 'one_row_per_unit = true\nignore = ["secret"]')
    source = _write(tmp_path, ["1,2,male,3,x"], "person_id,age,sex,income,secret\n")
    result = import_dataset(str(source), _declaration(tmp_path, text), tmp_path / "catalog")
    assert [c.name for c in result.info.columns] == ["person_id", "age", "sex", "income"]


def test_a_proposed_declaration_is_refused_until_every_data_value_is_replaced(tmp_path: Path) -> None:
    source = _write(tmp_path, GOOD)
    draft = propose_declaration(str(source), "people")
    assert "# FROM DATA" in draft and 'from_data = ["columns.person_id.min"' in draft
    assert "max = 50  # FROM DATA" in draft  # the oldest person's age: exactly what must not be published
    declaration = _declaration(tmp_path, draft)
    with pytest.raises(DeclarationError, match="values taken from the data"):
        import_dataset(str(source), declaration, tmp_path / "catalog")
    # Emptying the machine-readable list is not enough while a marked line remains.
    lines = [line for line in draft.splitlines() if not line.startswith(("from_data", "#"))]
    with pytest.raises(DeclarationError, match="still marked 'FROM DATA'"):
        import_dataset(str(source), _declaration(tmp_path, "\n".join(lines)), tmp_path / "catalog")
    _nothing_published(tmp_path / "catalog")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("max = 120", "max = 120\nsecret_key = 1"), "unknown key"),
        (('type = "float64"', 'type = "decimal"'), "type must be one of"),
        (('privacy_unit = "person_id"', 'privacy_unit = "nobody"'), "privacy unit"),
        (("max = 120", "max = -5"), "min is above max"),
        (('name = "people"', 'name = "../etc"'), "dataset name"),
    ],
)
def test_a_malformed_declaration_is_refused(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    text = DECLARATION.replace(*change, 1)
    with pytest.raises(DeclarationError, match=message):
        import_dataset(str(_write(tmp_path, GOOD)), _declaration(tmp_path, text), tmp_path / "catalog")
    _nothing_published(tmp_path / "catalog")


def test_a_failed_import_leaves_the_current_version_in_place(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    first = import_dataset(str(_write(tmp_path, GOOD)), _declaration(tmp_path), catalog)
    with pytest.raises(ImportRefused):
        import_dataset(str(_write(tmp_path, [*GOOD, "4,999,male,1"])), _declaration(tmp_path), catalog)
    assert Manifest.load(catalog).dataset("people").version == first.version.version
    assert sorted(p.name for p in catalog.iterdir()) == sorted(
        [".catalog.lock", "catalog.json", "versions.json", first.version.file, sidecar(first.version.file)]
    )


TEXT_DECLARATION = (
    DECLARATION
    + """
[[columns]]
name = "note"
type = "string"
may_be_null = true
"""
)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_text_longer_than_the_cost_model_counts_is_refused(tmp_path: Path, kind: str) -> None:
    """The cost model counts a text value without categories at 60 bytes (``manifest.TEXT_BYTES``): a longer one
    would let a job's admitted worst case (memory, time, padding) be exceeded by what the data holds. Multi-byte
    characters count by their bytes; 60 bytes pass."""
    fits, over = "é" * 30, "é" * 30 + "x"  # 60 and 61 bytes in UTF-8
    rows = [f"1,30,female,100,{fits}", f"2,40,male,200,{over}", "3,50,female,300,short"]
    if kind == "csv":
        source = _write(tmp_path, rows, header=HEADER.strip() + ",note\n")
    else:
        source = _write_jsonl_text(tmp_path, rows)
    catalog = tmp_path / "catalog"
    with pytest.raises(ImportRefused) as refused:
        import_dataset(str(source), _declaration(tmp_path, TEXT_DECLARATION), catalog)
    report = refused.value.report
    assert report is not None
    assert report.problems == {("note", "text over 60 bytes"): 1} and report.examples[
        ("note", "text over 60 bytes")
    ] == [2]
    assert over not in "\n".join(report.lines())  # counts and row numbers, never the value
    _nothing_published(catalog)


def _write_jsonl_text(tmp_path: Path, rows: list[str]) -> Path:
    source = tmp_path / "people.jsonl"
    names = [*HEADER.strip().split(","), "note"]
    lines = []
    for row in rows:
        values = row.split(",")
        record = {n: (json.loads(v) if NUMBER.fullmatch(v) else v) for n, v in zip(names, values, strict=True)}
        lines.append(json.dumps(record, ensure_ascii=False))
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return source


def test_a_proposed_declaration_warns_of_text_the_import_would_refuse(tmp_path: Path) -> None:
    """An owner learns before importing that free text over 60 bytes will be refused (the draft says so, never
    the text); a column with few values is proposed as categories, where any length is fine."""
    rows = [f"{i},{'a' * 70 if i == 7 else f'note {i}'},{'x' * 80 if i % 2 else 'y' * 80}" for i in range(1, 101)]
    source = tmp_path / "notes.csv"
    source.write_text("id,note,kind\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    draft = propose_declaration(str(source), "notes")
    note = draft[draft.index('name = "note"') : draft.index('name = "kind"')]
    kind = draft[draft.index('name = "kind"') :]
    assert "text over 60 bytes in the data" in note and "a" * 70 not in draft
    assert "categories = [" in kind and "text over 60 bytes" not in kind
