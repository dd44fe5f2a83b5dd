"""Worst-case time of plan nodes and of the server's release work, per kind, from public facts only.

Why: the server pads every release to its admitted worst case (``engine.cost``, "Padding"), so the model must
be an upper bound for every data the catalog allows, and the closer it is, the less researchers wait. One
throughput for every node (the old model) counted reading a memory-mapped column like a hash group-by into a
million groups; here each node kind has its own cost per row, measured on its worst shape for the facts the
cost model has (a group-by's bound on groups, a join's larger side, a sort's rows and keys), and each kind of
release work its own cost per cell.

Figures: ``python bench/bench_node_costs.py`` (engine nodes) and ``python bench/bench_time_model.py`` (release
work, adversarial data), on the 2-core development machine shared with other work (load average 3 to 6 while
measuring): the slowest of repeated runs, in nanoseconds per unit, wall time. Every figure is then multiplied by
``TIME_SAFETY``. Worst shapes: random keys (no locality), every row its own group within the bound, a filter
keeping half the rows at random; for DP quantiles, scores whose best candidate is far better than all others, so
that permute and flip tries candidates until it reaches it (at most all of a draw's candidates).

DP quantile draws are the one release work padded after it is known how much of it there is: one or two draws
per released cell, by its noisy count (``disclosure.dp._draws``), and the released cells and their counts are the
release's own output (noisy, paid for in the job's budget before it started), so a duration that follows them
shows nothing more than the result does. Their padding is ``quantile_draws_seconds``, told to the deadline when
the cells are chosen (``disclosure.dp.noise``'s ``pad``).

Not covered (as before): the page cache being cold (a scan's first read from disk), and a machine loaded far
beyond the measurements' load times ``TIME_SAFETY``; the Spark cluster's time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from saferoom.engine import plan
from saferoom.engine.plan import Call, Col, Expr, Lit, Node

if TYPE_CHECKING:
    from saferoom.disclosure.dp import NoisyAggregate

__all__ = [
    "TIME_SAFETY",
    "differencing_seconds",
    "draw_tries",
    "draws_seconds",
    "histogram_seconds",
    "marks_seconds",
    "node_seconds",
    "noise_seconds",
    "quantile_draws_seconds",
    "rules_seconds",
    "secondary_seconds",
    "store_seconds",
]

# A machine whose cores are half as fast as this one's under the measurements' load (or twice that load).
TIME_SAFETY = 2.0
_NS = 1e-9 * TIME_SAFETY

# Engine, nanoseconds (measured, slowest side).
ROW_NS = 2.0  # per row a node produces: chunk and array bookkeeping
BYTE_NS = 0.6  # per byte copied (a filter's, threshold's, union's, sort's or join's output): 0.21-0.57 measured
SCAN_BYTE_NS = 0.1  # per byte of a memory-mapped column: page table entries on first touch (0.05 ns a row)
CALL_NS = 50.0  # per row and registry call: math, dates, cells (pow 46, grid_cell 47, date_trunc 45, log 20)
# Arithmetic, comparisons, logic and casts between numbers: 3.3 (cast_float) to 19 (mod) measured.
FAST_CALLS = frozenset(
    {"add", "sub", "mul", "div", "mod", "neg", "abs", "floor", "ceil", "clamp", "cast_int", "cast_float"}
    | {"eq", "ne", "lt", "le", "gt", "ge", "between", "is_null", "and", "or", "not"}
)
FAST_CALL_NS = 25.0
CASE_ARG_NS = 15.0  # case: per argument (10 branches: 139 ns a row with their 10 comparisons)
# Calls measured above CALL_NS (cast_str 215, distance_m 119, add_days 80, histogram 53), or near it with two
# CPU hogs on the 2 cores (2026-12-03: grid_cell 67, cast_str 176, distance_m 101, case(10) 101).
SLOW_CALL_NS = {
    "cast_str": 250.0,
    "grid_cell": 90.0,
    "distance_m": 130.0,
    "add_days": 90.0,
    "histogram": 60.0,
    "hour": 90.0,  # timestamps: not measured, counted like add_days
    "minute": 90.0,
    "second": 90.0,
    "seconds_between": 90.0,
    "to_date": 90.0,
    "timestamp": 90.0,
}
# A hash group-by per input row, by the bound on its groups: measured 9.5-14 (8 and 1,000 groups), 36-116
# (100,000), 213-294 (1M) and 185-638 (2M, every row its own group); each key after the first adds a quarter.
GROUP_NS = ((1_000, 15.0), (100_000, 120.0), (math.inf, 650.0))
AGG_NS = 10.0  # per row and aggregate (count, sum measured with the group-by above)
# A distinct count's hash per input row, by the input's rows, every value distinct (2 a row when all are equal):
# measured 77-273 (1M rows; 6 to 1M groups, int, float and 60-byte text values), 172-496 (10M; 6 to 10M groups;
# 359 a float without keys) and 233-717 (30M; 717 a float without keys). Beyond about 50M rows a distinct count's
# hash table does not fit the default engine memory (``cost.DISTINCT_ROW_BYTES``). ``bench_node_costs.py`` prints
# these shapes (1M rows, idle machine: 124 a float without keys, 98 with 8 groups, 162 with 1M groups).
DISTINCT_NS = ((1_000_000, 400.0), (10_000_000, 1_000.0), (math.inf, 2_000.0))
# A distinct count without keys of integers, dates or timestamps sorts its values (``aggregates.sorts_distinct``):
# per row and pass (log2 rows), 1.6-1.7 measured (1M and 10M distinct values, 40 ns a row at 10M; 0.46 through
# the engine in ``bench_node_costs.py`` at 1M).
DISTINCT_SORT_PASS_NS = 3.0
SORTED_TYPES = frozenset({"int64", "date32", "timestamp"})
FIXED_WIDTH_TYPES = SORTED_TYPES | {"float64", "bool"}
# The smallest or largest text (up to 60 bytes compared): 19-24 ns a row measured without keys and with 6 groups
# (4-7 for a float), whether the values differ in their last byte or are all equal; beyond ``AGG_NS``.
TEXT_EXTREME_NS = 30.0
# Exact quantiles per row and sort pass (log2 rows): gathered and selected per group up to 256 groups (45 ns a row
# over 2M rows, 21 passes), else one sort of (group, value) (622 ns a row over 2M rows in 2M groups).
QUANTILE_PASS_NS = ((256, 3.0), (100_000, 15.0), (math.inf, 30.0))  # 1,000 and 100,000 groups: 157-307 a row
# A hash join per input row (both sides), by its larger side: 15 (1,000 rows), 32 (100,000), 335 (2M).
JOIN_NS = ((1_000, 20.0), (100_000, 40.0), (math.inf, 340.0))
SORT_PASS_NS = 32.0  # per row, sort key and pass (log2 rows): 21 (a float key), 32 (a category and an int)
BOUND_PASS_NS = 25.0  # per row and pass: a stable argsort of the value ids (20 measured)
THRESHOLD_NS = 20.0  # per row: compare, fill nulls (16 measured with the filter's bytes)
UNION_NS = 10.0  # per row and input: categories decoded (16 a row with 33 bytes measured)
REPLY_BYTE_NS = 2.0  # per output byte: the worker's IPC stream, the pipe, the server's parse (not measured)
# Per byte of a job's stored outputs, the server's work before its end is published: the tables written as IPC,
# their hash, the reports' JSON (131 ms for a 23 MB result of 1M rows: 5.7 ns a byte), and the rows written to the
# state database ahead of the end (104 ms for 23 MB with WAL and synchronous=full: 4.5 ns a byte).
STORE_BYTE_NS = 20.0

# Release work on the server, nanoseconds.
RULES_CELL_NS = 5_000.0  # exact rules per output cell (thresholds, dominance, secondary suppression, marks)
# Secondary suppression per cell of a table and margin released beside it (the hidden counts per margin cell, the
# released cells listed per margin cell in key order): 0.63-0.80 us measured with 1% to 95% of 40,000 cells hidden
# and 3 or 7 margins, the same whatever the pattern of hidden cells (``disclosure.secondary._complements``).
SECONDARY_CELL_NS = 2_000.0
# Differencing per cell row of each pair of selections compared (a pair's sizes or shared counts): 0.98 us
# measured with 15 selections and no difference found; where every row is a difference found (its record, the
# sort by cells, the withholding) 9-10 us while every output's report listed them all, 1.1-5.0 us now that it
# builds its first 100 only (adversarial fanouts of 1 to 50 cells, int and 60-byte text keys).
DIFFERENCING_ROW_NS = 10_000.0
# DP: once per noisy aggregate, its mechanisms built and mapped by OpenDP's bindings (the threshold's search
# builds a few; 2.0-2.6 ms measured for a median by one key), and once per measured column (0.3-0.5 ms).
NOISE_FIXED_NS = 3_000_000.0
NOISE_COLUMN_NS = 1_000_000.0
SELECT_CELL_NS = 15_000.0  # DP: choosing the cells, per exact cell (Laplace threshold: 7 us of CPU, 13 loaded)
LAPLACE_INT_NS = 15_000.0  # DP count per cell (OpenDP's exact discrete Laplace: 5 us of CPU, 13 loaded)
LAPLACE_FLOAT_NS = 50_000.0  # DP sum, mean per cell (OpenDP's exact float Laplace: 22 us of CPU, 47 loaded)
HISTOGRAM_ROW_NS = 150.0  # DP quantile histogram per row: numpy cell index and sums (127 measured)
HISTOGRAM_KEY_NS = 100.0  # and per row and key of the cells: the keys' codes (121-241 ns a row with 1-3 keys)
SCORES_CELL_NS = 4_000.0  # DP quantile per cell: the candidates' scores (3.3 us measured)
# One noisy-min draw (permute and flip, OpenDP; a DP quantile makes one a cell over 501 candidates, or two over 23
# and 22 in a large cell): a fixed part (the call through OpenDP's C interface, the scores made rationals) and a
# part per candidate tried (a uniform index, a Bernoulli(exp(-gap / scale)) trial). Measured in CPU time on the idle
# machine, scores up to 1e15, epsilon 0.05 to 5: tied scores (one tried) 10-16 us over 22 or 23 candidates, 23-32
# over 501; one far better than the rest (half tried on average) 45-68 us over 22 or 23, 0.57-1.35 ms over 501:
# up to 5.2 us a candidate. Not divided by the draw threads: on a shared machine they may not get a core each.
DRAW_FIXED_NS = 50_000.0
DRAW_TRY_NS = 8_000.0
# Once per quantile: its measurement built and mapped by OpenDP's bindings, its invoker made (0.7-1.0 ms measured;
# the process's first, 6 ms, is paid when ``disclosure.dp`` is imported).
DRAW_SETUP_NS = 1_500_000.0
# The padding of the draws holds but with this probability over the draws' own randomness (never the data's).
DRAW_TAIL = 2.0**-40


class Shape(Protocol):
    """What the time model reads of a node's worst case (``engine.cost.Facts``)."""

    @property
    def rows(self) -> int: ...
    @property
    def width(self) -> int: ...


