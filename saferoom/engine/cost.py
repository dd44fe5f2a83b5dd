"""Worst-case size and cost of plans, from public facts only, checked before anything runs.

Why: an engine worker that hits a limit (memory, CPU, wall clock, output size) because of what the data holds
tells the researcher a bit per job: a filter that keeps one person iff a condition holds, feeding joins that
multiply its rows, runs out of memory iff the condition holds. So every plan a job will execute is bounded from
what is public (the catalog's row counts and declarations, the plan's shape) and a job whose worst case does not
fit the engine worker's limits is refused before any work, with a message made of those public numbers only:
the same refusal whatever the data holds. A job admitted this way cannot reach a limit.

Rows (an upper bound for every node, never an estimate):
    Scan                  the catalog's ``rows``
    Filter Threshold      <= input
    Project Sort          = input
    Limit                 <= min(n, input)
    Bound(column, n)      <= input
    Union                 sum of the inputs
    Aggregate             1 without keys; else <= input, and <= the product of the keys' value counts when every
                          key has a small public set of values (bool results, literals, dictionary categories) or
                          a computed key's registry domain bounds them (an integer's bounds, the grid cells of
                          clamped coordinates: ``Domain.distinct``)
    Join                  <= left x right, unless one side is unique on (a subset of) the join keys: then every row
                          of the other side matches at most one of its rows, and the join has at most the other
                          side's rows, plus the unique side's own rows when the join keeps its unmatched rows
    Input                 the rows of the aggregate that produced it (its exact plan), or its public grid

Uniqueness (sets of columns no two rows share): an Aggregate on its keys; a dataset declared
``one_row_per_unit`` on its privacy unit; ``Bound(c, 1)`` on ``c``; a node of at most one row on nothing at all.
Filter, Sort, Limit, Threshold and Bound keep it; Project keeps it for key columns passed through as plain
``Col``; an inner or left join keeps the left side's when the right is unique on the join keys (and the mirror).

Bytes per value: int64, float64 8; date32 4; bool 1; a category (dictionary-encoded) 4 for its index, but the
engine decodes categories for join keys, unions and sort keys, so it counts 4 + its longest category in bytes
(also for the other columns of a join, which cross it as their codes: an over-estimate there);
a string literal its length + 4; any other string ``STRING_BYTES``: 4 + ``manifest.TEXT_BYTES``, the most a text
value of a dataset may hold (imports refuse longer ones, ``Catalog.open`` refuses a file holding one).

Memory of one engine run: each node's output bytes, except what the engine does not copy (scans are
memory-mapped, a Project passes ``Col`` columns through, a Limit slices), and its temporaries while it computes
(computed expression columns, a join's decoded inputs and hash table, sort indices, group-by hash tables: Acero
streams a group-by's input in batches, so its tables grow with the groups each thread saw, plus a few bytes per
input row and what its aggregates gather per row, at the coefficients measured above ``STREAM_ROW_BYTES``). For
the Arrow engine, what is alive at once in its execution order (``_live_peak``): the roots one after the other,
depth first, a node's inputs held while it computes and freed after, except what outlives them (shared subtrees
and their masks, the roots' tables, the inputs a Project, Limit, Filter, Bound, Threshold or Union may hand on);
for any other engine (DuckDB's own operators, its buffers), every node's bytes as if nothing were ever freed.
Plus the supplied Input tables (twice: the IPC bytes and the table) and the outputs once more as IPC streams,
times ``MEMORY_OVERHEAD`` for allocator slack, plus ``RUN_BYTES``. It must fit within ``MEMORY_SHARE`` of the
worker's memory limit (the limit is headroom above the forked worker's baseline, see ``sandbox.limits``);
``tests/engine/test_engine_cost_memory.py`` releases random and shipped plans in real workers at the smallest
limit that admits them.

Time: per node, a cost per row for its kind measured on its worst shape for the facts above (a group-by's bound
on groups, a join's larger side, a sort's rows and keys; ``engine.timing``, times its ``TIME_SAFETY`` for slower
and shared machines), plus the outputs' bytes carried to the server and a fixed cost per node and per run; it
must fit within ``TIME_SHARE`` of the smaller of the worker's CPU-time and wall-clock limits. On another engine
(DuckDB's own operators, not measured per kind) the larger of that and the cells (values read or written,
expression nodes times rows, sorts n log n) at ``CELLS_PER_SECOND``, the old model's throughput for every node.
Output: the outputs' bytes within ``OUTPUT_SHARE`` of the reply limit.

Padding: an admitted plan's time still varies with the data below its worst case (a filter that keeps one
person leaves less to join). So the server publishes a job's end only once the admitted worst cases of its
releases have passed (``jobs.pipeline.ReleaseDeadline``; per release ``padded_seconds``: its runs' ``seconds``
plus the server's own release work on their outputs, per kind of output: the exact rules per cell, DP noise
per cell and column, a DP quantile's histogram rows, ``engine.timing``; a DP quantile's draws are padded when
its released cells are known, by their number): what a job's duration shows is then a function of the plans,
the catalog and the released results, unless the work overran its worst case (logged for the operator, never
expected: ``bench/bench_time_model.py`` measures the margin). Plans that read Spark datasets are not modelled
(the cluster has its own resources and limits): a run with any is marked ``remote``, and the pipeline pads it
to its limit on the cluster whole (``ServerConfig.spark_run_seconds``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from saferoom.catalog.manifest import TEXT_BYTES, Manifest
from saferoom.engine import plan, timing
from saferoom.engine.functions import Domain, expr_domain
from saferoom.engine.optimize import prune_columns, shared_nodes
from saferoom.engine.plan import (
    Aggregate,
    Bound,
    Call,
    Col,
    Expr,
    Filter,
    Input,
    Join,
    Limit,
    Lit,
    Node,
    Project,
    Scan,
    Sort,
    Threshold,
    Union,
    children,
)
from saferoom.engine.schema import agg_type, expr_type
from saferoom.errors import LimitExceeded

if TYPE_CHECKING:
    from saferoom.disclosure.dp import NoisyAggregate
    from saferoom.disclosure.levels import Protected

__all__ = [
    "CELLS_PER_SECOND",
    "MEMORY_SHARE",
    "STRING_BYTES",
    "Facts",
    "RunCost",
    "WorkerCaps",
    "admit",
    "admit_job",
    "analyse",
    "padded_seconds",
]

STRING_BYTES = 4 + TEXT_BYTES  # a text value without declared categories: 4 bytes of offset + its text at most
WIDTHS = {"int64": 8, "float64": 8, "date32": 4, "timestamp": 8, "bool": 1, "null": 1}
# Engines without their own time model (DuckDB): >= 43M cells/s on one core measured on the Arrow engine's slowest
# shape (a hash group-by with 1M groups), divided by 4.
CELLS_PER_SECOND = 10_000_000
NODE_SECONDS = 0.002  # per node: Python dispatch, small allocations
RUN_SECONDS = 0.25  # per engine run: fork, confinement, request and reply framing (measured 12-26 ms under load)
MEMORY_OVERHEAD = 1.25  # allocator slack, buffer padding, validity bitmaps
NODE_BYTES = 64 * 1024  # per node: Python objects, chunk metadata
RUN_BYTES = 64 * 2**20  # per engine run: the allocator's arenas and the reply's framing, whatever the plan
# Of the worker's memory limit. Measured on 1M-row joins, sorts and group-bys: peak RSS of the engine is at most
# 0.55 of the sum above before the overhead factor (it frees what it no longer needs), so what is admitted stays
# below 0.75 / 1.25 x 0.55 = a third of the limit in practice.
MEMORY_SHARE = 0.75
TIME_SHARE = 0.5  # of the smaller of its CPU and wall-clock limits
OUTPUT_SHARE = 0.9  # of its reply limit (the estimate counts Arrow buffers; IPC framing adds little)
# Acero's hash group-by (``aggregates.aggregate``), measured by RssAnon growth over 10M rows of an int64 key on the
# 2-core machine (2026-12-03): with 20,000 groups it holds 3.2 bytes per input row for a count and 5.1 for count,
# sum, min, max and mean (it streams its input in batches: its tables grow with the groups, not the rows); with
# every key distinct (6.3M groups) 110 bytes per group for a count and 270 for those five, its output included.
STREAM_ROW_BYTES = 16  # per input row, any group-by: its batches' group ids and partial states
GROUP_BYTES = 112  # per group and thread, plus the keys' widths: the hash table, its key store, the output
AGG_GROUP_BYTES = 24  # per group, thread and aggregate: its accumulator
# An exact quantile gathers every value with the hash ``list`` aggregate and sorts (group, value) pairs: measured
# 59 bytes per input row with 20,000 groups, 119 with every key distinct (single-threaded).
QUANTILE_ROW_BYTES = 96
# A distinct count's hash table of (group, value) pairs: measured 79 bytes per input row with 7.9M distinct
# int64 pairs over 10M rows; plus the value's width per row.
DISTINCT_ROW_BYTES = 112
_THREADS = os.cpu_count() or 1  # Acero's threads in the engine worker: each keeps its own groups
_MANY = 1 << 62  # "too many to count": products beyond this are capped (still far beyond any limit)


class WorkerCaps(Protocol):
    """The limits of one engine worker (``saferoom.sandbox.Limits`` has this shape)."""

    @property
    def memory_bytes(self) -> int: ...
    @property
    def cpu_seconds(self) -> int: ...
    @property
    def wall_seconds(self) -> float: ...
    @property
    def output_bytes(self) -> int: ...


@dataclass(frozen=True)
class Value:
    """What is known of a column: bytes per value, and how many distinct values (with null) it can hold."""

    type: str
    width: int
    values: int | None = None
    domain: Domain | None = None  # bounds the registry's domain rules give a computed column (e.g. after clamp)


@dataclass(frozen=True)
class Facts:
    """The worst case of one node: its rows, its columns and the column sets it is unique on."""

    rows: int
    columns: dict[str, Value]
    unique: frozenset[frozenset[str]] = frozenset()
    counts: Mapping[str, int] = field(default_factory=dict)  # column -> most rows its (distinct) count counted

    def unique_on(self, names: Iterable[str]) -> bool:
        names = set(names)
        return self.rows <= 1 or any(k <= names for k in self.unique)

    @property
    def width(self) -> int:
        return sum(v.width for v in self.columns.values()) or 1


@dataclass
class RunCost:
    """The worst case of one engine run (several plans; a shared subtree counted once)."""

    roots: dict[str, Facts] = field(default_factory=dict)
    cells: int = 0
    memory_bytes: int = 0
    output_bytes: int = 0
    nodes: int = 0
    largest: tuple[int, str, str] = (0, "", "")  # (rows, root, node): the largest table, named in refusals
    engine_seconds: float = 0.0  # the nodes' worst-case time (``engine.timing.node_seconds``)
    release_seconds: float = 0.0  # the server's worst-case release work on this run's outputs
    remote: bool = False  # some of its plans run on the Spark cluster (whose time is not modelled here)

    @property
    def seconds(self) -> float:
        """The worst-case time of the engine run itself (what must fit the worker's time limit)."""
        return self.engine_seconds + timing.reply_seconds(self.output_bytes) + self.nodes * NODE_SECONDS + RUN_SECONDS


def _mul(*xs: int) -> int:
    out = 1
    for x in xs:
        out = min(_MANY, out * x)
    return out


def _agg_row_bytes(fn: str, value: Value, calls: int) -> int:
    """What one aggregate of a group-by holds per input row beyond Acero's streaming (``STREAM_ROW_BYTES``): its
    computed argument (each of its ``calls`` a whole column, alive until the group-by ends), the decoded copy that
    min, max and count_distinct take of a category, the gathered values of an exact quantile, the (group, value)
    table of a distinct count."""
    width = max(8, value.width)
    held = width * calls + (width if fn in ("min", "max", "count_distinct") else 0)
    if fn in ("median", "quantile"):
        return held + QUANTILE_ROW_BYTES
    if fn == "count_distinct":
        return held + DISTINCT_ROW_BYTES + width
    return held


def _type_width(t: str) -> int:
    return WIDTHS.get(t, STRING_BYTES)


def _expr(expr: Expr, cols: Mapping[str, Value], types: Mapping[str, str]) -> tuple[Value, int]:
    """The value facts of ``expr`` and how many Call nodes it evaluates (each one a temporary column)."""
    if isinstance(expr, Col):
        t = types.get(expr.name, "string")
        return cols.get(expr.name, Value(t, _type_width(t))), 0
    if isinstance(expr, Lit):
        if isinstance(expr.value, str):
            return Value("string", 4 + len(expr.value.encode()), 1), 0
        return Value(expr_type(expr, types), 8, 1), 0
    args = [_expr(a, cols, types) for a in expr.args]
    calls = 1 + sum(n for _, n in args)
    t = expr_type(expr, types)
    if t == "bool":
        return Value(t, 1, 3), calls
    if t != "string":
        values = None
        bins = expr.args[-1].value if expr.fn == "histogram" and isinstance(expr.args[-1], Lit) else None
        if isinstance(bins, int) and not isinstance(bins, bool):
            values = bins + 1
        if expr.fn == "case" and all(args[i][0].values is not None for i in range(1, len(args), 2)):
            values = sum(args[i][0].values or 0 for i in (*range(1, len(args) - 1, 2), len(args) - 1)) + 1
        return Value(t, _type_width(t), values), calls
    if expr.fn == "cast_str":
        arg_type = expr_type(expr.args[0], types)
        return Value(t, args[0][0].width if arg_type == "string" else 28), calls
    return Value(t, max([a.width for a, _ in args] + [4])), calls


def _bounded(value: Value, expr: Call, cols: Mapping[str, Value], types: Mapping[str, str]) -> Value:
    """A computed column with its domain from the registry's rules (kept for the expressions above it) and
    its value count: at most the domain's ``distinct`` values, an integer's at most upper - lower + 1, and
    null."""
    domain = expr_domain(expr, {n: v.domain for n, v in cols.items() if v.domain is not None}, types)
    counts = [value.values] if value.values is not None else []
    if domain.distinct is not None:
        counts.append(domain.distinct + 1)
    interval = domain.interval
    if value.type == "int64" and interval is not None and interval[1] - interval[0] < _MANY:
        counts.append(int(interval[1] - interval[0]) + 2)
    return Value(value.type, value.width, min(counts) if counts else None, domain)


def _key_bytes(node: Node, kids: list[Facts]) -> int:
    """The bytes of a group-by's, join's or sort's key values beyond a plain 8-byte value (strings hash and
    compare by their bytes)."""
    if isinstance(node, Aggregate):
        keys, facts = node.keys, kids[0]
    elif isinstance(node, Join):
        keys, facts = node.on, kids[0]
    elif isinstance(node, Sort):
        keys, facts = tuple(k for k, _ in node.keys), kids[0]
    else:
        return 0
    return sum(max(0, facts.columns[k].width - 8) for k in keys if k in facts.columns)


def _arg_types(node: Node, kids: list[Facts]) -> list[str | None]:
    """A group-by's aggregates' argument types (None for none), which the time model reads."""
    if not isinstance(node, Aggregate):
        return []
    types = {n: v.type for n, v in kids[0].columns.items()}
    return [None if agg.arg is None else expr_type(agg.arg, types) for _, agg in node.aggs]


def _describe(node: Node) -> str:
    datasets = sorted({n.dataset for n in plan.walk(node) if isinstance(n, Scan)})
    reading = f" (reading {', '.join(datasets)})" if datasets else ""
    if isinstance(node, Join):
        article = "an" if node.how == "inner" else "a"
        return f"{article} {node.how} join on {', '.join(node.on)}{reading}"
    if isinstance(node, Aggregate):
        return f"a group-by on {', '.join(node.keys) or 'nothing'}{reading}"
    return f"a {type(node).__name__.lower()}{reading}"


class _Analysis:
    def __init__(self, manifest: Manifest, inputs: Mapping[str, Facts], arrow: bool = True) -> None:
        self.manifest = manifest
        self.inputs = inputs
        self.arrow = arrow  # the Arrow engine's own paths (a sorted distinct count) are known; another's are not
        self.done: dict[int, Facts] = {}
        self.types: dict[int, dict[str, str]] = {}
        self.bytes: dict[int, tuple[int, int]] = {}  # node -> (its output's own bytes, its temporaries)
        self.cost = RunCost()

    def facts(self, node: Node, root: str) -> Facts:
        stack: list[tuple[Node, bool]] = [(node, False)]
        while stack:
            current, expanded = stack.pop()
            if id(current) in self.done:
                continue
            if expanded:
                kids = [self.done[id(k)] for k in children(current)]
                facts = self._node(current, kids, root)
                self.done[id(current)] = facts
                self.cost.engine_seconds += timing.node_seconds(
                    current, kids, facts, _key_bytes(current, kids), _arg_types(current, kids) if self.arrow else ()
                )
                if facts.rows > self.cost.largest[0] and not isinstance(current, Scan):  # scans are not copied
                    self.cost.largest = (facts.rows, root, _describe(current))
            else:
                stack.append((current, True))
                stack.extend((k, False) for k in children(current))
        return self.done[id(node)]

    def _charge(self, node: Node, root: str, cells: int, stored: int, temporary: int) -> None:
        memory = min(_MANY, stored + temporary + NODE_BYTES)
        self.cost.cells = min(_MANY, self.cost.cells + cells)
        self.cost.memory_bytes = min(_MANY, self.cost.memory_bytes + memory)
        self.cost.nodes += 1
        self.bytes[id(node)] = (stored, temporary)

    def _node(self, node: Node, kids: list[Facts], root: str) -> Facts:
        if isinstance(node, Scan):
            info = self.manifest.dataset(node.dataset)
            cols = {}
            for name in node.columns:
                c = info.column(name)
                width = 4 + max(len(x.encode()) for x in c.categories) if c.categories else _type_width(c.type)
                values = len(c.categories) + 1 if c.categories else 3 if c.type == "bool" else None
                cols[name] = Value(c.type, width, values)
            unique: frozenset[frozenset[str]] = frozenset()
            if info.one_row_per_unit and info.privacy_unit in node.columns:
                unique = frozenset({frozenset({info.privacy_unit})})
            self._charge(node, root, _mul(info.rows, len(cols) or 1), 0, 0)  # memory-mapped: read, not copied
            return Facts(info.rows, cols, unique)
        if isinstance(node, Input):
            known = self.inputs.get(node.label)
            rows = known.rows if known is not None else _MANY
            unique = known.unique if known is not None else frozenset()
            cols = {name: Value(t, _type_width(t)) for name, t in node.columns}
            out = Facts(rows, cols, unique)
            self._charge(node, root, _mul(rows, len(cols) or 1), _mul(2, rows, out.width), 0)
            return out
        first = kids[0]
        types = {n: v.type for n, v in first.columns.items()}
        if isinstance(node, Filter):
            _, calls = _expr(node.predicate, first.columns, types)
            self._charge(
                node,
                root,
                _mul(first.rows, calls + 1 + len(first.columns)),
                _mul(first.rows, first.width),
                _mul(first.rows, 8 * (calls + 1)),
            )
            return first
        if isinstance(node, Project):
            projected: dict[str, Value] = {}
            calls = stored = 0
            for name, e in node.columns:
                value, n = _expr(e, first.columns, types)
                if isinstance(e, Call):
                    value = _bounded(value, e, first.columns, types)
                projected[name] = value
                calls += n
                stored += 0 if isinstance(e, Col) else value.width
            kept: set[frozenset[str]] = set()
            for key in first.unique:
                aliases = [[n for n, e in node.columns if isinstance(e, Col) and e.name == k] for k in key]
                if all(aliases):
                    kept.add(frozenset(a[0] for a in aliases))
                    kept.add(frozenset(a[-1] for a in aliases))
            self._charge(node, root, _mul(first.rows, calls + 1), _mul(first.rows, stored), _mul(first.rows, 8 * calls))
            counts = {n: first.counts[e.name] for n, e in node.columns if isinstance(e, Col) and e.name in first.counts}
            return Facts(first.rows, projected, frozenset(kept), counts)
        if isinstance(node, Aggregate):
            cols = {k: first.columns[k] for k in node.keys}
            work, per_row = len(node.keys) + 1, 0
            for name, agg in node.aggs:
                value, n = (Value("int64", 8), 0) if agg.arg is None else _expr(agg.arg, first.columns, types)
                work += n + 1
                t = agg_type(agg, types)
                cols[name] = Value(t, max(8, value.width) if agg.fn in ("min", "max") else 8)
                per_row += _agg_row_bytes(agg.fn, value, n)
                if agg.fn in ("median", "quantile"):
                    work += max(1, first.rows.bit_length())
            rows = 1 if not node.keys else first.rows
            if node.keys and all(cols[k].values is not None for k in node.keys):
                rows = min(rows, _mul(*(cols[k].values or 1 for k in node.keys)))
            counted = {name: first.rows for name, agg in node.aggs if agg.fn in ("count", "count_distinct")}
            out = Facts(rows, cols, frozenset({frozenset(node.keys)}), counted)
            if not node.keys and all(agg.fn == "count" and agg.arg is None for _, agg in node.aggs):
                temporary = 0  # the input's row count: no pass over it (``aggregates.aggregate``)
            else:
                # Per thread, a hash table of the groups it saw: at most every group per thread, and no more
                # entries in all than input rows.
                local = min(first.rows, _mul(rows, _THREADS))
                group = GROUP_BYTES + AGG_GROUP_BYTES * len(node.aggs) + sum(cols[k].width for k in node.keys)
                temporary = _mul(first.rows, STREAM_ROW_BYTES + per_row) + _mul(local, group)
            self._charge(node, root, _mul(first.rows, work), _mul(rows, out.width), temporary)
            return out
        if isinstance(node, Join):
            return self._join(node, kids[0], kids[1], root)
        if isinstance(node, Sort):
            passes = max(1, first.rows.bit_length()) * len(node.keys)
            self._charge(
                node,
                root,
                _mul(first.rows, passes + len(first.columns)),
                _mul(first.rows, first.width),
                _mul(first.rows, 8 + sum(first.columns[k].width for k, _ in node.keys)),
            )
            return first
        if isinstance(node, Limit):
            rows = min(node.n, first.rows)
            unique = first.unique | ({frozenset()} if rows <= 1 else set())
            self._charge(node, root, 1, 0, 0)  # a slice: no copy
            return Facts(rows, first.columns, frozenset(unique), first.counts)
        if isinstance(node, Union):
            rows = min(_MANY, sum(k.rows for k in kids))
            cols = {n: Value(v.type, max(k.columns.get(n, v).width for k in kids)) for n, v in first.columns.items()}
            out = Facts(rows, cols)
            self._charge(node, root, _mul(rows, len(cols) or 1), _mul(rows, out.width), 0)
            return out
        if isinstance(node, Bound):
            unique = first.unique | ({frozenset({node.column})} if node.n == 1 else set())
            passes = max(1, first.rows.bit_length())
            self._charge(
                node,
                root,
                _mul(first.rows, passes + len(first.columns)),
                _mul(first.rows, first.width),
                _mul(first.rows, 48),
            )
            return Facts(first.rows, first.columns, frozenset(unique), first.counts)
        assert isinstance(node, Threshold)
        self._charge(
            node, root, _mul(first.rows, 2 + len(first.columns)), _mul(first.rows, first.width), _mul(first.rows, 2)
        )
        most = first.counts.get(node.column)
        if most is None or node.minimum < 2:
            return first
        # Every kept row is a group of at least ``minimum`` of the rows its count counted: at most most / minimum.
        return Facts(min(first.rows, most // node.minimum), first.columns, first.unique, first.counts)

    def _join(self, node: Join, left: Facts, right: Facts, root: str) -> Facts:
        on = set(node.on)
        left_unique, right_unique = left.unique_on(on), right.unique_on(on)
        keeps_left, keeps_right = node.how in ("left", "full"), node.how in ("right", "full")
        if left_unique and right_unique:  # each row matches at most one: the kept side's rows, or both for a full
            rows = {"inner": min(left.rows, right.rows), "left": left.rows, "right": right.rows}.get(
                node.how, left.rows + right.rows
            )
        elif right_unique:
            rows = left.rows + (right.rows if keeps_right else 0)
        elif left_unique:
            rows = right.rows + (left.rows if keeps_left else 0)
        else:
            rows = _mul(left.rows, right.rows) + (left.rows if keeps_left else 0) + (right.rows if keeps_right else 0)
        rows = min(_MANY, rows)
        unique: set[frozenset[str]] = set()
        if right_unique and node.how in ("inner", "left"):
            unique |= left.unique
        if left_unique and node.how in ("inner", "right"):
            unique |= right.unique
        cols = {**left.columns, **{n: v for n, v in right.columns.items() if n not in on}}
        counts: dict[str, int] = {}  # a side's counts still bound its groups when none of its rows is repeated
        if right_unique:
            counts |= {n: c for n, c in left.counts.items() if n not in on}
        if left_unique:
            counts |= {n: c for n, c in right.counts.items() if n not in on}
        out = Facts(rows, cols, frozenset(unique), counts)
        inputs = _mul(left.rows, left.width) + _mul(right.rows, right.width)
        hashed = _mul(left.rows + right.rows, 64)
        cells = _mul(left.rows, len(left.columns)) + _mul(right.rows, len(right.columns)) + _mul(rows, len(cols))
        self._charge(node, root, cells, _mul(rows, out.width), inputs + hashed)
        return out

    def run(self, roots: Mapping[str, Node], live: bool = True) -> RunCost:
        shared = plan.share_subtrees(dict(roots))
        pruned = dict(zip(shared, prune_columns(*shared.values()), strict=True))
        for name, node in pruned.items():
            facts = self.facts(node, name)
            self.cost.roots[name] = facts
            self.cost.output_bytes = min(_MANY, self.cost.output_bytes + _mul(facts.rows, facts.width) + 4096)
        if not live:  # another engine than the Arrow one: its operators are not measured per kind
            self.cost.engine_seconds = max(self.cost.engine_seconds, self.cost.cells / CELLS_PER_SECOND)
        columns = {name: len(f.columns) for name, f in self.cost.roots.items()}
        self.cost.release_seconds = timing.rules_seconds(self.cost.roots, columns)  # admit_job refines DP rounds
        held = self._live_peak(list(pruned.values())) if live else self.cost.memory_bytes
        self.cost.memory_bytes = min(_MANY, math.ceil((held + self.cost.output_bytes) * MEMORY_OVERHEAD) + RUN_BYTES)
        return self.cost

    def _live_peak(self, roots: list[Node]) -> int:
        """The most bytes alive at once while the Arrow engine executes ``roots`` (``engine.arrow._Run``): in
        order, each root depth first, a node's inputs alive while it computes, then freed, except what outlives
        them: shared subtrees (kept for the run) and their masks, the roots' tables (kept until the reply), and
        inputs that an output references (a Project passes columns through, a Limit slices, a Filter that keeps
        everything, a Bound, a Threshold and a Union may return their input's buffers; an Aggregate, a Join and a
        Sort build new ones). Never more than the sum of every node's bytes (the model without freeing)."""
        shared = shared_nodes(roots)
        retained: dict[int, int] = {}  # bytes alive while a node's output is (its own, and inputs it may reference)
        transient: dict[int, int] = {}  # most bytes alive while computing it, beyond what stays for the run
        order: list[Node] = []
        seen: set[int] = set()
        for root in roots:
            stack: list[tuple[Node, bool]] = [(root, False)]
            while stack:
                node, expanded = stack.pop()
                if expanded:
                    order.append(node)
                elif id(node) not in seen:
                    seen.add(id(node))
                    stack.append((node, True))
                    stack.extend((k, False) for k in children(node))
        permanent = 0
        for node in order:  # children before parents
            stored, temporary = self.bytes.get(id(node), (0, 0))
            kids = children(node)
            held = [0 if id(k) in shared else retained[id(k)] for k in kids]
            fresh = isinstance(node, Aggregate | Join | Sort | Input | Scan)
            retained[id(node)] = min(_MANY, stored + (0 if fresh else sum(held)))
            peak, before = 0, 0
            for k, h in zip(kids, held, strict=True):  # inputs computed in order, the earlier ones held
                peak = max(peak, before + transient[id(k)])
                before = min(_MANY, before + h)
            transient[id(node)] = min(_MANY, max(peak, before + temporary + stored))
            permanent = min(_MANY, permanent + NODE_BYTES)
            if id(node) in shared or isinstance(node, Input):
                permanent = min(_MANY, permanent + retained[id(node)])
            if isinstance(node, Filter | Aggregate) and kids and id(kids[0]) in shared:
                permanent = min(_MANY, permanent + self.done[id(kids[0])].rows)  # its cached mask, a byte a row
        distinct = {id(r) for r in roots}
        permanent = min(_MANY, permanent + sum(retained[i] for i in distinct if i not in shared))
        peak = max((transient[id(r)] for r in roots), default=0)
        return min(_MANY, permanent + peak, self.cost.memory_bytes)


def analyse(
    roots: Mapping[str, Node], manifest: Manifest, inputs: Mapping[str, Facts] | None = None, engine: str = "arrow"
) -> RunCost:
    """The worst case of one engine run executing ``roots`` over the catalog and the ``inputs`` (by label), on
    ``engine``: the Arrow engine's memory counts what is alive at once; any other's, every node's bytes."""
    return _Analysis(manifest, inputs or {}, engine == "arrow").run(roots, live=engine == "arrow")


def _size(n: float) -> str:
    if n >= _MANY:
        return "more than 2**62 bytes"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} bytes"


def admit(cost: RunCost, caps: WorkerCaps, what: str = "this job") -> None:
    """Raise LimitExceeded, naming the largest table and the numbers, if ``cost`` may not fit the worker."""
    memory = caps.memory_bytes * MEMORY_SHARE
    seconds = min(caps.cpu_seconds, caps.wall_seconds) * TIME_SHARE
    output = caps.output_bytes * OUTPUT_SHARE
    most, root, node = cost.largest
    rows = max(cost.roots.values(), key=lambda f: f.rows).rows if cost.roots else 0
    where = f"{node} in output {root!r}" if root else node
    where += f", up to {most:,} rows" if most < _MANY else ", more than 2**62 rows"
    hint = "aggregate before joining, or join on keys one side is unique on (a group-by's keys)"
    if cost.memory_bytes > memory:
        raise LimitExceeded(
            f"refused before running: in the worst case the catalog allows, {what} needs {_size(cost.memory_bytes)} "
            f"of engine memory, more than the {_size(memory)} admitted ({MEMORY_SHARE:.0%} of the worker's "
            f"{_size(caps.memory_bytes)} limit); the largest table is {where}: {hint}"
        )
    if cost.seconds > seconds:
        raise LimitExceeded(
            f"refused before running: in the worst case the catalog allows, {what} processes "
            f"{cost.cells:,} values in about {cost.seconds:,.1f} s, more than the {seconds:g} s admitted "
            f"({TIME_SHARE:.0%} of the worker's time limit); the largest table is {where}: {hint}"
        )
    if cost.output_bytes > output:
        raise LimitExceeded(
            f"refused before running: in the worst case the catalog allows, {what} returns "
            f"{_size(cost.output_bytes)} (up to {rows:,} rows in one output), more than the {_size(output)} "
            f"admitted ({OUTPUT_SHARE:.0%} of the worker's {_size(caps.output_bytes)} reply limit)"
        )


def stored_bytes(runs: Sequence[RunCost], outputs: Iterable[str]) -> int:
    """The most bytes a job's stored result of ``outputs`` may take: their tables' worst case in the last run
    (its subset checks, cell lists and DP statistics are never stored)."""
    roots = runs[-1].roots if runs else {}
    return min(_MANY, sum(_mul(roots[name].rows, roots[name].width) + 4096 for name in outputs if name in roots))


def padded_seconds(runs: Iterable[RunCost]) -> float:
    """How long a release over these admitted runs may take in the worst case: what the server pads it to."""
    return sum(run.seconds + run.release_seconds for run in runs)


def _on_spark(node: Node, manifest: Manifest) -> bool:
    return any(manifest.dataset(n.dataset).engine == "spark" for n in plan.walk(node) if isinstance(n, Scan))


def admit_job(
    protected: Mapping[str, Protected], manifest: Manifest, caps: WorkerCaps, engine: str = "arrow"
) -> list[RunCost]:
    """Admit every engine run a job's protected outputs lead to (``disclosure.rounds.release_all``): the rounds of
    exact DP statistics (``release_noisy``), then the outputs, their subset checks, cell lists and the
    differencing check's member counts. Returns the
    runs' worst cases; raises LimitExceeded before any work if one of them may not fit ``caps``."""
    from saferoom.disclosure import differencing, marks, secondary  # disclosure builds on the engine: imported late

    owner: dict[str, str] = {}
    noisy: dict[str, NoisyAggregate] = {}
    for name, p in protected.items():
        for label, agg in p.noisy.items():
            noisy[label] = agg
            owner[label] = name
    inputs: dict[str, Facts] = {}
    runs: list[RunCost] = []

    def run(roots: dict[str, Node], names: Mapping[str, str]) -> RunCost:
        local = {k: v for k, v in roots.items() if not _on_spark(v, manifest)}
        cost = analyse(local, manifest, inputs, engine)
        if len(local) < len(roots):  # the cluster's runs are not admitted here, but their outputs feed Inputs
            cost.remote = True
            cost.roots |= {k: f for k, f in analyse(roots, manifest, inputs, engine).roots.items() if k not in local}
        cost.memory_bytes = min(_MANY, cost.memory_bytes + sum(_mul(3, f.rows, f.width) for f in inputs.values()))
        most, root, node = cost.largest
        cost.largest = (most, names.get(root, root), node)
        admit(cost, caps)
        runs.append(cost)
        return cost

    pending = dict(noisy)
    while pending:
        ready = {
            label: agg
            for label, agg in pending.items()
            if all(
                n.label in inputs
                for root in (agg.exact, *agg.histograms.values())
                for n in plan.walk(root)
                if isinstance(n, Input)
            )
        }
        if not ready:
            break  # a cycle: release_noisy refuses it before any work
        roots: dict[str, Node] = {}
        names: dict[str, str] = {}
        for label, agg in ready.items():
            roots[label] = agg.exact
            names[label] = owner[label]
            for h, node in agg.histograms.items():
                roots[f"{label}:{h}"] = node
                names[f"{label}:{h}"] = owner[label]
        cost = run(roots, names)
        cost.release_seconds = 0.0  # this round's outputs are noised, not put through the rules
        for label, agg in ready.items():
            exact = cost.roots.get(label, Facts(_MANY, {}))
            rows = exact.rows
            if agg.keys and agg.domains is not None:
                rows = max(rows, _mul(*(len(d) for d in agg.domains)))
            histograms = (cost.roots.get(f"{label}:{h}", Facts(_MANY, {})).rows for h in agg.histograms)
            keyed = sum(timing.histogram_seconds(n, len(agg.keys)) for n in histograms)
            cost.release_seconds += timing.noise_seconds(agg, rows) + keyed
            columns = {n: Value(t, _type_width(t)) for n, t in agg.schema}
            inputs[label] = Facts(rows, columns, frozenset({frozenset(agg.keys)}))
            del pending[label]
    roots = {name: p.plan for name, p in protected.items()}
    names = {name: name for name in protected}
    for name, p in protected.items():
        for label, check in p.subsets.items():
            roots[label], names[label] = check.plan, name
        if p.table is not None:
            roots[f"cells:{name}"], names[f"cells:{name}"] = p.table.cells, name
    compared = differencing.plans(protected)  # the member counts compared across outputs
    for label, node in compared.items():
        roots[label], names[label] = node, "differencing"
    final = run(roots, names)
    ruled = {label: f for label, f in final.roots.items() if label not in compared}  # differencing's: below
    final.release_seconds = timing.rules_seconds(ruled, {label: len(f.columns) for label, f in ruled.items()})
    for name, beside in secondary.margins(protected).items():  # complementary suppression, per table and margin
        cells = final.roots.get(f"cells:{name}", Facts(_MANY, {})).rows
        final.release_seconds += timing.secondary_seconds(cells, len(beside))
    final.release_seconds += timing.differencing_seconds(_compared_rows(protected, final.roots))
    for name in marks.marked(protected):  # laid out on the public grid: every combination, released or not
        table = protected[name].table
        assert table is not None and table.domains is not None
        grid = math.prod(len(d) for d in table.domains)
        final.release_seconds += timing.marks_seconds(grid, len(final.roots.get(name, Facts(0, {})).columns))
    return runs


def _compared_rows(protected: Mapping[str, Protected], roots: Mapping[str, Facts]) -> int:
    """The cell rows the differencing check walks at most (``differencing.find``): every selection's sizes once
    when read, both sides' sizes again for every pair of selections over one dataset, and every pair's shared
    counts."""
    from saferoom.disclosure import differencing

    chosen = differencing.selections(protected)
    sizes = [roots.get(f"size:{s.label}", Facts(_MANY, {})).rows for s in chosen]
    rows = min(_MANY, sum(sizes) + sum(f.rows for label, f in roots.items() if label.startswith("pair:")))
    for i, s in enumerate(chosen):
        for j in range(i + 1, len(chosen)):
            if chosen[j].dataset == s.dataset:
                rows = min(_MANY, rows + sizes[i] + sizes[j])
    return rows
