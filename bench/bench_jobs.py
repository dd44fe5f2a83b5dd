"""Benchmark: jobs end to end over gRPC, next to the same queries in plain pyarrow and DuckDB.

    python bench/bench_jobs.py [--scale 10000000] [--data DIR] [--runs 50]

Prints (1) the per-job overhead of a trivial job over mutual-TLS gRPC (run -> watch -> result, p50/p95 ms),
and within it what checking the approval costs (package re-hashed from disk, signature and certificate
verified; done at RunJob and again when the job starts), and (2) for each reference query the whole saferoom
job (sandbox + release rewrite + engine + release + gRPC) next to the same query written by hand in plain
pyarrow and in DuckDB on the same memory-mapped Arrow table (best of --repeat). Numbers only; nothing here
asserts a target.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog import Catalog, generate_catalog
from saferoom.client import Client
from saferoom.config import ServerConfig
from saferoom.disclosure import protect
from saferoom.engine import ArrowEngine, plan
from saferoom.identity import init_authority, issue_identity
from saferoom.server import create_server

HERE = Path(__file__).resolve().parent
QUERIES = ["groupby", "filter_groupby", "histogram", "median", "join_groupby"]


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def pyarrow_queries(people: pa.Table, stops: pa.Table) -> dict[str, Callable[[], Any]]:
    def median_by_district() -> Any:
        codes = people.column("district")
        income = people.column("income")
        out = {}
        for district in pc.unique(codes).to_pylist():
            out[district] = pc.quantile(income.filter(pc.equal(codes, district)), q=0.5)
        return out

    def join_groupby() -> Any:
        per = people.group_by("district").aggregate([([], "count_all"), ("income", "mean")])
        per = per.cast(pa.schema([pa.field("district", pa.string()), *list(per.schema)[1:]]))
        s = stops.group_by("district").aggregate([([], "count_all")]).rename_columns(["district", "stops"])
        s = s.cast(pa.schema([pa.field("district", pa.string()), pa.field("stops", pa.int64())]))
        joined = per.join(s, "district", join_type="left outer")
        return joined.append_column("per_stop", pc.divide(joined["count_all"], pc.cast(joined["stops"], pa.float64())))

    return {
        "groupby": lambda: people.group_by("district").aggregate([([], "count_all"), ("income", "mean")]),
        "filter_groupby": lambda: (
            people.select(["district", "age"])
            .filter(pc.greater_equal(people["age"], 18))
            .group_by("district")
            .aggregate([([], "count_all")])
        ),
        "histogram": lambda: (
            people.select(["income"])
            .append_column(
                "band",
                pc.multiply(
                    pc.min_element_wise(
                        pc.max_element_wise(pc.floor(pc.divide(people["income"], 50_000.0)), 0.0), 19.0
                    ),
                    50_000.0,
                ),
            )
            .group_by("band")
            .aggregate([([], "count_all")])
        ),
        "median": median_by_district,
        "join_groupby": join_groupby,
    }


def duckdb_queries(people: pa.Table, stops: pa.Table) -> dict[str, Callable[[], Any]] | None:
    try:
        import duckdb
    except ImportError:
        return None
    con = duckdb.connect()
    con.register("people", people)
    con.register("stops", stops)
    con.execute("SET threads TO 2")
    sql = {
        "groupby": "select district, count(*), avg(income) from people group by district",
        "filter_groupby": "select district, count(*) from people where age >= 18 group by district",
        "histogram": "select least(greatest(floor(income / 50000), 0), 19) * 50000 as band, count(*) "
        "from people group by band",
        "median": "select district, quantile_cont(income, 0.5) from people group by district",
        "join_groupby": "with p as (select district, count(*) n, avg(income) income from people "
        "group by district), "
        "s as (select district, count(*) stops from stops group by district) "
        "select p.*, s.stops, p.n / s.stops per_stop from p left join s using (district)",
    }
    return {name: (lambda q=q: con.sql(q).to_arrow_table()) for name, q in sql.items()}


def engine_queries(catalog: Catalog) -> dict[str, Callable[[], Any]]:
    """Each query's released plan (contributor counts and suppression included) run by the engine in-process."""
    scope = namespace()
    exec((HERE / "packages" / "queries" / "main.py").read_text(), scope)  # trusted benchmark code, not sandboxed
    ctx = Context(catalog.manifest, ["population", "bus_stops"])
    engine = ArrowEngine(catalog.table)
    out = {}
    for query in QUERIES:
        data = export_outputs(scope["run"](ctx, query=query))
        protected = protect({k: plan.from_data(v["plan"]) for k, v in data.items()}, catalog.manifest)
        plans = [p.plan for p in protected.values()]
        out[query] = lambda plans=plans: engine.execute_all(plans)
    return out


