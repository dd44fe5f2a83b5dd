"""Red team: the stored statistics that let the engine skip a clamp cannot be made to skip it for other data.

A clamp to the declared bounds is skipped only for a column whose stored statistics (computed when the version
was written) lie within them, and only when those statistics describe the bytes the catalog has mapped. An
attacker (or an accident) that swaps a data file under the catalog, or edits or corrupts its statistics file,
gets every clamp back: one person's outlier still moves a mean only as far as the bounds allow.
Layer that must stop each: saferoom.catalog (Catalog.open, statistics.load).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog import Catalog, generate_catalog
from saferoom.catalog.statistics import sidecar
from saferoom.disclosure import protect
from saferoom.engine import plan
from saferoom.jobs.engine_task import execute_plans

ALGORITHM = "def run(ctx):\n    return {'m': ctx.table('population').group_by('district').agg(income=mean('income'))}\n"
OUTLIER = 1e15  # far above the declared bound of income


@pytest.fixture
def city(tmp_path: Path) -> Path:
    generate_catalog(tmp_path / "city", scale=2_000, seed=5, differential_privacy=False, output_checking=False)
    return tmp_path / "city"


def _released_means(directory: Path) -> list[float]:
    with Catalog.open(directory) as catalog:
        scope: dict[str, Any] = dict(namespace())
        exec(ALGORITHM, scope)  # trusted test code
        outputs = export_outputs(scope["run"](Context(catalog.manifest, ["population"])))
        protected = protect({k: plan.from_data(v["plan"]) for k, v in outputs.items()}, catalog.manifest)
        request = {"plans": [[name, plan.to_data(p.plan)] for name, p in protected.items()]}
        _, blobs = execute_plans(catalog, request, [])
    table = pa.ipc.open_stream(pa.py_buffer(blobs[0])).read_all()
    return [v for v in table.column("income").to_pylist() if v is not None]


def _swap_incomes(directory: Path) -> float:
    """Replace the population file (same name, same schema) by one where everyone earns ``OUTLIER``; returns
    the declared upper bound of income."""
    catalog = Catalog.open(directory)
    info = catalog.info("population")
    table = catalog.table("population")
    catalog.close()
    income = table.column_names.index("income")
    swapped = table.set_column(income, "income", pc.multiply(pc.add(table.column("income"), 1.0), OUTLIER))
    tmp = directory / "swap.tmp"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(swapped)
    os.replace(tmp, directory / info.file)
    high = info.column("income").max
    assert high is not None
    return high


def test_a_data_file_swapped_under_its_statistics_keeps_the_clamp(city: Path) -> None:
    with Catalog.open(city) as catalog:
        assert "income" in catalog.statistics("population")  # before: the clamp of income is skipped
    high = _swap_incomes(city)
    with Catalog.open(city) as catalog:
        assert catalog.statistics("population") == {}  # computed on other bytes: not used
    means = _released_means(city)
    assert means and all(m == high for m in means)  # every income clamped to the bound, as with no statistics


@pytest.mark.parametrize(
    "forge",
    [
        "claims_bounds_for_other_bytes",
        "not_json",
        "nan_bound",
        "negative_count",
        "bool_bound",
        "missing_hash",
        "wrong_format",
    ],
)
def test_a_forged_or_corrupt_statistics_file_keeps_the_clamp(city: Path, forge: str) -> None:
    """Whoever may write the data directory may write anything there (the importer's and operator's trust);
    what is checked is that statistics of other bytes, or that are no statistics, are never used."""
    high = _swap_incomes(city)
    info = Catalog.open(city).info("population")
    path = city / sidecar(info.file)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["columns"]["income"] = [0.0, 1.0, 0, 0]  # "every income is within [0, 1]"
    if forge != "claims_bounds_for_other_bytes":  # bound to the swapped bytes: only the content is wrong
        data["sha256"] = hashlib.sha256((city / info.file).read_bytes()).hexdigest()
    if forge == "not_json":
        text = "{not json"
    else:
        if forge == "nan_bound":
            data["columns"]["income"] = [float("nan"), 1.0, 0, 0]
        elif forge == "negative_count":
            data["columns"]["income"] = [0.0, 1.0, -1, 0]
        elif forge == "bool_bound":
            data["columns"]["income"] = [False, True, 0, 0]
        elif forge == "missing_hash":
            del data["sha256"]
        elif forge == "wrong_format":
            data["format"] = 99
        text = json.dumps(data)
    path.write_text(text, encoding="utf-8")
    with Catalog.open(city) as catalog:
        assert catalog.statistics("population") == {}
    means = _released_means(city)
    assert means and all(m == high for m in means)
