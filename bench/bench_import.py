"""`saferoom datasets import` throughput and peak memory: N rows from CSV and from Parquet (default 10M).

    python bench/bench_import.py [--rows 10000000]

Writes a synthetic population-like source (in batches, so the bench itself stays small), then imports it in a
fresh process per source kind and prints rows/s and that process's peak RSS (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
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
type = "int64"
min = 1
max = {rows}
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


def batches(rows: int, size: int = 1_000_000) -> Iterator[pa.RecordBatch]:
    for start in range(0, rows, size):
        n = min(size, rows - start)
        rng = np.random.default_rng(start)
        yield pa.record_batch(
            {
                "person_id": np.arange(start + 1, start + n + 1),
                "age": rng.integers(0, 100, n),
                "district": pa.array(np.array(DISTRICTS)[rng.integers(0, 6, n)]),
                "income": np.round(rng.lognormal(11, 0.6, n), 2),
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        declaration = root / "people.toml"
        declaration.write_text(DECLARATION.format(rows=args.rows))
        csv_path, parquet_path = root / "people.csv", root / "people.parquet"
        schema = None
        with pacsv.CSVWriter(str(csv_path), next(iter(batches(1))).schema) as csv_out:
            for batch in batches(args.rows):
                csv_out.write_batch(batch)
                schema = batch.schema
        assert schema is not None
        with pq.ParquetWriter(str(parquet_path), schema) as pq_out:
            for batch in batches(args.rows):
                pq_out.write_batch(batch)
        for source in (csv_path, parquet_path):
            catalog = root / f"catalog-{source.suffix[1:]}"
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(source), str(declaration), str(catalog)],
                check=True,
                capture_output=True,
                text=True,
            )
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            size = source.stat().st_size / 2**20
            print(
                f"{source.suffix[1:]:8s} {measured['rows']:>12,} rows ({size:,.0f} MiB): "
                f"{measured['rows'] / measured['seconds']:>12,.0f} rows/s, "
                f"peak RSS {measured['peak_rss_mib']:,.0f} MiB "
                f"(process total {time.perf_counter() - started:.1f} s)"
            )


if __name__ == "__main__":
    main()
