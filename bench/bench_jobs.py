"""Benchmark: jobs end to end over gRPC (latency with the quantum off, throughput with it on), and the reference
queries as saferoom jobs next to the same queries in plain pyarrow and DuckDB.

    python bench/bench_jobs.py [--scale 10000000] [--data DIR] [--runs 50] [--repeat 7] [--seconds 15]
                               [--clients 32] [--skip-queries]

Prints every setting it runs with, then:
(1) trivial-job latency over mutual-TLS gRPC (RunJob -> WatchJob until settled -> GetResult) with
    ``release_quantum_ms = 0`` (timing protection off): median, p95, min and max of --runs jobs, and the
    processor time they took per job: the whole machine's (from /proc/stat: shared, not this benchmark alone),
    the server process's, each worker pool's (its zygote's forks and its workers, reaped) and the client's;
(2) trivial-job throughput with the default quantum (timing protection on), --clients client threads over four
    researcher identities for --seconds: jobs per second, the latency's median/min/max, how many ended on the
    quantum's grid, and how busy the machine's processors were (from /proc/stat: the whole machine, which is
    shared, not this benchmark alone). Each client keeps one job in flight, and a protected trivial job lasts at
    least two quanta (its padded worst case is over 250 ms: README "Timing"), so N clients cannot pass N / 0.5
    jobs/s whatever the processors do: the default, 32 (8 per researcher, the streams each may hold open), is
    enough to find the processors' limit;
(3) for each reference query, interleaved round by round (job, engine, pyarrow, DuckDB; --repeat rounds): the
    median with min and max of each side, and whether their results agree (keys exactly, values to 1e-9
    relative; the saferoom job's result is its released table). "engine" runs the released plan (contributor
    counting and suppression included) in process, "job" adds the sandbox and engine workers, SQLite, the audit
    log and three RPCs, with the quantum off.
"engine" is the whole release of the job's outputs in this process (``release_in_process``): every plan the job's
engine run executes (the outputs, their subset checks, cell lists and the differencing sizes), through the engine
worker's own task (JSON plans in, IPC streams out), and the release rules applied to the results; the job adds the
rest. (Before, it ran the output plans alone, which left out a third to two thirds of the job's engine work.)
The clients of (1) and (2) run in a process of their own, as a researcher's client does: in the server's process
their gRPC and Python work would compete with the server's for one interpreter lock and be counted as the
server's time (measured: about 10 ms of a trivial job's). The servers run in this process (the approval check
is timed on them directly); (3)'s jobs are sent from this process.
Numbers only; nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
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
from saferoom.disclosure import Protected, Released, protect
from saferoom.disclosure.rounds import release_all
from saferoom.engine import plan
from saferoom.identity import init_authority, issue_identity
from saferoom.jobs.engine_task import execute_plans, to_ipc
from saferoom.server import SaferoomServer, create_server

HERE = Path(__file__).resolve().parent
QUERIES = ["groupby", "filter_groupby", "histogram", "median", "join_groupby"]
KEYS = {"histogram": "band"}  # every other query is keyed by district
RESEARCHERS = 4  # identities the throughput clients spread over (each may hold 8 streams)
Canonical = dict[Any, tuple[float, ...]]


def pyarrow_queries(people: pa.Table, stops: pa.Table) -> dict[str, Callable[[], pa.Table]]:
    """The reference queries by hand on the memory-mapped tables (hash group-by; the median by pyarrow's exact
    quantile over each district's rows)."""

    def median_by_district() -> pa.Table:
        grouped = people.group_by("district").aggregate([("income", "approximate_median")])  # keys only
        districts = grouped.column("district").to_pylist()
        medians = [
            pc.quantile(people["income"].filter(pc.equal(people["district"], d)), q=0.5)[0].as_py() for d in districts
        ]
        return pa.table({"district": districts, "median_income": medians})

    def join_groupby() -> pa.Table:
        per = people.group_by("district").aggregate([([], "count_all"), ("income", "mean")])
        per = per.rename_columns(["district", "n", "income"]).cast(
            pa.schema([pa.field("district", pa.string()), pa.field("n", pa.int64()), pa.field("income", pa.float64())])
        )
        s = stops.group_by("district").aggregate([([], "count_all")]).rename_columns(["district", "stops"])
        s = s.cast(pa.schema([pa.field("district", pa.string()), pa.field("stops", pa.int64())]))
        joined = per.join(s, "district", join_type="left outer")
        return joined.append_column("per_stop", pc.divide(pc.cast(joined["n"], pa.float64()), joined["stops"]))

    def histogram() -> pa.Table:
        band = pc.multiply(
            pc.min_element_wise(pc.max_element_wise(pc.floor(pc.divide(people["income"], 50_000.0)), 0.0), 19.0),
            50_000.0,
        )
        return pa.table({"band": band}).group_by("band").aggregate([([], "count_all")]).rename_columns(["band", "n"])

    return {
        "groupby": lambda: (
            people.group_by("district")
            .aggregate([([], "count_all"), ("income", "mean")])
            .rename_columns(["district", "n", "income"])
        ),
        "filter_groupby": lambda: (
            people.select(["district", "age"])
            .filter(pc.greater_equal(people["age"], 18))
            .group_by("district")
            .aggregate([([], "count_all")])
            .rename_columns(["district", "n"])
        ),
        "histogram": histogram,
        "median": median_by_district,
        "join_groupby": join_groupby,
    }


def duckdb_queries(people: pa.Table, stops: pa.Table) -> dict[str, Callable[[], pa.Table]] | None:
    try:
        import duckdb
    except ImportError:
        return None
    con = duckdb.connect()
    con.register("people", people)
    con.register("stops", stops)
    con.execute("SET threads TO 2")
    sql = {
        "groupby": "select district, count(*) n, avg(income) income from people group by district",
        "filter_groupby": "select district, count(*) n from people where age >= 18 group by district",
        "histogram": "select least(greatest(floor(income / 50000), 0), 19) * 50000 as band, count(*) n "
        "from people group by band",
        "median": "select district, quantile_cont(income, 0.5) median_income from people group by district",
        "join_groupby": "with p as (select district, count(*) n, avg(income) income from people "
        "group by district), "
        "s as (select district, count(*) stops from stops group by district) "
        "select p.*, s.stops, p.n / s.stops per_stop from p left join s using (district)",
    }
    return {name: (lambda q=q: con.sql(q).to_arrow_table()) for name, q in sql.items()}


def release_in_process(catalog: Catalog, protected: dict[str, Protected], engine: str = "arrow") -> dict[str, Released]:
    """What a job's release does, in this process: every engine run of ``release_all`` through the engine
    worker's task (``execute_plans``: JSON plans in, IPC streams out) on the catalog, and the rules applied."""

    def execute(work: list[list[Any]], inputs: dict[str, pa.Table]) -> dict[str, tuple[pa.Table, dict[str, int]]]:
        labels = sorted(inputs)
        request = {"plans": work, "inputs": labels, "engine": engine}
        meta, blobs = execute_plans(catalog, request, [to_ipc(inputs[x]) for x in labels])
        return {
            m["name"]: (pa.ipc.open_stream(pa.py_buffer(b)).read_all(), m["dropped"])
            for m, b in zip(meta["outputs"], blobs, strict=True)
        }

    return release_all(protected, catalog.manifest, execute, {})


def engine_queries(catalog: Catalog) -> dict[str, Callable[[], pa.Table]]:
    """Each query released in-process (``release_in_process``): its released table."""
    scope = namespace()
    exec((HERE / "packages" / "queries" / "main.py").read_text(), scope)  # trusted benchmark code, not sandboxed
    ctx = Context(catalog.manifest, ["population", "bus_stops"])
    out = {}
    for query in QUERIES:
        data = export_outputs(scope["run"](ctx, query=query))
        nodes = plan.share_subtrees({k: plan.from_data(v["plan"]) for k, v in data.items()})
        protected = protect(nodes, catalog.manifest)
        out[query] = lambda protected=protected: release_in_process(catalog, protected)["result"].table
    return out


def canonical(query: str, table: pa.Table) -> Canonical:
    """A query's result as {key: values}, whatever side computed it (released columns only)."""
    key = KEYS.get(query, "district")
    values = [c for c in ("n", "income", "median_income", "stops", "per_stop") if c in table.column_names]
    rows = table.to_pylist()
    out: Canonical = {}
    for row in rows:
        k = row[key]
        out[float(k) if query == "histogram" else str(k)] = tuple(
            float("nan") if row[c] is None else float(row[c]) for c in values
        )
    return out


def agree(a: Canonical, b: Canonical) -> bool:
    if set(a) != set(b):
        return False
    return all(
        len(x) == len(y) and all(math.isclose(p, q, rel_tol=1e-9, abs_tol=1e-9) for p, q in zip(x, y, strict=True))
        for k in a
        for x, y in [(a[k], b[k])]
    )


def run_job(client: Client, package: str, params: dict[str, Any]) -> tuple[float, Any]:
    """Seconds from RunJob to the result fetched, and the job as it settled."""
    start = time.perf_counter()
    job = client.run_job(package, params)
    final = client.wait(job.id, timeout=600)
    if final.state != "succeeded":
        raise SystemExit(f"{package} {params}: {final.error_code}: {final.error_message}")
    result = client.get_result(job.id)
    return time.perf_counter() - start, (final, result)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f}  min {min(values):7.1f}  max {max(values):7.1f}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def start(config: ServerConfig) -> tuple[SaferoomServer, str]:
    server, port = create_server(config)
    return server, f"127.0.0.1:{port}"


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")  # milliseconds per jiffy of /proc's counters


