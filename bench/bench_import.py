"""`saferoom datasets import` throughput and peak memory: N rows from CSV and from Parquet (default 10M).

    python bench/bench_import.py [--rows 10000000] [--only csv|parquet] [--unit int|string] [--source-dir DIR]

Writes a synthetic population-like source (in batches, so the bench itself stays small), then imports it in a
fresh process per source kind and prints rows/s and that process's peak RSS (ru_maxrss). ``--unit string``
makes the privacy unit an 18-character code (like a unified social credit code) instead of a bounded integer.
``--source-dir`` keeps the generated sources there and reuses them on the next run with the same rows and unit
(a 100M-row CSV is a few GB and takes minutes to write); without it they go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

DECLARATION = """
name = "people"
description = "bench"
sensitivity = "personal"
privacy_unit = "person_id"
one_row_per_unit = true
[[columns]]
name = "person_id"
{unit}
[[columns]]
name = "age"
type = "int64"
min = 0
max = 120
[[columns]]
name = "district"
type = "string"
categories = ["Siming", "Huli", "Jimei", "Haicang", "Tong'an", "Xiang'an"]
[[columns]]
name = "income"
type = "float64"
min = 0
max = 5000000
"""
UNIT_DECLARATIONS = {"int": 'type = "int64"\nmin = 1\nmax = {rows}', "string": 'type = "string"'}
CHILD = """
import json, resource, sys, time
from pathlib import Path
from saferoom.importer import import_dataset
started = time.perf_counter()
result = import_dataset(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
seconds = time.perf_counter() - started
print(json.dumps({"rows": result.version.rows, "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
DISTRICTS = ["Siming", "Huli", "Jimei", "Haicang", "Tong'an", "Xiang'an"]
KINDS = ("csv", "parquet")


def credit_codes(first: int, n: int) -> pa.Array:
    """``n`` distinct 18-character codes (a register office, then a zero-padded serial), from serial ``first``."""
    serials = pa.array(np.arange(first, first + n)).cast(pa.string())
    return pc.binary_join_element_wise("91350200", pc.utf8_lpad(serials, 10, "0"), "")


def batches(rows: int, unit: str, size: int = 1_000_000) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, size):
        n = min(size, rows - start)
        rng = np.random.default_rng(start)
        ids = credit_codes(start + 1, n) if unit == "string" else pa.array(np.arange(start + 1, start + n + 1))
        yield pa.record_batch(
            {
                "person_id": ids,
                "age": rng.integers(0, 100, n),
                "district": pa.array(np.array(DISTRICTS)[rng.integers(0, 6, n)]),
                "income": np.round(rng.lognormal(11, 0.6, n), 2),
            }
        )


def source(directory: Path, kind: str, rows: int, unit: str) -> Path:
    """The generated source of ``kind``: reused when a complete one is there, else written (then renamed)."""
    path = directory / f"people-{rows}-{unit}.{kind}"
    if path.exists():
        print(f"source: {path} (reused)")
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    schema = next(batches(1, unit)).schema
    with pacsv.CSVWriter(str(tmp), schema) if kind == "csv" else pq.ParquetWriter(str(tmp), schema) as out:
        for batch in batches(rows, unit):
            out.write_batch(batch)
    os.replace(tmp, path)
    print(f"source: {path} (written)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--only", choices=KINDS, help="import one source kind only (default: both)")
    parser.add_argument("--unit", choices=sorted(UNIT_DECLARATIONS), default="int", help="the privacy unit's type")
    parser.add_argument("--source-dir", type=Path, help="keep generated sources here and reuse them")
    args = parser.parse_args()
    kinds = [args.only] if args.only else list(KINDS)
    print(
        f"settings: rows={args.rows:,} kinds={','.join(kinds)} unit={args.unit} "
        f"source_dir={args.source_dir or '(temporary)'} load={os.getloadavg()[0]:.2f} cpus={os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = args.source_dir or root
        sources.mkdir(parents=True, exist_ok=True)
        declaration = root / "people.toml"
        unit = UNIT_DECLARATIONS[args.unit].format(rows=args.rows)
        declaration.write_text(DECLARATION.format(unit=unit))
        for kind in kinds:
            path = source(sources, kind, args.rows, args.unit)
            catalog = root / f"catalog-{kind}"
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), str(declaration), str(catalog)],
                check=True,
                capture_output=True,
                text=True,
            )
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            size = path.stat().st_size / 2**20
            print(
                f"{kind:8s} {measured['rows']:>12,} rows ({size:,.0f} MiB): "
                f"{measured['rows'] / measured['seconds']:>12,.0f} rows/s, "
                f"peak RSS {measured['peak_rss_mib']:,.0f} MiB "
                f"(process total {time.perf_counter() - started:.1f} s, load after {os.getloadavg()[0]:.2f})"
            )


if __name__ == "__main__":
    main()
