"""Writing a catalog directory from tables already in memory (e.g. mock data downloaded from a server)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from saferoom.catalog.manifest import DatasetInfo, Manifest

__all__ = ["write_downloaded_catalog"]


def write_downloaded_catalog(
    out: Path, infos: Sequence[DatasetInfo], tables: Mapping[str, pa.Table], name: str = "mock"
) -> Manifest:
    """Write each table as an Arrow IPC file plus ``catalog.json``, ready for `saferoom dev run --data`."""
    out.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, DatasetInfo] = {}
    for info in infos:
        table = tables[info.name]
        file_name = f"{info.name}.arrow"
        with pa.OSFile(str(out / file_name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        datasets[info.name] = replace(info, file=file_name, rows=table.num_rows)
    manifest = Manifest(name=name, datasets=datasets)
    manifest.save(out)
    return manifest