def process_ms(pid: int) -> tuple[float, float]:
    """(own, reaped children's) processor milliseconds of process ``pid`` so far (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_MS, (int(fields[13]) + int(fields[14])) * TICK_MS


def latency_loop(server_address: str, profile: Path, package: str, runs: int, pids: dict[str, int]) -> dict[str, Any]:
    """Milliseconds of each of ``runs`` trivial jobs run one after the other (after 5 to warm up), and the
    processor milliseconds per job they took: the machine's, this client's, and each of ``pids``'s own and its
    reaped children's (a zygote's children are its workers; the client's own only)."""
    with Client.from_profile(profile, server=server_address, timeout=600) as client:
        for _ in range(5):
            run_job(client, package, {})
        machine, mine, before = cpu_busy(), os.times(), {name: process_ms(pid) for name, pid in pids.items()}
        took = [run_job(client, package, {})[0] * 1000 for _ in range(runs)]
        after_machine, after_mine = cpu_busy(), os.times()
        cpu = {
            name: [(a - b) / runs for a, b in zip(process_ms(pid), before[name], strict=True)]
            for name, pid in pids.items()
        }
    cpu["client"] = [(after_mine.user + after_mine.system - mine.user - mine.system) * 1000 / runs, 0.0]
    return {"ms": took, "cpu": cpu, "machine": (after_machine[0] - machine[0]) * TICK_MS / runs}


