"""Red team, side channels of the engine: a job must not fail, or not, because of one person's values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from saferoom.api import Context, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from tests.support import release_outputs

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, when, count = NS["col"], NS["when"], NS["count"]


@pytest.mark.parametrize(
    "probe",
    [
        # Overflows only if person 42 is older than 92: an error would answer "is person 42 over 92?".
        lambda: col("age") * when(col("person_id") == 42, 10**17).otherwise(1) > 0,
        lambda: -(col("age") + when(col("person_id") == 42, 2**63 - 101).otherwise(0)) < 0,
        # Converts only if person 42's income is finite and small: an error would answer "is it large?".
        lambda: (col("income") * when(col("person_id") == 42, 1e300).otherwise(1.0)).cast("int") > 0,
        lambda: col("district").cast("int").is_null(),
    ],
)
def test_a_value_dependent_engine_error_cannot_signal_one_row(catalog_dir: Path, probe) -> None:
    manifest = Manifest.load(catalog_dir)
    with Catalog.open(catalog_dir) as catalog:
        people = Context(manifest, ["population"]).table("population")
        query = people.filter(probe()).group_by("district").agg(n=count())
        out = release_outputs(manifest, catalog.table, {"q": query})["q"]  # no exception, whatever the values
    assert out.report.kind == "aggregate"