def run_job(client: Client, package: str, params: dict[str, Any]) -> float:
    start = time.perf_counter()
    job = client.run_job(package, params)
    final = client.wait(job.id, timeout=600)
    if final.state != "succeeded":
        raise SystemExit(f"{package} {params}: {final.error_code}: {final.error_message}")
    client.get_result(job.id)
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10_000_000, help="persons in the generated catalog")
    parser.add_argument("--data", type=Path, help="catalog directory to use (generated there if missing)")
    parser.add_argument("--runs", type=int, default=50, help="trivial jobs for the overhead percentiles")
    parser.add_argument(
        "--release-quantum-ms",
        type=int,
        default=0,
        help="the server's release quantum (0: timing protection off, the raw overhead; the server default is 250)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of N for each query")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="saferoom-bench-") as tmp:
        data = args.data or Path(tmp) / "data"
        if not (data / "catalog.json").exists():
            start = time.perf_counter()
            generate_catalog(data, scale=args.scale, seed=7, differential_privacy=False, output_checking=False)
            print(f"generated {args.scale:,} persons in {time.perf_counter() - start:.1f} s")
        pki = Path(tmp) / "pki"
        init_authority(pki)
        researcher = issue_identity(pki, "bench-researcher", "researcher").profile
        operator = issue_identity(pki, "bench-operator", "operator").profile
        config = ServerConfig.load(
            env={},
            data_dir=data,
            state_dir=Path(tmp) / "state",
            pki_dir=pki,
            listen="127.0.0.1:0",
            max_concurrent_jobs=1,
            release_quantum_ms=args.release_quantum_ms,
        )
        server, port = create_server(config)
        address = f"127.0.0.1:{port}"
        try:
            with (
                Client.from_profile(researcher, server=address, timeout=600) as client,
                Client.from_profile(operator, server=address, timeout=600) as reviewer,
            ):
                for package in ("trivial", "queries"):
                    summary, _ = client.submit_package(HERE / "packages" / package)
                    reviewer.approve_package(summary.hash, days=1)
                for _ in range(5):  # warm-up
                    run_job(client, "bench-trivial", {})
                overhead = [run_job(client, "bench-trivial", {}) * 1000 for _ in range(args.runs)]
                print(
                    f"\nper-job overhead, trivial job over gRPC ({args.runs} runs, "
                    f"release_quantum_ms {args.release_quantum_ms}): "
                    f"p50 {statistics.median(overhead):.1f} ms, p95 {percentile(overhead, 0.95):.1f} ms"
                )
                trivial = client.get_package("bench-trivial").hash
                checks = []
                for _ in range(200):
                    start = time.perf_counter()
                    server.packages.verify_run(trivial, {}, ("bus_stops",))
                    checks.append((time.perf_counter() - start) * 1000)
                print(f"approval check (one of two per job): p50 {statistics.median(checks):.2f} ms")

                catalog = Catalog.open(data)
                people, stops = catalog.table("population"), catalog.table("bus_stops")
                plain = pyarrow_queries(people, stops)
                duck = duckdb_queries(people, stops)
                engine = engine_queries(catalog)
                print(f"\nms, best of {args.repeat}; job: the whole job over gRPC; engine: its released plan alone")
                print(
                    f"{'query':<16}{'job':>8}{'engine':>8}{'pyarrow':>9}{'duckdb':>8}"
                    f"{'job/pyarrow':>13}{'engine/pyarrow':>16}{'engine/duckdb':>15}"
                )
                for query in QUERIES:
                    job = best_of(lambda q=query: run_job(client, "bench-queries", {"query": q}), args.repeat)
                    ours = best_of(engine[query], args.repeat)
                    base = best_of(plain[query], args.repeat)
                    dd = best_of(duck[query], args.repeat) if duck else float("nan")
                    print(
                        f"{query:<16}{job * 1000:>8.1f}{ours * 1000:>8.1f}{base * 1000:>9.1f}{dd * 1000:>8.1f}"
                        f"{job / base:>13.2f}{ours / base:>16.2f}{ours / dd:>15.2f}"
                    )
                catalog.close()
        finally:
            server.stop(1.0)


if __name__ == "__main__":
    main()
