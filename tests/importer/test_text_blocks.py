"""CSV and JSON Lines are read in blocks of whole lines, one block at a time: what bounds the importer's memory."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from saferoom.importer import ImportRefused, SourceError, ValidationReport, load_declaration, open_source
from saferoom.importer.lines import PIECE_BYTES, line_blocks
from saferoom.importer.sources import BLOCK_BYTES
from saferoom.importer.validate import Validator
from tests.redteam.test_redteam_import import DECLARATION

NAMES = ("person_id", "age", "sex", "income")


def _rows(n: int) -> list[str]:
    return [f"{i},{i % 90},{'female' if i % 3 else 'male'},{i * 1.5}" for i in range(1, n + 1)]


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_a_csv_in_many_blocks_reads_as_one_file(tmp_path: Path, newline: str) -> None:
    source = tmp_path / "people.csv"
    source.write_bytes(newline.join([",".join(NAMES), *_rows(500)]).encode())  # no line break at the end
    with open_source(str(source), string_columns=NAMES, block_bytes=256) as opened:
        batches = list(opened.batches)
        assert opened.position() == source.stat().st_size
    whole = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(NAMES, pa.string())))
    assert len(batches) > 20
    assert pa.Table.from_batches(batches).equals(whole)


def test_a_block_is_read_only_when_the_previous_one_is_taken() -> None:
    lines = [f"{i},{'x' * (i % 7)}" for i in range(2000)]
    lines[700] = "y" * 1000  # a line longer than a block: its block grows to hold it
    data = "\n".join(lines).encode() + b"\n"
    stream = pa.BufferReader(data)
    taken = 0
    pieces = []
    for block in line_blocks(stream, 100):
        assert block.to_pybytes().endswith(b"\n")
        taken += block.size
        pieces.append(block.to_pybytes())
        assert stream.tell() - taken < 100  # what is read but not handed over: less than one block
    assert b"".join(pieces) == data and len(pieces) > 100


def test_a_bad_row_in_a_later_block_says_from_which_data_row(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    rows = _rows(300)
    rows[250] = "251,40"
    source.write_text("\n".join([",".join(NAMES), *rows]) + "\n", encoding="utf-8")
    refused = pytest.raises(SourceError, match=r"cannot read people.csv: in the data rows from [0-9]+: .*Expected 4")
    with open_source(str(source), string_columns=NAMES, block_bytes=512) as opened, refused as e:
        list(opened.batches)
    first = int(str(e.value).split("data rows from ")[1].split(":")[0])
    assert 251 - 512 // 20 <= first <= 251  # the block holding row 251 (rows are about 20 bytes)


def test_a_block_where_a_column_is_empty_does_not_change_its_proposed_type() -> None:
    from saferoom.importer.propose import _observe, _Seen

    seen: dict[str, _Seen] = {}
    for block in (pa.array([None, None]), pa.array([1.5, 2.0]), pa.array([None], pa.null())):
        _observe(seen, "income", block)
    assert seen["income"].type == "float64" and seen["income"].nulls and seen["income"].low == 1.5
    _observe(seen, "note", pa.array([None]))
    assert seen["note"].type == "string"  # nothing but nulls: a string column, for the owner to declare


def _json_rows(n: int) -> list[dict[str, object]]:
    return [{"person_id": i, "age": i % 90, "sex": "male", "income": 1.5} for i in range(1, n + 1)]


def _validate(tmp_path: Path, source: Path, block_bytes: int) -> ValidationReport:
    declaration = tmp_path / "people.toml"
    declaration.write_text(DECLARATION.replace("max = 100\n", "max = 100000\n", 1), encoding="utf-8")
    info = load_declaration(declaration).info
    with (
        Validator(info, (), False, False) as validator,
        open_source(str(source), string_columns=NAMES, block_bytes=block_bytes) as opened,
    ):
        with pytest.raises(ImportRefused):
            list(validator.batches(opened.batches))
        assert opened.position() == source.stat().st_size
    return validator.report


def test_json_lines_of_mixed_types_in_a_later_block_are_counted_with_their_rows(tmp_path: Path) -> None:
    rows = _json_rows(300)
    rows[249]["age"] = "forty"  # in a block of its own among blocks read by pyarrow
    rows[251]["age"] = 30.0  # a whole number written as a float: an int, as everywhere else
    rows[279]["age"] = True
    rows[280]["sex"] = {"nested": 1}  # the column is read as text there: an object's JSON text
    source = tmp_path / "people.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 10 else "") for i, r in enumerate(rows)))
    report = _validate(tmp_path, source, block_bytes=600)
    assert report.rows_read == 300  # the blank line is no row
    assert report.problems == {("age", "wrong type"): 2, ("sex", "unknown category"): 1}
    assert report.examples == {("age", "wrong type"): [250, 280], ("sex", "unknown category"): [281]}


def test_a_big_block_is_read_again_in_pieces_and_only_the_bad_piece_line_by_line(tmp_path: Path) -> None:
    rows = _json_rows(20_000)  # about 600 KB: one block, many pieces
    rows[15_000]["age"] = "old"
    source = tmp_path / "people.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert source.stat().st_size > 4 * PIECE_BYTES
    report = _validate(tmp_path, source, block_bytes=BLOCK_BYTES)
    assert report.rows_read == 20_000 and report.examples == {("age", "wrong type"): [15_001]}
    with open_source(str(source), block_bytes=BLOCK_BYTES) as opened:
        types = [batch.schema.field("age").type for batch in opened.batches]
    assert len(types) > 4 and types.count(pa.string()) == 1  # one piece of text, the others read by pyarrow


def test_a_line_that_is_not_json_is_refused_with_its_row(tmp_path: Path) -> None:
    source = tmp_path / "people.jsonl"
    lines = [json.dumps(r) for r in _json_rows(50)]
    lines[41] = '{"person_id": 42, "age": '
    source.write_text("\n".join(lines) + "\n")
    with (
        open_source(str(source), block_bytes=300) as opened,
        pytest.raises(SourceError, match="data row 42 is not JSON"),
    ):
        list(opened.batches)


def test_a_key_no_earlier_block_had_is_still_refused_if_undeclared(tmp_path: Path) -> None:
    rows = _json_rows(100)
    rows[90]["secret"] = "x"  # in the last block only
    source = tmp_path / "people.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    declaration = tmp_path / "people.toml"
    declaration.write_text(DECLARATION, encoding="utf-8")
    with (
        Validator(load_declaration(declaration).info, (), False, False) as validator,
        open_source(str(source), string_columns=NAMES, block_bytes=500) as opened,
        pytest.raises(ImportRefused, match=r"not declared .*: secret"),
    ):
        list(validator.batches(opened.batches))