def throughput_loop(
    server_address: str, profiles: list[Path], package: str, seconds: float, clients: int
) -> dict[str, Any]:
    """Trivial jobs from ``clients`` threads for ``seconds``: (latency, server-side start and end) of each, the
    seconds it took and the machine's busy and total jiffies meanwhile."""
    done: list[tuple[float, float, float]] = []  # (latency, server-side start, server-side end)
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client_loop(profile: Path) -> None:
        with Client.from_profile(profile, server=server_address, timeout=600) as client:
            while time.monotonic() < stop:
                took, (final, _) = run_job(client, package, {})
                with lock:
                    done.append((took, final.started_at or 0.0, final.finished_at or 0.0))

    threads = [threading.Thread(target=client_loop, args=(profiles[i % len(profiles)],)) for i in range(clients)]
    busy0, total0 = cpu_busy()
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    busy1, total1 = cpu_busy()
    return {"done": done, "elapsed": elapsed, "busy": busy1 - busy0, "total": total1 - total0}


def in_client_process(task: str, **spec: Any) -> Any:
    """Run ``latency_loop`` or ``throughput_loop`` in a client process of its own; returns what it returned."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--client", json.dumps({"task": task, **spec})],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.splitlines()[-1])


def client_main(spec: dict[str, Any]) -> None:
    """The client process's side of ``in_client_process``: one loop, its result as the last line of JSON."""
    task = spec.pop("task")
    if task == "latency":
        result: Any = latency_loop(spec["address"], Path(spec["profile"]), spec["package"], spec["runs"], spec["pids"])
    else:
        profiles = [Path(p) for p in spec["profiles"]]
        result = throughput_loop(spec["address"], profiles, spec["package"], spec["seconds"], spec["clients"])
    print(json.dumps(result))