def _step(table: tuple[tuple[float, float], ...], size: float) -> float:
    return next(ns for bound, ns in table if size <= bound)


def _passes(rows: int) -> int:
    return max(1, rows.bit_length())


def _calls_ns(expr: Expr | None) -> float:
    """Nanoseconds per row to evaluate ``expr``: each Call at its own cost."""
    if expr is None or isinstance(expr, Col | Lit):
        return 0.0
    assert isinstance(expr, Call)
    if expr.fn == "case":
        own = CASE_ARG_NS * len(expr.args)
    else:
        own = FAST_CALL_NS if expr.fn in FAST_CALLS else SLOW_CALL_NS.get(expr.fn, CALL_NS)
    return own + sum(_calls_ns(a) for a in expr.args)


def node_seconds(
    node: Node, kids: Sequence[Shape], out: Shape, key_widths: int = 0, arg_types: Sequence[str | None] = ()
) -> float:
    """The worst-case time of one node of the Arrow engine, given its inputs' and its own worst case (and, for a
    group-by, join or sort, the bytes of its keys' values; for a group-by, the type of each aggregate's argument,
    which decides how a distinct count is computed: unknown counts as hashed)."""
    first = kids[0] if kids else out
    rows = first.rows
    ns: float
    if isinstance(node, plan.Scan):
        ns = out.rows * out.width * SCAN_BYTE_NS
    elif isinstance(node, plan.Input):
        ns = out.rows * (ROW_NS + 2 * out.width * BYTE_NS)  # the IPC bytes read into a table
    elif isinstance(node, plan.Filter):
        ns = rows * (_calls_ns(node.predicate) + ROW_NS + first.width * BYTE_NS)
    elif isinstance(node, plan.Project):
        ns = rows * (ROW_NS + sum(_calls_ns(e) + (0 if isinstance(e, Col) else 8 * BYTE_NS) for _, e in node.columns))
    elif isinstance(node, plan.Aggregate):
        per_row = sum(_calls_ns(a.arg) + AGG_NS for _, a in node.aggs)
        for i, (_, agg) in enumerate(node.aggs):
            kind = arg_types[i] if i < len(arg_types) else "unknown"
            if agg.fn in ("min", "max") and kind not in FIXED_WIDTH_TYPES:
                per_row += TEXT_EXTREME_NS  # text, or a type unknown: counted as text
            elif agg.fn == "count_distinct":
                sorted_ = not node.keys and kind in SORTED_TYPES
                per_row += DISTINCT_SORT_PASS_NS * _passes(rows) if sorted_ else _step(DISTINCT_NS, rows)
        if node.keys:
            per_row += _step(GROUP_NS, out.rows) * (1 + 0.25 * (len(node.keys) - 1)) + key_widths * BYTE_NS
        quantiles = sum(1 for _, a in node.aggs if a.fn in ("median", "quantile"))
        per_row += quantiles * _step(QUANTILE_PASS_NS, out.rows if node.keys else 1) * _passes(rows)
        ns = rows * per_row + out.rows * (ROW_NS + out.width * BYTE_NS)
    elif isinstance(node, plan.Join):
        left, right = kids
        hashed = _step(JOIN_NS, max(left.rows, right.rows)) + key_widths * BYTE_NS
        ns = (left.rows + right.rows) * (hashed + ROW_NS) + out.rows * (ROW_NS + out.width * BYTE_NS)
    elif isinstance(node, plan.Sort):
        ns = rows * (len(node.keys) * SORT_PASS_NS * _passes(rows) + key_widths * BYTE_NS + first.width * BYTE_NS)
    elif isinstance(node, plan.Bound):
        ns = rows * (BOUND_PASS_NS * _passes(rows) + first.width * BYTE_NS)
    elif isinstance(node, plan.Union):
        ns = sum(k.rows * (UNION_NS + ROW_NS + k.width * BYTE_NS) for k in kids)
    elif isinstance(node, plan.Threshold):
        ns = rows * (THRESHOLD_NS + ROW_NS + first.width * BYTE_NS)
    else:
        assert isinstance(node, plan.Limit)
        ns = 0.0  # a slice
    return min(ns, 1e30) * _NS


