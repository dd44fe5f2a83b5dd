"""Moving datasets of a catalog to the Spark engine: partitioned Parquet plus a manifest that points at it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from saferoom.catalog.manifest import Manifest

__all__ = ["PARTITION_COLUMN", "export_to_spark"]

PARTITION_COLUMN = "district"  # Hive-style directories (district=Huli/...), when a dataset has the column
ROWS_PER_FILE = 2_000_000


def export_to_spark(
    source: Path, out: Path, parquet: Path, datasets: Iterable[str], location: str | None = None
) -> Manifest:
    """A data directory ``out`` in which ``datasets`` of the catalog in ``source`` are on the Spark engine.

    Each of them is written as Parquet under ``parquet/<name>`` (partitioned by district where it has one);
    ``location`` (default: ``parquet`` as an absolute path) is how the cluster names that directory, e.g.
    ``s3a://bucket/city`` after copying it there. Every other dataset keeps its Arrow file (linked, not copied
    when the filesystem allows). Schema, bounds, privacy unit and policy stay exactly as they were.
    """
    manifest = Manifest.load(source)
    moved = set(datasets)
    unknown = moved - set(manifest.datasets)
    if unknown:
        raise ValueError(f"no dataset named {sorted(unknown)[0]!r}")
    out.mkdir(parents=True, exist_ok=True)
    base = (location or str(parquet.resolve())).rstrip("/")
    infos = {}
    for name, info in manifest.datasets.items():
        if name not in moved:
            _link(source / info.file, out / info.file)
            infos[name] = info
            continue
        with pa.memory_map(str(source / info.file), "r") as mapped:
            table = pa.ipc.open_file(mapped).read_all()
            partitioned = PARTITION_COLUMN in table.column_names
            ds.write_dataset(
                table,
                parquet / name,
                format="parquet",
                partitioning=[PARTITION_COLUMN] if partitioned else None,
                partitioning_flavor="hive" if partitioned else None,
                max_rows_per_file=ROWS_PER_FILE,
                max_rows_per_group=min(ROWS_PER_FILE, 1_000_000),
                existing_data_behavior="delete_matching",
            )
        infos[name] = replace(info, engine="spark", location=f"{base}/{name}")
    spark = replace(manifest, datasets=infos)
    spark.save(out)
    return spark


def _link(source: Path, target: Path) -> None:
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