def throughput(
    server_address: str, profiles: list[Path], package: str, seconds: float, clients: int, quantum: float
) -> None:
    """Trivial jobs from ``clients`` threads (in a client process) for ``seconds``: jobs/s, latency, grid, CPU."""
    run = in_client_process(
        "throughput",
        address=server_address,
        profiles=[str(p) for p in profiles],
        package=package,
        seconds=seconds,
        clients=clients,
    )
    done = [(float(took), float(began), float(ended)) for took, began, ended in run["done"]]
    elapsed, busy, total = run["elapsed"], run["busy"], run["total"]
    latencies = [d[0] * 1000 for d in done]
    # On the grid: the job's end published a whole number of quanta after it started (within 50 ms: storing the
    # result and the server's own start-of-job bookkeeping lie between the two timestamps).
    on_grid = sum(1 for _, s, e in done if (e - s) % quantum < 0.05 or quantum - (e - s) % quantum < 0.01)
    print(
        f"  {len(done)} jobs in {elapsed:.1f} s: {len(done) / elapsed:.1f} jobs/s; latency ms {spread(latencies)}; "
        f"{on_grid}/{len(done)} ended on the {quantum * 1000:.0f} ms grid; "
        f"machine CPU busy {100 * busy / max(1, total):.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10_000_000, help="persons in the generated catalog")
    parser.add_argument("--data", type=Path, help="catalog directory to use (generated there if missing)")
    parser.add_argument("--runs", type=int, default=50, help="trivial jobs for the latency figures")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved rounds of each query")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the throughput run lasts")
    parser.add_argument("--clients", type=int, default=32, help="client threads of the throughput run")
    parser.add_argument("--skip-queries", action="store_true", help="only the per-job figures (1) and (2)")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: run as the client process of (1) or (2)
    args = parser.parse_args()
    if args.client:
        client_main(json.loads(args.client))
        return

    with tempfile.TemporaryDirectory(prefix="saferoom-bench-") as tmp:
        data = args.data or Path(tmp) / "data"
        if not (data / "catalog.json").exists():
            began = time.perf_counter()
            generate_catalog(data, scale=args.scale, seed=7, differential_privacy=False, output_checking=False)
            print(f"generated {args.scale:,} persons in {time.perf_counter() - began:.1f} s")
        pki = Path(tmp) / "pki"
        init_authority(pki)
        researchers = [issue_identity(pki, f"bench-researcher-{i}", "researcher").profile for i in range(RESEARCHERS)]
        operator = issue_identity(pki, "bench-operator", "operator").profile
        default = ServerConfig()

        def config(name: str, quantum: int) -> ServerConfig:
            return ServerConfig.load(
                env={},
                data_dir=data,
                state_dir=Path(tmp) / name,
                pki_dir=pki,
                listen="127.0.0.1:0",
                release_quantum_ms=quantum,
            )

        off, on = config("state-off", 0), config("state-on", default.release_quantum_ms)
        rows = Catalog.open(data).manifest.dataset("population").rows
        print(
            f"settings: {rows:,} persons, {os.cpu_count()} processors (shared with whatever else runs), "
            f"max_concurrent_jobs {off.max_concurrent_jobs}, max_code_phases {off.max_code_phases}, "
            f"max_queued_jobs {off.max_queued_jobs}, seccomp {off.seccomp}, landlock {off.landlock}, "
            f"network namespace {off.network_namespace}; release_quantum_ms 0 for (1) and (3), "
            f"{on.release_quantum_ms} (the default) for (2)"
        )
        servers = [start(off), start(on)]
        try:
            for _, address in servers:
                for profile in researchers:  # a researcher runs only what they submitted
                    with (
                        Client.from_profile(profile, server=address, timeout=600) as client,
                        Client.from_profile(operator, server=address, timeout=600) as reviewer,
                    ):
                        for package in ("trivial", "queries"):
                            summary, _ = client.submit_package(HERE / "packages" / package)
                            if summary.status != "approved":
                                reviewer.approve_package(summary.hash, days=1)
            (server, address), (_, quantised) = servers
            pids = {"server": os.getpid(), **{f"{k} pool": v for k, v in server.pipeline.zygote_pids.items() if v}}
            run = in_client_process(
                "latency", address=address, profile=str(researchers[0]), package="bench-trivial", runs=args.runs,
                pids=pids,
            )  # fmt: skip
            latency, cpu = run["ms"], run["cpu"]
            print(
                f"\n(1) trivial job over gRPC, quantum off ({args.runs} runs, client in its own process): "
                f"ms {spread(latency)}, p95 {percentile(latency, 0.95):.1f}"
            )
            parts = ", ".join(
                f"{name} {own + kids:.1f}" + (f" (zygote {own:.1f}, its workers {kids:.1f})" if "pool" in name else "")
                for name, (own, kids) in cpu.items()
            )
            print(f"    processor time per job: {run['machine']:.1f} ms of the whole machine; {parts}")
            with Client.from_profile(researchers[0], server=address, timeout=600) as client:
                trivial = client.get_package("bench-trivial").hash
                checks = []
                for _ in range(200):
                    began = time.perf_counter()
                    server.packages.verify_run(trivial, {}, ("bus_stops",))
                    checks.append((time.perf_counter() - began) * 1000)
                print(f"    approval check (one of two per job): median {statistics.median(checks):.2f} ms")

            print(
                f"\n(2) trivial-job throughput, release_quantum_ms {on.release_quantum_ms}, {args.clients} clients "
                f"over {RESEARCHERS} researchers (threads of one client process), {args.seconds:g} s:"
            )
            throughput(
                quantised, researchers, "bench-trivial", args.seconds, args.clients, on.release_quantum_ms / 1000
            )

            if args.skip_queries:
                return
            catalog = Catalog.open(data)
            people, stops = catalog.table("population"), catalog.table("bus_stops")
            plain = pyarrow_queries(people, stops)
            duck = duckdb_queries(people, stops)
            engine = engine_queries(catalog)
            print(f"\n(3) ms, {args.repeat} interleaved rounds (job: quantum off)")
            with Client.from_profile(researchers[0], server=address, timeout=600) as client:
                for query in QUERIES:
                    times: dict[str, list[float]] = {"job": [], "engine": [], "pyarrow": [], "duckdb": []}
                    results: dict[str, Canonical] = {}
                    for _ in range(args.repeat):
                        took, (_, result) = run_job(client, "bench-queries", {"query": query})
                        times["job"].append(took * 1000)
                        results["job"] = canonical(query, result.output("result").table)
                        for side, fn in (("engine", engine[query]), ("pyarrow", plain[query])) + (
                            (("duckdb", duck[query]),) if duck else ()
                        ):
                            began = time.perf_counter()
                            out = fn()
                            times[side].append((time.perf_counter() - began) * 1000)
                            results[side] = canonical(query, out)
                    # Cells the release suppressed (too few persons) are compared by their keys only.
                    suppressed = {k for k, v in results["job"].items() if any(math.isnan(x) for x in v)}
                    shown = {side: {k: v for k, v in r.items() if k not in suppressed} for side, r in results.items()}
                    same = all(agree(shown["job"], other) for other in shown.values()) and all(
                        set(r) == set(results["job"]) for r in results.values()
                    )
                    note = f" ({len(suppressed)} suppressed cells compared by key only)" if suppressed else ""
                    print(f"{query:<15} results {'agree' if same else 'DIFFER'}{note}")
                    for side, values in times.items():
                        if values:
                            print(f"    {side:<8} {spread(values)}")
                    if not same:
                        for side, other in results.items():
                            extra, missing = set(other) - set(results["job"]), set(results["job"]) - set(other)
                            wrong = [
                                k for k in other if k in shown["job"] and not agree({k: other[k]}, {k: shown["job"][k]})
                            ]
                            print(
                                f"    {side}: keys not in the job's {sorted(extra)[:5]}, "
                                f"missing {sorted(missing)[:5]}, values differ at {wrong[:5]}"
                            )
            catalog.close()
        finally:
            for srv, _ in servers:
                srv.stop(1.0)


if __name__ == "__main__":
    main()