def store_seconds(output_bytes: int) -> float:
    """The worst-case time to prepare a job's stored result from outputs of at most ``output_bytes``."""
    return output_bytes * STORE_BYTE_NS * _NS


def reply_seconds(output_bytes: int) -> float:
    """The worst-case time to carry a run's outputs from the worker to the server."""
    return output_bytes * REPLY_BYTE_NS * _NS


def rules_seconds(roots: Mapping[str, Shape], columns: Mapping[str, int]) -> float:
    """The server's work on outputs released under the exact rules (and their checks): per cell, row x (columns
    + 1)."""
    return sum(f.rows * (columns[name] + 1) * RULES_CELL_NS for name, f in roots.items()) * _NS


def marks_seconds(grid: int, columns: int) -> float:
    """The server's work laying a table out on its public grid of ``grid`` key combinations, every one listed with
    its status (released, suppressed, empty) whatever the output's own bound on rows."""
    return grid * (columns + 1) * RULES_CELL_NS * _NS


def secondary_seconds(cells: int, margins: int) -> float:
    """The server's work suppressing more cells of a table of at most ``cells`` cells so that none of its
    ``margins`` (outputs over the same rows by fewer keys) gives a suppressed cell away."""
    return cells * margins * SECONDARY_CELL_NS * _NS


