"""Released results where researchers use them: a terminal table, JSON, CSV, Parquet or Arrow IPC files.

One result has several outputs (tables and scalars). ``--out PATH`` names a file when one table is written
(the result's only table, or the one ``--output NAME`` picks); otherwise a directory that gets one file per
table (``NAME.csv``, ``NAME.parquet``, ``NAME.arrow``) and ``values.json`` for the scalars. Without ``--out``,
text formats go to standard output (CSV of one table only); binary formats need ``--out``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from rich.console import Console

from saferoom.client import Result, ResultOutput
from saferoom.errors import InvalidRequest

__all__ = ["FORMATS", "export_result"]

FORMATS = ("table", "json", "csv", "parquet", "arrow")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")  # what the server allows as an output name
_SUFFIX = {"csv": ".csv", "parquet": ".parquet", "arrow": ".arrow"}


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary-encoded columns decoded: every tool reads plain columns."""
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(columns, names=table.column_names)


def _write(table: pa.Table, fmt: str, path: Path) -> None:
    table = _plain(table)
    if fmt == "csv":
        pa_csv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)


def _chosen(result: Result, output: str | None) -> list[ResultOutput]:
    if output is None:
        return list(result.outputs)
    try:
        return [result.output(output)]
    except KeyError:
        names = ", ".join(o.name for o in result.outputs)
        raise InvalidRequest(f"the result has no output {output!r} (it has: {names})") from None


def export_result(
    console: Console, result: Result, fmt: str, out: Path | None = None, output: str | None = None
) -> list[Path]:
    """Print or write ``result`` (or its output ``output``) in ``fmt``; returns the files written."""
    from saferoom.cli.render import print_result, result_to_json

    if fmt not in FORMATS:
        raise InvalidRequest(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    outputs = _chosen(result, output)
    picked = Result(result.job_id, outputs, result.printed)
    if fmt in ("table", "json"):
        text = result_to_json(picked) if fmt == "json" else None
        if out is None:
            if text is not None:
                console.file.write(text + "\n")  # raw: no markup, emoji or wrapping between JSON and its reader
            else:
                print_result(console, picked)
            return []
        if text is None:
            raise InvalidRequest("--format table is for the terminal: write files with json, csv, parquet or arrow")
        out.write_text(text + "\n")
        return [out]
    tables = [o for o in outputs if o.table is not None]
    values = {o.name: o.value for o in outputs if o.table is None}
    if out is None:
        if fmt != "csv" or len(tables) != 1 or values:
            raise InvalidRequest(
                f"{fmt} of this result needs --out: a file for one table (choose it with --output NAME), or a "
                "directory for all of them"
            )
        table = tables[0].table
        assert table is not None
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(_plain(table), sink)
        console.file.write(sink.getvalue().to_pybytes().decode())
        return []
    if len(tables) == 1 and not values and not out.is_dir():
        table = tables[0].table
        assert table is not None
        _write(table, fmt, out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for o in tables:
        assert o.table is not None
        if not _NAME.match(o.name):  # a file name made of what the server sent: never a path
            raise InvalidRequest(f"the output name {o.name[:40]!r} cannot be a file name")
        path = out / f"{o.name}{_SUFFIX[fmt]}"
        _write(o.table, fmt, path)
        written.append(path)
    if values:
        path = out / "values.json"
        path.write_text(json.dumps(values, indent=2, default=str) + "\n")
        written.append(path)
    return written
