"""CSV is read in blocks of whole lines, one block at a time: what bounds the importer's memory on a big file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from saferoom.importer import SourceError, open_source
from saferoom.importer.sources import _line_blocks

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
    for block in _line_blocks(stream, 100):
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
    refused = pytest.raises(SourceError, match=r"cannot read people.csv \(data rows from [0-9]+\).*Expected 4")
    with open_source(str(source), string_columns=NAMES, block_bytes=512) as opened, refused as e:
        list(opened.batches)
    first = int(str(e.value).split("data rows from ")[1].split(")")[0])
    assert 251 - 512 // 20 <= first <= 251  # the block holding row 251 (rows are about 20 bytes)


def test_a_block_where_a_column_is_empty_does_not_change_its_proposed_type() -> None:
    from saferoom.importer.propose import _observe, _Seen

    seen: dict[str, _Seen] = {}
    for block in (pa.array([None, None]), pa.array([1.5, 2.0]), pa.array([None], pa.null())):
        _observe(seen, "income", block)
    assert seen["income"].type == "float64" and seen["income"].nulls and seen["income"].low == 1.5
    _observe(seen, "note", pa.array([None]))
    assert seen["note"].type == "string"  # nothing but nulls: a string column, for the owner to declare
