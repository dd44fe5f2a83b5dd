"""Writing a downloaded package to disk, without trusting the names that came over the wire."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from saferoom.audit import AuditRecord
from saferoom.errors import InvalidRequest
from saferoom.packages import package_from_files

__all__ = ["write_audit_export", "write_package_files"]


def write_package_files(out: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` under a new directory ``out`` (names validated as package names: no '..', no absolutes)."""
    package_from_files(files)
    if out.exists():
        raise InvalidRequest(f"{out} exists; choose a new directory")
    root = out.resolve()
    for name, content in files.items():
        target = (root / name).resolve()
        if root not in target.parents:
            raise InvalidRequest(f"refusing to write {name!r} outside {out}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def write_audit_export(out: Path, fmt: str, records: Iterable[AuditRecord]) -> int:
    """Audit records as JSON Lines (one record per line) or Parquet (objects and summary as JSON text)."""
    if fmt == "jsonl":
        count = 0
        with open(out, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record.to_data(), sort_keys=True) + "\n")
                count += 1
        return count
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            **r.to_data(),
            "objects": json.dumps(r.objects, sort_keys=True),
            "summary": json.dumps(r.summary, sort_keys=True),
        }
        for r in records
    ]
    schema = pa.schema(
        [
            ("seq", pa.int64()),
            ("ts", pa.string()),
            ("event", pa.string()),
            ("actor", pa.string()),
            ("role", pa.string()),
            ("objects", pa.string()),
            ("summary", pa.string()),
            ("prev", pa.string()),
            ("hash", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return len(rows)