def differencing_seconds(rows: int) -> float:
    """The server's work comparing a job's selections for differencing over ``rows`` cell rows in all (each
    pair's rows: both sides' sizes, or the pair's shared counts), a difference found for each at worst."""
    return rows * DIFFERENCING_ROW_NS * _NS


def histogram_seconds(rows: int, keys: int = 1) -> float:
    """The server's work on a DP quantile's histogram of ``rows`` rows (each cell's counts per candidate bin),
    its cells told apart by ``keys`` keys."""
    return rows * (HISTOGRAM_ROW_NS + keys * HISTOGRAM_KEY_NS) * _NS


def noise_seconds(agg: NoisyAggregate, cells: int) -> float:
    """The server's worst-case work noising ``agg`` over at most ``cells`` exact cells before its quantiles are
    drawn: its mechanisms built, choosing the cells, then per cell each column's noise and a quantile's scores. The
    draws themselves are padded once the released cells are known (``quantile_draws_seconds``)."""
    fixed = NOISE_FIXED_NS + NOISE_COLUMN_NS * sum(1 for column in agg.columns if column.measured)
    per_cell = SELECT_CELL_NS + RULES_CELL_NS  # choosing, then the table built from Python lists
    for column in agg.columns:
        if column.kind == "count_values":
            per_cell += LAPLACE_INT_NS
        elif column.kind in ("sum", "mean"):
            per_cell += LAPLACE_FLOAT_NS
        elif column.kind == "quantile":
            per_cell += SCORES_CELL_NS
    return (fixed + cells * per_cell) * _NS


