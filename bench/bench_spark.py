"""Benchmark: the foundation's queries on the Arrow engine, on Spark local and on a Spark standalone "cluster"
(a master and 2 workers of 1 core each, all on loopback), and how their time grows with the city.

    python bench/bench_spark.py [--scales 10000000,30000000] [--data DIR] [--modes arrow,local,cluster]

For each scale: the city is generated (exact rules), population and housing are written as Parquet partitioned
by district, and each query's released plan (contributor counting and suppression included, as in
bench_jobs.py's "engine alone") is executed by each engine, best of --repeat after one warm-up. Spark reads the
Parquet; Arrow reads the memory-mapped IPC file. Prints seconds and population rows per second. Numbers only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog import Catalog, generate_catalog
from saferoom.catalog.parquet import export_to_spark
from saferoom.disclosure import protect
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.spark import SparkEngine, connect
from saferoom.engine.spark_local import LocalConnectServer, free_port, spark_home

HERE = Path(__file__).resolve().parent
QUERIES = ["groupby", "filter_groupby", "histogram", "median", "join_groupby"]
MEMORY = "6g"  # per Spark JVM that computes (local: the driver; cluster: each executor)


def released_plans(manifest: Any) -> dict[str, list[plan.Node]]:
    scope = namespace()
    exec((HERE / "packages" / "queries" / "main.py").read_text(), scope)  # trusted benchmark code, not sandboxed
    ctx = Context(manifest, ["population", "bus_stops"])
    out = {}
    for query in QUERIES:
        data = export_outputs(scope["run"](ctx, query=query))
        protected = protect({k: plan.from_data(v["plan"]) for k, v in data.items()}, manifest)
        out[query] = [p.plan for p in protected.values()]
    return out


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (JIT, file listing, caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@contextmanager
def standalone(workdir: Path, workers: int = 2) -> Iterator[str]:
    """A Spark standalone master and ``workers`` workers (1 core each) on 127.0.0.1; yields the master URL."""
    home = spark_home()
    env = {"SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "PATH": "/usr/bin:/bin"}
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    processes = []
    logs = []
    try:
        log = (workdir / "master.log").open("wb")
        logs.append(log)
        processes.append(
            subprocess.Popen(
                [
                    spark_class,
                    "org.apache.spark.deploy.master.Master",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--webui-port",
                    str(free_port()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
        time.sleep(4)
        for i in range(workers):
            log = (workdir / f"worker{i}.log").open("wb")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        MEMORY,
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(workdir / f"w{i}"),
                        master_url,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        time.sleep(4)
        yield master_url
    finally:
        for p in reversed(processes):
            p.terminate()
            p.wait(30)
        for log in logs:
            log.close()


def spark_times(
    url: str, manifest: Any, data: Path, plans: dict[str, list[plan.Node]], repeat: int
) -> dict[str, float]:
    session = connect(url)
    locations = {n: i.location for n, i in manifest.datasets.items() if i.location}
    catalog = Catalog.open(data)  # the public Arrow datasets, shipped with the plans that join them
    engine = SparkEngine(session, manifest, locations, local=catalog.table)
    out = {}
    try:
        for q, p in plans.items():
            try:
                out[q] = timed(lambda p=p: engine.execute_all(p), repeat)
            except Exception as exc:  # e.g. out of memory at 100M: report it, go on
                print(f"  {q}: failed: {str(exc).splitlines()[0][:200]}", flush=True)
        return out
    finally:
        session.stop()
        catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="10000000,30000000")
    parser.add_argument("--data", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--modes", default="arrow,local,cluster")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    modes = args.modes.split(",")
    root = args.data or Path(tempfile.mkdtemp(prefix="saferoom-bench-spark-"))
    results: dict[tuple[int, str, str], float] = {}
    try:
        for scale in (int(s) for s in args.scales.split(",")):
            work = root / str(scale)
            shutil.rmtree(work, ignore_errors=True)
            start = time.perf_counter()
            generate_catalog(work / "arrow", scale=scale, seed=7, differential_privacy=False, output_checking=False)
            generated = time.perf_counter() - start
            start = time.perf_counter()
            personal = ["population", "housing_transactions"]
            manifest = export_to_spark(work / "arrow", work / "data", work / "parquet", personal)
            exported = time.perf_counter() - start
            print(f"\n{scale:,} persons: generated in {generated:.1f} s, Parquet in {exported:.1f} s", flush=True)
            plans = released_plans(manifest)
            if "arrow" in modes:
                with Catalog.open(work / "arrow") as catalog:
                    engine = ArrowEngine(catalog.table)
                    for q, p in plans.items():
                        results[(scale, "arrow", q)] = timed(lambda p=p, e=engine: e.execute_all(p), args.repeat)
                report(results, scale, "arrow")
            conf = {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": MEMORY}
            if "local" in modes:
                server = LocalConnectServer(work / "connect-local.log", master="local[2]", conf=conf).wait()
                try:
                    for q, t in spark_times(server.url, manifest, work / "data", plans, args.repeat).items():
                        results[(scale, "local", q)] = t
                finally:
                    server.stop()
                report(results, scale, "local")
            if "cluster" in modes:
                with standalone(work) as master:
                    conf = {
                        **conf,
                        "spark.driver.memory": "2g",
                        "spark.executor.memory": MEMORY,
                        "spark.executor.cores": "1",
                    }
                    server = LocalConnectServer(work / "connect-cluster.log", master=master, conf=conf).wait()
                    try:
                        for q, t in spark_times(server.url, manifest, work / "data", plans, args.repeat).items():
                            results[(scale, "cluster", q)] = t
                    finally:
                        server.stop()
                report(results, scale, "cluster")
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if args.data is None:
            shutil.rmtree(root, ignore_errors=True)
    summary(results)


def report(results: dict[tuple[int, str, str], float], scale: int, mode: str) -> None:
    for q in QUERIES:
        if (scale, mode, q) in results:
            t = results[(scale, mode, q)]
            print(f"  {mode:8} {q:15} {t:8.3f} s  {scale / t / 1e6:8.1f} M rows/s", flush=True)


def summary(results: dict[tuple[int, str, str], float]) -> None:
    scales = sorted({s for s, _, _ in results})
    modes = [m for m in ("arrow", "local", "cluster") if any(k[1] == m for k in results)]
    print("\n| query | " + " | ".join(f"{m} {s / 1e6:.0f}M" for m in modes for s in scales) + " |")
    print("|---|" + "---|" * (len(modes) * len(scales)))
    for q in QUERIES:
        cells = []
        for m in modes:
            for s in scales:
                t = results.get((s, m, q))
                cells.append("-" if t is None else f"{t:.2f} s ({s / t / 1e6:.0f}M/s)")
        print(f"| {q} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
