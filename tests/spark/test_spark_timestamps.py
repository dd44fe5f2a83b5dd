"""An imported timestamp column on Spark: the importer's partitioned Parquet (milliseconds, not adjusted to UTC)
is read by the cluster as timestamp_ntz, and plans over it give what the Arrow engine gives on the Arrow import
of the same file, to the second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saferoom.catalog import Catalog, Manifest
from saferoom.engine import ArrowEngine
from saferoom.engine.spark import SparkEngine
from saferoom.importer import import_dataset
from tests.importer.test_import_timestamps import ALIGHTED, BOARDED, DECLARATION, trip_plans
from tests.support_spark import assert_same


def test_an_imported_timestamp_reads_the_same_on_spark(tmp_path: Path, spark_session: Any) -> None:
    source = tmp_path / "trips.csv"
    rows = [f"{i},{b},{a or ''}\n" for i, (b, a) in enumerate(zip(BOARDED * 3, ALIGHTED * 3, strict=True), 1)]
    source.write_text("card_id,boarded,alighted\n" + "".join(rows), encoding="utf-8")
    (tmp_path / "arrow.toml").write_text(DECLARATION, encoding="utf-8")
    spark = DECLARATION.replace('privacy_unit = "card_id"', 'privacy_unit = "card_id"\nengine = "spark"')
    (tmp_path / "spark.toml").write_text(spark, encoding="utf-8")
    import_dataset(str(source), tmp_path / "arrow.toml", tmp_path / "arrow")
    import_dataset(str(source), tmp_path / "spark.toml", tmp_path / "spark")
    manifest = Manifest.load(tmp_path / "spark")
    location = manifest.dataset("trips").location
    assert location is not None

    with Catalog.open(tmp_path / "arrow") as catalog:
        arrow = ArrowEngine(catalog.table)
        on_spark = SparkEngine(spark_session, manifest, {"trips": location})
        for p in trip_plans():
            expected = arrow.execute(p).table
            assert expected.num_rows > 0
            assert_same(expected, on_spark.execute(p).table)
