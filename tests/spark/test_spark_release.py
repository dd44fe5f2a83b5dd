"""Released results are the same on both engines: the release step (thresholds, dominance, subsets, secondary
suppression, DP) runs over Spark results exactly as over Arrow results; and plans are dispatched by where
their datasets are, with mixed plans refused or shipped by the documented rule."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.disclosure import protect
from saferoom.disclosure.rounds import release_all
from saferoom.engine import ArrowEngine, plan
from saferoom.errors import InvalidPlan, InvalidRequest, JobTimeout
from saferoom.jobs.local import run_local
from saferoom.jobs.spark import MAX_SHIPPED_ROWS, SparkExecutor, engine_of
from saferoom.server import create_server
from tests.support import approve_all, server_config
from tests.support_spark import assert_same

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
col, lit, when, count, count_distinct = NS["col"], NS["lit"], NS["when"], NS["count"], NS["count_distinct"]
sum_, mean, median, std, quantile = NS["sum"], NS["mean"], NS["median"], NS["std"], NS["quantile"]
grid_cell, histogram = NS["grid_cell"], NS["histogram"]
REPO = Path(__file__).resolve().parents[2]
DATASETS = ["population", "housing_transactions", "bus_stops", "land_use", "convenience_stores", "schools"]

Execute = Callable[[list[list[Any]], dict[str, pa.Table]], dict[str, tuple[pa.Table, dict[str, int]]]]


def arrow_execute(table_of: Callable[[str], pa.Table]) -> Execute:
    def execute(work, inputs):  # type: ignore[no-untyped-def]
        nodes = plan.share_subtrees({name: plan.from_data(data) for name, data in work})
        runs = ArrowEngine(table_of, inputs).execute_all(list(nodes.values()))
        return {name: (r.table, r.dropped) for name, r in zip(nodes, runs, strict=True)}

    return execute


def spark_execute(executor: SparkExecutor, manifest: Manifest, fallback: Execute) -> Execute:
    """What the pipeline does: plans that read Spark datasets go to the cluster, the rest to Arrow."""

    def execute(work, inputs):  # type: ignore[no-untyped-def]
        decoded = [(name, plan.from_data(data)) for name, data in work]
        remote = [(n, p) for n, p in decoded if engine_of(p, manifest) == "spark"]
        local = [w for w in work if w[0] not in {n for n, _ in remote}]
        out = fallback(local, inputs) if local else {}
        out.update(executor.execute(remote, inputs))
        return out

    return execute


def release_with(execute: Execute, manifest: Manifest, tables: dict[str, Any], epsilon=None):  # type: ignore[no-untyped-def]
    plans = plan.share_subtrees({k: plan.from_data(v["plan"]) for k, v in export_outputs(tables).items()})
    return release_all(protect(plans, manifest), manifest, execute, epsilon or {})


@pytest.fixture(scope="module")
def city(catalog_dir: Path, spark_catalog: tuple[Path, Manifest, Manifest], spark_url: str):
    data_dir, manifest, _ = spark_catalog
    catalog = Catalog.open(catalog_dir)
    executor = SparkExecutor(spark_url, manifest, data_dir)
    arrow = arrow_execute(catalog.table)
    yield Context(manifest, DATASETS), manifest, arrow, spark_execute(executor, manifest, arrow), executor
    executor.close()
    catalog.close()


def _cells(ctx: Context, meters: int = 500):  # type: ignore[no-untyped-def]
    return (
        ctx.table("population")
        .filter(col("age") >= 18)
        .with_columns(cell=grid_cell(col("lat"), col("lon"), meters))
        .group_by("cell")
        .agg(adults=count(), income=median("income"))
    )


OUTPUTS: dict[str, Callable[[Context], Any]] = {
    "small_cells_suppressed": lambda c: (
        c.table("population").group_by("district", "age", "sex").agg(n=count(), income=mean("income"))
    ),
    "site_selection": lambda c: (
        _cells(c)
        .join(
            c.table("bus_stops")
            .with_columns(cell=grid_cell(col("lat"), col("lon"), 500))
            .group_by("cell")
            .agg(s=count()),
            on="cell",
            how="left",
        )
        .with_columns(score=col("adults") * 0.6 + when(col("s").is_null(), 0).otherwise(col("s")) * 0.4)
        .sort(["score", "cell"], descending=[True, False])
        .head(10)
    ),
    "dominance": lambda c: (
        c.table("population")
        .with_columns(cell=grid_cell(col("lat"), col("lon"), 1000))
        .group_by("cell")
        .agg(n=count(), total=sum_("income"), avg=mean("income"))
    ),
    "subset_of_one": lambda c: c.table("population").filter(col("person_id") == 42).agg(n=count()),
    "margins": lambda c: (
        c.table("population")
        .group_by("district", "education")
        .agg(n=count())
        .union(c.table("population").group_by("district").agg(n=count()).with_columns(education=lit("all")))
    ),
    "housing_buyers": lambda c: (
        c.table("housing_transactions")
        .group_by("district")
        .agg(n=count(), buyers=count_distinct("buyer_id"), med=median("price_per_m2"), sd=std("area_m2"))
    ),
    "income_histogram": lambda c: (
        c.table("population")
        .with_columns(band=histogram(col("income"), 0, 300_000, 30))
        .group_by("band", "sex")
        .agg(n=count(), q9=quantile("age", 0.9))
    ),
    "public_rows": lambda c: c.table("schools").filter(col("capacity") > 800).sort("school_id").head(5),
}


def _row_count(released: Any) -> int:
    return 0 if released.table is None else released.table.num_rows


def test_released_results_are_the_same(city) -> None:
    ctx, manifest, arrow, spark, _ = city
    tables = {name: build(ctx) for name, build in OUTPUTS.items()}
    a = release_with(arrow, manifest, tables)
    s = release_with(spark, manifest, tables)
    assert set(a) == set(s) == set(OUTPUTS)
    for name in OUTPUTS:
        assert a[name].report.to_data() == s[name].report.to_data(), name
        assert_same(a[name].table, s[name].table, ordered=name in ("site_selection", "public_rows"))
        assert a[name].check == s[name].check, name
    assert a["small_cells_suppressed"].check["report"]["suppressed_cells"] > 0  # the rules did have work to do
    assert _row_count(a["subset_of_one"]) == 0


def test_differentially_private_statistics_are_the_same(dp_catalog_dir: Path, spark_catalog, spark_url: str) -> None:
    """DP noise is random, so each engine call is compared: the exact statistics (before the server's noise) and
    the second round over the same noisy tables. Outputs where Bound has a choice to make are left out (which
    rows of a person over the limit are kept may differ; how many may not)."""
    data_dir, spark_manifest, _ = spark_catalog
    manifest = Manifest.load(dp_catalog_dir)
    dp_spark = replace(
        manifest,
        datasets={
            n: replace(i, engine=spark_manifest.datasets[n].engine, location=spark_manifest.datasets[n].location)
            for n, i in manifest.datasets.items()
        },
    )
    catalog = Catalog.open(dp_catalog_dir)
    executor = SparkExecutor(spark_url, dp_spark, data_dir)
    calls: list[tuple[list[Any], dict[str, pa.Table], dict[str, Any]]] = []
    arrow = arrow_execute(catalog.table)

    def recording(work, inputs):  # type: ignore[no-untyped-def]
        out = arrow(work, inputs)
        calls.append((work, inputs, out))
        return out

    ctx = Context(manifest, DATASETS)
    tables = {
        "profile": ctx.table("population").group_by("district", "sex").agg(n=count(), income=median("income")),
        "cells": _cells(ctx, 1000),
        "adults": ctx.table("population").filter(col("age") >= 18).agg(n=count(), avg=mean("income")),
        "sales": ctx.table("housing_transactions").agg(n=count()),
    }
    try:
        release_with(recording, manifest, tables, {"population": 1.0, "housing_transactions": 1.0})
        assert len(calls) >= 2  # exact statistics, then the plans over the noisy tables
        replay = spark_execute(executor, dp_spark, arrow)
        for work, inputs, expected in calls:
            got = replay(work, inputs)
            for name, (table, dropped) in expected.items():
                assert_same(table, got[name][0])
                assert dropped == got[name][1]
    finally:
        executor.close()
        catalog.close()


def test_a_personal_arrow_dataset_never_meets_a_spark_dataset(spark_catalog) -> None:
    data_dir, manifest, _ = spark_catalog
    people = plan.Scan("population", ("person_id",))
    mixed = replace(
        manifest,
        datasets={
            **manifest.datasets,
            "population": replace(manifest.datasets["population"], engine="arrow", location=None),
        },
    )
    sales = plan.Scan("housing_transactions", ("buyer_id",))
    join = plan.Join(people, plan.Project(sales, (("person_id", plan.Col("buyer_id")),)), ("person_id",))
    with pytest.raises(InvalidPlan, match=r"population \(personal, on the Arrow engine\) cannot be combined"):
        engine_of(join, mixed)
    executor = SparkExecutor("sc://127.0.0.1:1", mixed, data_dir)  # connects only when it first executes
    assert executor._local("bus_stops").num_rows > 0  # public and small: may be sent to the cluster
    with pytest.raises(InvalidPlan, match="not available"):
        executor._local("population")  # the server process never maps a personal dataset for the cluster
    stops = plan.Scan("bus_stops", ("district",))
    assert engine_of(plan.Join(plan.Scan("population", ("district",)), stops, ("district",)), manifest) == "spark"
    assert engine_of(stops, manifest) == "arrow"
    big = replace(manifest.datasets["bus_stops"], rows=MAX_SHIPPED_ROWS + 1)
    with pytest.raises(InvalidPlan, match="larger than"):
        engine_of(
            plan.Join(plan.Scan("population", ("district",)), stops, ("district",)),
            replace(manifest, datasets={**manifest.datasets, "bus_stops": big}),
        )


def test_a_spark_catalog_needs_an_endpoint(spark_catalog) -> None:
    data_dir, _, _ = spark_catalog
    with pytest.raises(InvalidRequest, match="set spark_connect"):
        run_local(REPO / "algorithms" / "population_profile", data_dir, {}, ServerConfig.load(env={}))
    with pytest.raises(InvalidRequest, match="sc://"):
        ServerConfig.load(env={}, spark_connect="http://example.org")


@pytest.mark.slow
def test_a_vetted_algorithm_through_the_pipeline(catalog_dir: Path, spark_catalog, spark_url: str) -> None:
    """`saferoom dev run` (the server's pipeline: sandbox and engine workers, and the cluster) on both engines."""
    data_dir = spark_catalog[0]
    limits: dict[str, Any] = {"sandbox_limits": {"wall_seconds": 60.0}, "engine_limits": {"wall_seconds": 120.0}}
    package = REPO / "algorithms" / "site_selection"
    arrow = run_local(package, catalog_dir, {}, ServerConfig.load(env={}, **limits))
    spark = run_local(package, data_dir, {}, ServerConfig.load(env={}, spark_connect=spark_url, **limits))
    assert [o.name for o in arrow.outputs] == [o.name for o in spark.outputs]
    for a, s in zip(arrow.outputs, spark.outputs, strict=True):
        assert a.report == s.report, a.name
        if a.table is not None:
            assert_same(a.table, s.table, ordered=True)


def test_a_job_out_of_time_is_interrupted_on_the_cluster(city) -> None:
    """engine_limits.wall_seconds holds on the cluster too: the job's operations are interrupted by their tag."""
    executor = city[4]
    left = plan.Scan("population", ("sex", "income"))
    right = plan.Project(plan.Scan("population", ("sex",)), (("sex", plan.Col("sex")),))
    pairs = plan.Aggregate(plan.Join(left, right, ("sex",)), (), (("m", plan.AggExpr("median", plan.Col("income"))),))
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        executor.execute([("pairs", pairs)], {}, wall_seconds=1.0)
    assert time.monotonic() - started < 30
    count_all = plan.Aggregate(left, (), (("n", plan.AggExpr("count")),))
    assert executor.execute([("n", count_all)], {})["n"][0].num_rows == 1  # the session is still usable


def test_the_server_runs_a_job_on_the_cluster(
    catalog_dir: Path, spark_catalog, spark_url: str, deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Over mutual-TLS gRPC: a server whose population lives on the cluster releases what the Arrow one does."""
    packages = tmp_path_factory.mktemp("spark-packages")
    shutil.copytree(REPO / "algorithms" / "population_profile", packages / "population_profile")
    results = []
    for data_dir, extra in ((catalog_dir, {}), (spark_catalog[0], {"spark_connect": spark_url})):
        config = server_config(data_dir, tmp_path_factory.mktemp("state"), deployment.pki, **extra)
        server, port = create_server(config)
        try:
            approve_all(deployment, port, packages)
            with deployment.client("alice", port) as alice:
                job = alice.wait(alice.run_job("population-profile").id, timeout=120)
                assert job.state == "succeeded", job
                results.append(alice.get_result(job.id))
        finally:
            server.stop(1.0)
    arrow, spark = results
    assert [o.name for o in arrow.outputs] == [o.name for o in spark.outputs]
    for a, s in zip(arrow.outputs, spark.outputs, strict=True):
        assert a.report == s.report, a.name
        assert_same(a.table, s.table)


def test_a_release_on_the_cluster_is_padded_to_its_limit_whole(
    catalog_dir: Path, spark_catalog, spark_url: str
) -> None:
    """The cluster's time is not modelled: with timing protection on, each engine run that reads a Spark dataset
    is padded to ``spark_run_seconds`` whole, and one on Arrow datasets alone is not."""
    from saferoom.jobs.pipeline import Isolation, Pipeline, ReleaseDeadline
    from saferoom.jobs.spark import spark_executor
    from saferoom.packages import load_package

    config = ServerConfig.load(env={})
    package = load_package(REPO / "algorithms" / "population_profile")
    padded: dict[str, float] = {}
    for kind, data_dir, url in (("arrow", catalog_dir, ""), ("spark", spark_catalog[0], spark_url)):
        manifest = Manifest.load(data_dir)
        pipeline = Pipeline(
            data_dir,
            manifest,
            config.sandbox_limits,
            config.engine_limits,
            Isolation(seccomp=False, landlock=False, network_namespace=False),
            spark_executor(url, manifest, data_dir),
            spark_run_seconds=60.0,
        )
        deadline = ReleaseDeadline()
        start = time.monotonic()
        try:
            pipeline.run(package, {}, deadline=deadline)
        finally:
            pipeline.close()
        assert deadline.at is not None
        padded[kind] = deadline.at - start  # the code phase, then the release's padding
    assert padded["arrow"] < 60.0 <= padded["spark"]  # (the test does not wait for the deadline)
