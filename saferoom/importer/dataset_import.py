"""``saferoom datasets import``: one source, one declaration, one new version of a dataset, or nothing at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from saferoom.catalog.leases import Lease
from saferoom.catalog.manifest import DatasetInfo
from saferoom.importer.declaration import load_declaration
from saferoom.importer.sources import Source, open_source
from saferoom.importer.validate import ValidationReport, Validator
from saferoom.importer.versions import Version, now, publish, write_arrow, write_parquet

__all__ = ["ImportResult", "import_dataset"]

Progress = Callable[[int, int | None, str], None]  # done, total (None: unknown), unit


@dataclass(frozen=True)
class ImportResult:
    """What an import published."""

    info: DatasetInfo  # as the catalog now declares it
    version: Version
    report: ValidationReport


def import_dataset(
    source: str,
    declaration: Path,
    catalog_dir: Path,
    *,
    query: str | None = None,
    table: str | None = None,
    clamp: bool = False,
    drop_invalid: bool = False,
    location: str | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Validate every row of ``source`` against ``declaration`` and publish it as a new version in
    ``catalog_dir``; raises ``DeclarationError``, ``SourceError`` or ``ImportRefused`` (nothing published).

    ``location``: for a Spark dataset, how the cluster names the catalog's ``parquet`` directory (default: its
    absolute path).
    """
    declared = load_declaration(declaration)
    catalog_dir.mkdir(parents=True, exist_ok=True)
    info = declared.info
    text = tuple(c.name for c in info.columns if c.type in ("string", "date32", "int64", "float64", "bool"))
    times = tuple(c.name for c in info.columns if c.type == "timestamp")
    # The new version is leased from the moment it has its name until it is published: a collection running
    # meanwhile keeps it, even when the same content was imported (and retired) before.
    with Lease() as lease:
        with (
            Validator(info, declared.ignore, clamp, drop_invalid, spill_dir=catalog_dir) as validator,
            open_source(source, query=query, table=table, string_columns=text, timestamp_columns=times) as opened,
        ):
            batches = validator.batches(_reported(opened, progress))
            schema = validator.schema
            if info.engine == "spark":
                file, digest = write_parquet(catalog_dir, info.name, schema, batches, declared.partition_by, lease)
            else:
                file, digest = write_arrow(catalog_dir, info.name, schema, batches, lease)
        report = validator.report
        if info.engine == "spark":
            base = (location or str((catalog_dir / "parquet").resolve())).rstrip("/")
            published = replace(info, file=f"{info.name}.arrow", location=f"{base}/{Path(file).name}")
        else:
            published = replace(info, file=file)
        published = replace(published, rows=report.rows_written, version=digest, declaration_hash=declared.sha256)
        version = Version(
            dataset=info.name,
            version=digest,
            file=file,
            rows=report.rows_written,
            declaration_hash=declared.sha256,
            imported_at=now(),
            source=f"{opened.kind}: {opened.label}",
            report=report.to_data(),
        )
        publish(catalog_dir, published, version)
    return ImportResult(published, version, report)


def _reported(source: Source, progress: Progress | None) -> Iterator[pa.RecordBatch]:
    for batch in source.batches:
        yield batch
        if progress is not None:
            progress(source.position(), source.total, source.unit)
