"""Benchmark: issue 17's seven queries on saferoom's engines, raw and protected, against DuckDB (and Polars).

    python bench/bench_engine.py [--persons 10000000] [--runs 7] [--data DIR] [--threads 2] [--queries a,b]

One generated city (exact rules: the protected plans are released by contributor counts, clamps and dominance
statistics computed in the engine). For each query, every side runs on the same memory-mapped Arrow tables:

    arrow raw       saferoom's Arrow engine, the plan algorithm code builds
    duck raw        saferoom's DuckDB engine, the same plan
    arrow prot      the whole release (``protect``, then ``bench_jobs.release_in_process``): every plan the job's
                    engine run executes (outputs, subset checks, cell lists, differencing sizes), as the engine
                    worker does (``execute_plans``: JSON plans in, IPC streams out), on the Arrow engine, and
                    the release rules applied: the released table
    duck prot       the same, on the DuckDB engine
    duckdb          hand-written DuckDB SQL over the same Arrow tables (one connection, threads as given)
    polars          hand-written Polars over the same tables (when polars is installed)

Queries are measured one after the other; within a query the sides are interleaved (every run visits every
side in a shuffled order), after one warm-up each, and its row is printed at once.
Results are checked equal across the raw sides (sorted rows, floats to 1e-9 relative) and across the two
protected sides. Prints the median, min and max seconds per side and the ratios to DuckDB's raw median. The
release quantum plays no part here (no server, no job). Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_jobs import release_in_process
from saferoom.api import Context, export_outputs, namespace
from saferoom.catalog import Catalog, generate_catalog
from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import Protected, protect
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.duckdb_engine import DuckDBEngine

QUERIES = ("groupby", "filter_groupby", "histogram", "median", "join_stops", "join_housing", "count_distinct")

ALGORITHM = """
def run(ctx, query):
    people = ctx.table("population")
    if query == "groupby":
        out = people.group_by("district").agg(n=count(), income=mean("income"))
    elif query == "filter_groupby":
        out = people.filter(col("age") >= 18).group_by("district").agg(n=count(), income=mean("income"))
    elif query == "histogram":
        out = people.with_columns(band=histogram(col("income"), 0, 1000000, 50)).group_by("band").agg(n=count())
    elif query == "median":
        out = people.group_by("district").agg(median_income=median("income"))
    elif query == "join_stops":
        stops = ctx.table("bus_stops").group_by("district").agg(stops=count())
        out = (
            people.group_by("district")
            .agg(n=count(), income=mean("income"))
            .join(stops, on="district", how="left")
            .with_columns(per_stop=col("n") / col("stops"))
        )
    elif query == "join_housing":
        sales = ctx.table("housing_transactions").select(person_id="buyer_id", price="price")
        out = (
            people.select("person_id", "district")
            .join(sales, on="person_id")
            .group_by("district")
            .agg(n=count(), price=mean("price"))
        )
    else:
        out = people.group_by("district").agg(households=count_distinct("household_id"))
    return {"result": out}
