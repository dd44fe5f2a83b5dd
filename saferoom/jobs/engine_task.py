"""The engine worker's tasks: run in processes forked from a warm parent that has the catalog memory-mapped.

These are trusted saferoom code (no algorithm code ever runs in the engine pool); they receive plans already
rewritten by the release step and send back Arrow IPC streams plus suppression counts.
"""

from __future__ import annotations

import importlib.util
import os
import resource
from pathlib import Path
from typing import Any

import pyarrow as pa

from saferoom.catalog import Catalog
from saferoom.engine import ArrowEngine, plan
from saferoom.engine.duckdb_engine import DuckDBEngine
from saferoom.errors import InvalidPlan

__all__ = ["execute_plans", "open_catalog", "to_ipc", "warm_worker"]


def open_catalog(data_dir: str, engine: str = "arrow") -> Catalog:
    """Zygote initializer: import pyarrow and map every dataset once, shared by all forked workers.

    A tiny plan is executed too, so that every lazily loaded part of pyarrow is loaded here: workers drop
    privileges and may not be able to read the interpreter's files afterwards. DuckDB is loaded only for a pool
    of the ``duckdb`` engine (its workers are the only ones that use it): in an Arrow engine's zygote its library
    was 52 MB of the 221 MB resident, whose page tables every fork copies and every worker's exit tears down.
    """
    import encodings.ascii  # noqa: F401

    import numpy.ma  # noqa: F401
    import pyarrow.acero  # noqa: F401

    catalog = Catalog.open(Path(data_dir))
    # A column with nulls converted to numpy goes through pyarrow.pandas_compat, which imports pandas and
    # numpy.ma on first use (measured: a worker that did this after dropping privileges failed).
    for values in ([1, None], [2.5, None], ["a", None]):
        pa.array(values).to_numpy(zero_copy_only=False)
        pa.chunked_array([pa.array(values)]).to_numpy()
    warm = pa.table({"k": pa.array(["a", "b"]).dictionary_encode(), "v": [1.0, 2.0]})
    scan = plan.Scan("warm", ("k", "v"))
    sample = plan.Sort(
        plan.Join(
            plan.Aggregate(scan, ("k",), (("m", plan.AggExpr("median", plan.Col("v"))),)),
            plan.Aggregate(scan, ("k",), (("n", plan.AggExpr("count")),)),
            ("k",),
        ),
        (("m", True),),
    )
    ArrowEngine(lambda _: warm).execute(sample)
    # DuckDB's library and its Python module loaded here too for its engine; the connection (and its threads) is
    # closed again before any worker is forked: threads do not survive a fork, each worker opens its own.
    if engine == "duckdb":
        if importlib.util.find_spec("duckdb") is None:
            raise InvalidPlan("the duckdb engine is configured but DuckDB is not installed (the duckdb extra)")
        DuckDBEngine(lambda _: warm, threads=1, memory_mib=64).execute(
            plan.Project(sample, (("s", plan.Call("cast_str", (plan.Col("m"),))),))
        )
    elif engine != "arrow":
        raise InvalidPlan(f"unknown engine {engine[:40]!r}")
    return catalog


def _engine(catalog: Catalog, inputs: dict[str, pa.Table], kind: Any) -> ArrowEngine | DuckDBEngine:
    """The engine the request names: DuckDB gets the worker's processors and most of its memory limit (the
    memory-mapped datasets it reads are not counted against that limit; its own buffers are)."""
    if kind in (None, "arrow"):
        return ArrowEngine(catalog.table, inputs, catalog.statistics)
    if kind != "duckdb":
        raise InvalidPlan("unknown engine")
    limit = resource.getrlimit(resource.RLIMIT_DATA)[0]
    memory_mib = 4096 if limit == resource.RLIM_INFINITY else max(256, int(limit * 0.6) // 2**20)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return DuckDBEngine(catalog.table, inputs, threads=threads, memory_mib=memory_mib)


def execute_plans(catalog: Catalog, request: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """Execute each ``[name, plan]`` of the request; reply with one IPC stream per plan, in order.

    ``inputs`` names the tables supplied for ``Input`` nodes (already released, noisy aggregates), one IPC
    stream per name in ``blobs``.
    """
    plans = request.get("plans")
    labels = request.get("inputs", [])
    if not isinstance(plans, list):
        raise InvalidPlan("expected a list of plans")
    if not isinstance(labels, list) or len(labels) != len(blobs) or not all(isinstance(x, str) for x in labels):
        raise InvalidPlan("expected one table per input label")
    inputs = {x: pa.ipc.open_stream(pa.py_buffer(blob)).read_all() for x, blob in zip(labels, blobs, strict=True)}
    decoded: dict[str, plan.Node] = {}
    for item in plans:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise InvalidPlan("expected [name, plan] pairs")
        decoded[item[0]] = plan.from_data(item[1])
    # JSON expands shared subtrees; share them again so each is executed once for all outputs.
    shared = plan.share_subtrees(decoded)
    executions = _engine(catalog, inputs, request.get("engine")).execute_all(list(shared.values()))
    metas: list[dict[str, Any]] = []
    out: list[bytes] = []
    for name, execution in zip(shared, executions, strict=True):
        out.append(to_ipc(execution.table))
        metas.append({"name": name, "dropped": dict(execution.dropped)})
    return {"outputs": metas}, out


def warm_worker(catalog: Catalog) -> None:
    """A spare worker's warm-up, before it is given any task: the paths of a task (plan decoding, the engine,
    IPC in and out) run once over a three-row table of constants, so that the copy-on-write faults of its first
    touches of the zygote's memory are paid off the job's path. Reads no dataset; what it computes is dropped."""
    source = plan.Input("warm", (("k", "string"), ("v", "float64")))
    kept = plan.Filter(source, plan.Call("ge", (plan.Col("v"), plan.Lit(0.0))))
    grouped = plan.Aggregate(kept, ("k",), (("n", plan.AggExpr("count")), ("s", plan.AggExpr("sum", plan.Col("v")))))
    total = plan.Aggregate(source, (), (("n", plan.AggExpr("count")),))
    table = pa.table({"k": ["a", "b", "a"], "v": [1.0, 2.0, 3.0]})
    request = {"plans": [["grouped", plan.to_data(grouped)], ["total", plan.to_data(total)]], "inputs": ["warm"]}
    execute_plans(catalog, request, [to_ipc(table)])


def to_ipc(table: pa.Table) -> bytes:
    """A table as one Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())