def draw_tries(draws: int, candidates: int) -> int:
    """A bound on the candidates permute and flip tries over ``draws`` independent draws among ``candidates``,
    whatever the scores, exceeded with probability at most ``DRAW_TAIL``.

    A draw tries candidates in a random order until one is accepted, and a best one always is: it tries at most
    as many as the first best one's position, 1 to ``candidates``, on average at most (``candidates`` + 1) / 2.
    The draws are independent, so by Hoeffding's inequality their sum exceeds ``draws`` times that mean by more
    than (``candidates`` - 1) sqrt(``draws`` ln(1 / tail) / 2) with probability at most the tail; and it never
    exceeds ``draws`` x ``candidates``."""
    if draws <= 0 or candidates <= 0:
        return 0
    spread = (candidates - 1) * math.sqrt(draws * math.log(1 / DRAW_TAIL) / 2)
    return min(draws * candidates, math.ceil(draws * (candidates + 1) / 2 + spread))


def quantile_draws_seconds(draws: Sequence[tuple[int, int]]) -> float:
    """The worst-case time of one DP quantile's draws: set up once, then for each (``n``, ``c``) of ``draws``, ``n``
    draws among ``c`` candidates each (``disclosure.dp._draws``)."""
    return DRAW_SETUP_NS * _NS + sum(draws_seconds(n, candidates) for n, candidates in draws)


def draws_seconds(draws: int, candidates: int) -> float:
    """The worst-case time of ``draws`` noisy-min draws among ``candidates`` (``draw_tries``)."""
    return (draws * DRAW_FIXED_NS + draw_tries(draws, candidates) * DRAW_TRY_NS) * _NS