"""

SQL = {
    "groupby": "SELECT district, count(*) AS n, avg(income) AS income FROM population GROUP BY district",
    "filter_groupby": "SELECT district, count(*) AS n, avg(income) AS income FROM population WHERE age >= 18 "
    "GROUP BY district",
    "histogram": "SELECT least(greatest(floor((income - 0.0) / 20000.0), 0), 49) * 20000.0 AS band, count(*) AS n "
    "FROM population GROUP BY band",
    "median": "SELECT district, quantile_cont(income, 0.5) AS median_income FROM population GROUP BY district",
    "join_stops": "SELECT p.district, p.n, p.income, s.stops, p.n / s.stops AS per_stop FROM (SELECT district, "
    "count(*) AS n, avg(income) AS income FROM population GROUP BY district) p LEFT JOIN (SELECT district, "
    "count(*) AS stops FROM bus_stops GROUP BY district) s USING (district)",
    "join_housing": "SELECT p.district, count(*) AS n, avg(h.price) AS price FROM population p JOIN "
    "housing_transactions h ON p.person_id = h.buyer_id GROUP BY p.district",
    "count_distinct": "SELECT district, count(DISTINCT household_id) AS households FROM population GROUP BY district",
}


def polars_queries(tables: dict[str, pa.Table]) -> dict[str, Callable[[], pa.Table]] | None:
    try:
        import polars as pl
    except ImportError:
        return None
    people = pl.from_arrow(tables["population"])
    stops = pl.from_arrow(tables["bus_stops"])
    sales = pl.from_arrow(tables["housing_transactions"])
    assert isinstance(people, pl.DataFrame) and isinstance(stops, pl.DataFrame) and isinstance(sales, pl.DataFrame)
    lazy, stop_lazy, sale_lazy = people.lazy(), stops.lazy(), sales.lazy()
    by = lazy.group_by("district")
    band = (((pl.col("income") / 20000.0).floor().clip(0, 49)) * 20000.0).alias("band")
    frames: dict[str, Any] = {
        "groupby": by.agg(pl.len().alias("n"), pl.col("income").mean()),
        "filter_groupby": lazy.filter(pl.col("age") >= 18)
        .group_by("district")
        .agg(pl.len().alias("n"), pl.col("income").mean()),
        "histogram": lazy.group_by(band).agg(pl.len().alias("n")),
        "median": by.agg(pl.col("income").median().alias("median_income")),
        "join_stops": by.agg(pl.len().alias("n"), pl.col("income").mean())
        .join(stop_lazy.group_by("district").agg(pl.len().alias("stops")), on="district", how="left")
        .with_columns((pl.col("n") / pl.col("stops")).alias("per_stop")),
        "join_housing": lazy.select("person_id", "district")
        .join(sale_lazy.select(pl.col("buyer_id").alias("person_id"), "price"), on="person_id")
        .group_by("district")
        .agg(pl.len().alias("n"), pl.col("price").mean()),
        "count_distinct": by.agg(pl.col("household_id").n_unique().alias("households")),
    }
    return {q: (lambda f=f: f.collect().to_arrow()) for q, f in frames.items()}


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    plain = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    rows = [tuple(r.values()) for r in pa.table(plain, names=table.column_names).to_pylist()]
    return sorted(rows, key=lambda r: tuple((v is None, str(v) if isinstance(v, str) else v or 0) for v in r))


def same(a: pa.Table, b: pa.Table) -> bool:
    ra, rb = _rows(a), _rows(b)
    if len(ra) != len(rb):
        return False
    for x, y in zip(ra, rb, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, int | float) and isinstance(v, int | float) and not isinstance(u, bool):
                if not (u == v or math.isclose(float(u), float(v), rel_tol=1e-9)):
                    return False
            elif u != v:
                return False
    return True


def build(manifest: Manifest) -> tuple[dict[str, plan.Node], dict[str, dict[str, Protected]]]:
    scope = namespace()
    exec(ALGORITHM, scope)  # trusted benchmark code, not sandboxed
    ctx = Context(manifest, ["population", "bus_stops", "housing_transactions"])
    raw, protected = {}, {}
    for query in QUERIES:
        data = export_outputs(scope["run"](ctx, query=query))
        nodes = {k: plan.from_data(v["plan"]) for k, v in data.items()}
        raw[query] = nodes["result"]
        protected[query] = protect(plan.share_subtrees(nodes), manifest)
    return raw, protected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mib", type=int, default=6144)
    parser.add_argument(
        "--data", type=Path, default=None, help="a generated city (default: $TMPDIR/bench-engine-N, kept)"
    )
    parser.add_argument("--queries", default=",".join(QUERIES))
    parser.add_argument("--sides", default="arrow raw,duck raw,arrow prot,duck prot,duckdb,polars")
    args = parser.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / f"bench-engine-{args.persons}"
    if not (data / "catalog.json").exists():
        print(f"generating {args.persons:,} persons in {data} ...", flush=True)
        generate_catalog(data, scale=args.persons, seed=7, differential_privacy=False, output_checking=False)
    import duckdb

    catalog = Catalog.open(data)
    manifest = catalog.manifest
    raw, protected = build(manifest)
    tables = {name: catalog.table(name) for name in ("population", "bus_stops", "housing_transactions")}
    con = duckdb.connect(config={"threads": args.threads, "memory_limit": f"{args.memory_mib}MiB"})
    for name, table in tables.items():
        con.register(name, table)
    polars = polars_queries(tables)
    queries = [q for q in args.queries.split(",") if q]
    wanted = [s.strip() for s in args.sides.split(",")]

    def engine_run(engine: str, outputs: dict[str, Protected]) -> pa.Table:
        return release_in_process(catalog, outputs, engine)["result"].table

    sides: dict[str, Callable[[str], pa.Table]] = {
        "arrow raw": lambda q: ArrowEngine(catalog.table).execute(raw[q]).table,
        "duck raw": lambda q: (
            DuckDBEngine(catalog.table, threads=args.threads, memory_mib=args.memory_mib).execute(raw[q]).table
        ),
        "arrow prot": lambda q: engine_run("arrow", protected[q]),
        "duck prot": lambda q: engine_run("duckdb", protected[q]),
        "duckdb": lambda q: con.sql(SQL[q]).to_arrow_table(),
    }
    if polars is not None:
        sides["polars"] = lambda q: polars[q]()
    sides = {k: v for k, v in sides.items() if k in wanted}
    print(
        f"{args.persons:,} persons, {args.runs} interleaved runs, {args.threads} threads, duckdb {duckdb.__version__}"
        f"{'' if polars is not None else ', polars not installed'}; no server, no release quantum"
    )
    print(f"{'query':15} " + " ".join(f"{s:>22}" for s in sides) + "   raw/duckdb  prot/duckdb", flush=True)
    rng = random.Random(17)
    check: dict[str, str] = {}
    for q in queries:  # one query at a time, its sides interleaved: each row is printed as soon as it is measured
        results = {s: fn(q) for s, fn in sides.items()}  # warm-up, and the results to compare
        times: dict[str, list[float]] = {s: [] for s in sides}
        order = list(sides)
        for _ in range(args.runs):
            rng.shuffle(order)
            for s in order:
                start = time.perf_counter()
                sides[s](q)
                times[s].append(time.perf_counter() - start)
        raw_sides = [s for s in sides if s not in ("arrow prot", "duck prot")]
        ok = all(same(results[raw_sides[0]], results[s]) for s in raw_sides[1:])
        if "arrow prot" in sides and "duck prot" in sides:
            ok = ok and same(results["arrow prot"], results["duck prot"])
        check[q] = "equal" if ok else "DIFFER"
        cells = [f"{statistics.median(t):7.3f} [{min(t):.3f}-{max(t):.3f}]" for t in times.values()]
        line = f"{q:15} " + " ".join(f"{c:>22}" for c in cells)
        if "duckdb" in sides:
            base = statistics.median(times["duckdb"])
            ratios = [
                f"{statistics.median(times[s]) / base:5.2f}" if s in sides else "  -  "
                for s in ("arrow raw", "duck raw", "arrow prot", "duck prot")
            ]
            line += f"   {ratios[0]}/{ratios[1]}   {ratios[2]}/{ratios[3]}"
        print(f"{line}  {check[q]}", flush=True)
    print("ratios: arrow/duck engine to DuckDB's raw median; results checked:", json.dumps(check))
    catalog.close()


if __name__ == "__main__":
    main()
