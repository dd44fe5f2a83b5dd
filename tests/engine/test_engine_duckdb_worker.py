"""The DuckDB engine inside the confined engine worker (seccomp, Landlock, no network, memory limit): a job
released with ``engine = "duckdb"`` gives exactly what the Arrow engine gives, and the configuration is checked."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.errors import InvalidRequest
from saferoom.jobs.pipeline import Isolation, Pipeline
from saferoom.packages import load_package, validate_params

BODY = """
people = ctx.table("population")
sales = ctx.table("housing_transactions").select(person_id="buyer_id", price="price")
stops = ctx.table("bus_stops").group_by("district").agg(stops=count())
profile = (
    people.filter(col("age") >= 18)
    .with_columns(band=histogram(col("income"), 0, 1000000, 50))
    .group_by("district", "band", "education")
    .agg(n=count(), income=mean("income"), middle=median("income"))
)
joined = (
    people.group_by("district").agg(n=count(), income=mean("income"), households=count_distinct("household_id"))
    .join(stops, on="district", how="left")
    .with_columns(per_stop=col("n") / col("stops"))
)
bought = people.select("person_id", "district", "age").join(sales, on="person_id").group_by("district").agg(
    n=count(), price=mean("price"), age=median("age")
)
profile = profile.sort(["district", "band", "education"])
return {"profile": profile, "joined": joined.sort("district"), "bought": bought.sort("district")}
"""


def _package(root: Path) -> Path:
    directory = root / "engine-check"
    directory.mkdir()
    (directory / "saferoom.toml").write_text(
        'name = "engine-check"\nversion = "1.0.0"\nentrypoint = "main.py:run"\n'
        'datasets = ["population", "housing_transactions", "bus_stops"]\n'
    )
    (directory / "main.py").write_text(
        "def run(ctx):\n" + textwrap.indent(textwrap.dedent(BODY).strip(), "    ") + "\n"
    )
    return directory


@pytest.fixture(scope="module")
def pipelines(catalog_dir: Path) -> Iterator[dict[str, Pipeline]]:
    config = ServerConfig.load(env={})
    isolation = Isolation(config.seccomp, config.landlock, config.network_namespace)
    manifest = Manifest.load(catalog_dir)
    made: dict[str, Pipeline] = {}
    try:
        for engine in ("arrow", "duckdb"):
            made[engine] = Pipeline(
                catalog_dir, manifest, config.sandbox_limits, config.engine_limits, isolation, engine=engine
            )
        yield made
    finally:
        for p in made.values():
            p.close()


def _released(pipeline: Pipeline, root: Path) -> dict[str, Any]:
    package = load_package(root)
    outcome = pipeline.run(package, validate_params(package, {}))
    out = {}
    for o in outcome.outputs:
        assert o.table is not None, o.report
        rows = o.table.to_pylist()
        for row in rows:
            for key, value in row.items():
                if isinstance(value, float):
                    row[key] = float(f"{value:.9e}")
        out[o.name] = (rows, json.loads(json.dumps(o.report, default=str)))
    return out


def test_a_job_released_on_duckdb_in_the_worker_equals_the_arrow_engine(
    pipelines: dict[str, Pipeline], tmp_path: Path
) -> None:
    root = _package(tmp_path)
    arrow = _released(pipelines["arrow"], root)
    duck = _released(pipelines["duckdb"], root)
    assert set(arrow) == {"profile", "joined", "bought"}
    for name in arrow:
        assert duck[name][0] == arrow[name][0], name
        assert duck[name][1] == arrow[name][1], name
    assert all(arrow[name][0] for name in arrow)  # something was released, and the reports (rules) agree


def test_the_engine_option_is_checked() -> None:
    assert ServerConfig.load(env={"SAFEROOM_ENGINE": "duckdb"}).engine == "duckdb"
    assert ServerConfig.load(env={}).engine == "arrow"
    with pytest.raises(InvalidRequest, match="engine must be one of"):
        ServerConfig.load(env={"SAFEROOM_ENGINE": "sqlite"})
