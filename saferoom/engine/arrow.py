"""The embedded engine: executes plans over (memory-mapped) Arrow tables in Arrow's C++ kernels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog.statistics import ColumnStatistics
from saferoom.engine.aggregates import aggregate
from saferoom.engine.expressions import Value, decode, evaluate, materialize
from saferoom.engine.optimize import column_needs, prune_columns, shared_nodes
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
    Union,
    exact_key,
)
from saferoom.errors import InvalidPlan

__all__ = ["ArrowEngine", "Engine", "Execution"]

Statistics = Callable[[str], Mapping[str, ColumnStatistics]]  # dataset -> its stored statistics, by column

_JOIN_TYPES = {"inner": "inner", "left": "left outer", "right": "right outer", "full": "full outer"}
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowKeyError)


class Execution(NamedTuple):
    """An executed plan: its table, and how many rows each Threshold label dropped."""

    table: pa.Table
    dropped: dict[str, int]


class Engine(Protocol):
    """Anything that can execute a plan."""

    def execute(self, plan: Node) -> Execution: ...


class ArrowEngine:
    """Executes plans with pyarrow.compute and Acero over tables from ``source`` (dataset name -> table) and
    ``inputs`` (tables supplied for ``Input`` nodes, by label). ``statistics``: each dataset's stored statistics
    (``Catalog.statistics``, verified against the mapped bytes), which let a clamp that cannot change any value
    of a scanned column be skipped."""

    def __init__(
        self,
        source: Callable[[str], pa.Table],
        inputs: Mapping[str, pa.Table] | None = None,
        statistics: Statistics | None = None,
    ) -> None:
        self._source = source
        self._inputs = dict(inputs or {})
        self._statistics = statistics

    def execute(self, plan: Node) -> Execution:
        return self.execute_all([plan])[0]

    def execute_all(self, plans: list[Node]) -> list[Execution]:
        """Execute several plans; a subtree they share (one object) is executed once."""
        try:
            pruned = prune_columns(*plans)
            run = _Run(self._source, self._inputs, shared_nodes(pruned), self._statistics, column_needs(*pruned))
            return [Execution(*run.table(root)) for root in pruned]
        except RecursionError:
            raise InvalidPlan("the plan is nested too deeply") from None
        except _ARROW_ERRORS as exc:
            raise InvalidPlan(_message(exc)) from None


class _Run:
    """One execution: results of shared subtrees are kept and reused."""

    def __init__(
        self,
        source: Callable[[str], pa.Table],
        inputs: dict[str, pa.Table],
        shared: set[int],
        statistics: Statistics | None = None,
        needs: Mapping[int, frozenset[str] | None] | None = None,
    ) -> None:
        self._source = source
        self._inputs = inputs
        self._shared = shared
        self._statistics = statistics
        self._needs = needs or {}  # node id -> the columns its parents read (``optimize.column_needs``)
        self._cache: dict[int, tuple[pa.Table, dict[str, int]]] = {}
        self._masks: dict[tuple[int, object], Value] = {}  # (shared input, condition) -> its value per row

    def table(self, node: Node) -> tuple[pa.Table, dict[str, int]]:
        """The node's table and the rows each Threshold below it dropped."""
        if id(node) in self._cache:
            return self._cache[id(node)]
        result = self._compute(node)
        if id(node) in self._shared:
            self._cache[id(node)] = result
        return result

    def _mask(self, node: Node, table: pa.Table, predicate: Expr) -> Value:
        """``predicate`` over ``table`` (``node``'s): evaluated once per shared input, so that a filter and the
        subset rule's count of the rows it keeps and leaves out read the same mask."""
        if id(node) not in self._shared:
            return evaluate(predicate, table)
        key = (id(node), exact_key(predicate))
        if key not in self._masks:
            self._masks[key] = evaluate(predicate, table)
        return self._masks[key]

    def _input(self, node: Node, dropped: dict[str, int]) -> pa.Table:
        table, below = self.table(node)
        dropped.update(below)
        return table

    def _compute(self, node: Node) -> tuple[pa.Table, dict[str, int]]:
        dropped: dict[str, int] = {}
        if isinstance(node, Scan):
            table = self._source(node.dataset)
            missing = [c for c in node.columns if c not in table.column_names]
            if missing:
                raise InvalidPlan(f"dataset {node.dataset!r} has no column {missing[0]!r}")
            return table.select(list(node.columns)), dropped
        if isinstance(node, Input):
            supplied = self._inputs.get(node.label)
            names = [name for name, _ in node.columns]
            if supplied is None or supplied.column_names != names:
                raise InvalidPlan(f"no table was supplied for input {node.label!r}")
            return supplied, dropped
        if isinstance(node, Bound):
            return _bound(self._input(node.input, dropped), node.column, node.n), dropped
        if isinstance(node, Filter):
            table = self._input(node.input, dropped)
            mask = self._mask(node.input, table, node.predicate)
            if not (pa.types.is_boolean(mask.type) or pa.types.is_null(mask.type)):
                raise InvalidPlan(f"filter needs a true/false condition, got {mask.type}")
            need = self._needs.get(id(node))
            if need is not None:  # columns only the predicate read are not carried (nor filtered) further
                table = table.select([c for c in table.column_names if c in need])
            if isinstance(mask, pa.Scalar):
                return (table if mask.as_py() is True else table.slice(0, 0)), dropped
            return _filter(table, mask), dropped
        if isinstance(node, Project):
            table = self._input(node.input, dropped)
            n = table.num_rows
            exprs = [expr for _, expr in node.columns]
            if isinstance(node.input, Scan) and self._statistics is not None:
                stored = self._statistics(node.input.dataset)
                exprs = [_unclamped(expr, stored) for expr in exprs]
            columns = [materialize(evaluate(expr, table), n) for expr in exprs]
            if not columns:
                return table.select([]), dropped
            return pa.table(columns, names=[name for name, _ in node.columns]), dropped
        if isinstance(node, Aggregate):
            table = self._input(node.input, dropped)
            counted = None if node.keys else _counts_when(node, table, lambda p: self._mask(node.input, table, p))
            return (aggregate(table, node.keys, node.aggs) if counted is None else counted), dropped
        if isinstance(node, Join):
            left = self._input(node.left, dropped)
            return _join(left, self._input(node.right, dropped), node), dropped
        if isinstance(node, Sort):
            table = self._input(node.input, dropped)
            for key, _ in node.keys:
                if key not in table.column_names:
                    raise InvalidPlan(f"cannot sort by unknown column {key!r}")
            keys = pa.table({f"k{i}": decode(table.column(k)) for i, (k, _) in enumerate(node.keys)})
            options = pc.SortOptions(
                sort_keys=[
                    (f"k{i}", "descending" if d else "ascending", "at_end") for i, (_, d) in enumerate(node.keys)
                ]
            )
            return table.take(pc.sort_indices(keys, options=options)), dropped
        if isinstance(node, Limit):
            return self._input(node.input, dropped).slice(0, node.n), dropped
        if isinstance(node, Union):
            tables = [self._input(i, dropped) for i in node.inputs]
            need = self._needs.get(id(node))
            if need is not None:  # an input shared with another parent may carry that parent's columns too
                tables = [t.select([c for c in t.column_names if c in need]) for t in tables]
            return _union(tables), dropped
        table = self._input(node.input, dropped)
        if node.column not in table.column_names:
            raise InvalidPlan(f"threshold on unknown column {node.column!r}")
        keep = pc.fill_null(pc.greater_equal(table.column(node.column), node.minimum), False)
        kept = table.filter(keep)
        dropped[node.label] = table.num_rows - kept.num_rows
        return kept, dropped


def _filter(table: pa.Table, mask: pa.ChunkedArray | pa.Array) -> pa.Table:
    """The rows of ``table`` where ``mask`` is true (null drops the row), the mask cut to each column's chunks.

    Arrow computes an expression over a chunked column into one preallocated chunk, while a memory-mapped
    column keeps the file's record batches: filtering by a mask chunked otherwise than the column costs Arrow
    about twice as much (10M rows in 10 batches: 115 ms for three columns, 68 ms with the mask cut to match).
    A mask true on every row keeps the table as it is, without copying it (a DP statistic's filter of the rows
    with a value, on a column without nulls: 8M rows, 125 MB not copied)."""
    if pc.sum(mask).as_py() == len(mask):  # no false and no null
        return table
    if not table.num_columns:
        return table.filter(mask, null_selection_behavior="drop")
    layouts = [tuple(len(c) for c in column.chunks) for column in table.columns]
    if len(set(layouts)) == 1:
        return table.filter(_cut(mask, layouts[0]), null_selection_behavior="drop")
    columns = [
        pc.filter(column, _cut(mask, layout), null_selection_behavior="drop")
        for column, layout in zip(table.columns, layouts, strict=True)
    ]
    return pa.table(columns, names=table.column_names)


def _cut(mask: pa.ChunkedArray | pa.Array, layout: tuple[int, ...]) -> pa.ChunkedArray | pa.Array:
    """``mask`` as chunks of the lengths ``layout`` gives (zero-copy slices of it)."""
    if isinstance(mask, pa.ChunkedArray):
        if tuple(len(c) for c in mask.chunks) == layout:
            return mask
        whole = mask.combine_chunks() if mask.num_chunks != 1 else mask.chunk(0)
    elif (len(mask),) == layout:
        return mask
    else:
        whole = mask
    starts = np.cumsum((0, *layout))
    return pa.chunked_array([whole.slice(start, n) for start, n in zip(starts[:-1], layout, strict=True)], whole.type)


def _unclamped(expr: Expr, stored: Mapping[str, ColumnStatistics]) -> Expr:
    """``clamp(column, low, high)`` of a scanned column whose stored statistics lie within [low, high] (no NaN)
    is the column itself: the clamp would return every value as it is, nulls included."""
    if not (isinstance(expr, Call) and expr.fn == "clamp" and len(expr.args) == 3):
        return expr
    column, low, high = expr.args
    if not (isinstance(column, Col) and isinstance(low, Lit) and isinstance(high, Lit)):
        return expr
    found, lo, hi = stored.get(column.name), low.value, high.value
    if found is None or isinstance(lo, bool) or isinstance(hi, bool):
        return expr
    if not (isinstance(lo, int | float) and isinstance(hi, int | float)):
        return expr
    return column if found.within(lo, hi) else expr  # compared exactly: an int bound is not rounded to a float


def _counts_when(node: Aggregate, table: pa.Table, mask_of: Callable[[Expr], Value]) -> pa.Table | None:
    """A global aggregate of nothing but ``sum(case(p, 1, 0))`` and ``sum(case(p, 0, 1))`` (the subset rule's
    counts of the rows a condition keeps and leaves out): the number of rows where ``p`` is true, counted on
    its mask, shared with the filter on ``p``; None for any other aggregate. The same table as the general
    path: int64 counts, null (the sum of no rows) on an empty input."""
    wanted: list[tuple[str, Expr, bool]] = []  # (output, condition, counts the rows it keeps)
    for name, agg in node.aggs:
        arg = agg.arg
        if not (agg.fn == "sum" and isinstance(arg, Call) and arg.fn == "case" and len(arg.args) == 3):
            return None
        condition, then, otherwise = arg.args
        if not (isinstance(then, Lit) and isinstance(otherwise, Lit)):
            return None
        values = (type(then.value), then.value, type(otherwise.value), otherwise.value)
        if values not in ((int, 1, int, 0), (int, 0, int, 1)):
            return None
        wanted.append((name, condition, then.value == 1))
    n = table.num_rows
    columns = {}
    for name, condition, keeps in wanted:
        mask = mask_of(condition)
        if not pa.types.is_boolean(mask.type):
            return None  # the general path says why it cannot be computed
        if isinstance(mask, pa.Scalar):
            kept = n if mask.as_py() is True else 0
        else:
            kept = int(pc.sum(pc.fill_null(mask, False), min_count=0).as_py())
        columns[name] = pa.chunked_array([pa.array([(kept if keeps else n - kept) if n else None], pa.int64())])
    return pa.table(columns)


def _bound(table: pa.Table, column: str, n: int) -> pa.Table:
    """At most ``n`` rows per distinct value of ``column`` (nulls count as one value): the first in input order.

    One stable sort by the column's value ids, each row's rank inside its run of equal ids, and a mask back in
    input order.
    """
    if column not in table.column_names:
        raise InvalidPlan(f"bound on unknown column {column!r}")
    if table.num_rows <= n:
        return table
    values = table.column(column).combine_chunks()
    if pa.types.is_integer(values.type):
        ids = pc.fill_null(pc.cast(values, pa.int64()), -(2**63)).to_numpy()
    else:
        ids = pc.fill_null(pc.dictionary_encode(values).indices, -1).to_numpy()
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    position = np.arange(len(ids))
    starts = np.ones(len(ids), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    rank = position - np.maximum.accumulate(np.where(starts, position, 0))
    keep = np.empty(len(ids), dtype=bool)
    keep[order] = rank < n
    if keep.all():
        return table
    return table.filter(pa.array(keep))


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded (Acero joins and unions want plain columns)."""
    if not any(pa.types.is_dictionary(t) for t in table.schema.types):
        return table
    return pa.table([decode(c) for c in table.columns], names=table.column_names)


def _join(left: pa.Table, right: pa.Table, node: Join) -> pa.Table:
    for key in node.on:
        if key not in left.column_names or key not in right.column_names:
            raise InvalidPlan(f"join key {key!r} must exist on both sides")
    clash = (set(left.column_names) & set(right.column_names)) - set(node.on)
    if clash:
        raise InvalidPlan(f"column {sorted(clash)[0]!r} exists on both sides of the join; rename it first")
    left, left_codes = _as_codes(left, node.on)
    right, right_codes = _as_codes(right, node.on)
    left, right = _plain(left), _plain(right)
    for key in node.on:
        lt, rt = left.schema.field(key).type, right.schema.field(key).type
        if lt != rt:
            if pa.types.is_integer(lt) and pa.types.is_integer(rt):
                left = left.set_column(left.column_names.index(key), key, pc.cast(left.column(key), pa.int64()))
                right = right.set_column(right.column_names.index(key), key, pc.cast(right.column(key), pa.int64()))
            else:
                raise InvalidPlan(f"join key {key!r} has type {lt} on the left and {rt} on the right")
    order = [*left.column_names, *(c for c in right.column_names if c not in node.on)]
    joined = left.join(right, list(node.on), join_type=_JOIN_TYPES[node.how], coalesce_keys=True, use_threads=True)
    joined = joined.select(order)
    for name, dictionary in {**left_codes, **right_codes}.items():
        position = joined.column_names.index(name)
        codes = joined.column(position)
        kind = pa.dictionary(codes.type, dictionary.type)
        encoded = [pa.DictionaryArray.from_arrays(chunk, dictionary) for chunk in codes.chunks]
        joined = joined.set_column(position, name, pa.chunked_array(encoded, kind))
    return joined


def _as_codes(table: pa.Table, keys: tuple[str, ...]) -> tuple[pa.Table, dict[str, pa.Array]]:
    """Category columns other than the join keys carried through the join as their codes (Acero joins take no
    dictionary columns; decoding every row's category costs more than the join's own work on a large side),
    with the one dictionary to put back over them; a column whose chunks hold different dictionaries is left
    to be decoded."""
    codes: dict[str, pa.Array] = {}
    for position, field in enumerate(table.schema):
        if field.name in keys or not pa.types.is_dictionary(field.type):
            continue
        column = table.column(position)
        if column.num_chunks == 0:
            continue
        dictionary = column.chunk(0).dictionary
        if not all(chunk.dictionary.equals(dictionary) for chunk in column.chunks[1:]):
            continue
        indices = pa.chunked_array([chunk.indices for chunk in column.chunks], field.type.index_type)
        table = table.set_column(position, field.name, indices)
        codes[field.name] = dictionary
    return table, codes


def _union(tables: list[pa.Table]) -> pa.Table:
    names = set(tables[0].column_names)
    for t in tables[1:]:
        if set(t.column_names) != names:
            raise InvalidPlan("union needs the same column names on every input")
    order = tables[0].column_names
    if not order:  # concat_tables loses the rows of tables without columns: count them instead
        return pa.table({"rows": pa.nulls(sum(t.num_rows for t in tables))}).select([])
    aligned = [_plain(t.select(order)) for t in tables]
    for name in order:
        kinds = {t.schema.field(name).type for t in aligned}
        if len(kinds) > 1:
            if all(pa.types.is_integer(k) or pa.types.is_floating(k) or pa.types.is_null(k) for k in kinds):
                target = pa.float64() if any(pa.types.is_floating(k) for k in kinds) else pa.int64()
                # unchecked: an int64 beyond 2**53 rounds to the nearest float instead of failing on its value
                aligned = [
                    t.set_column(order.index(name), name, pc.cast(t.column(name), target, safe=False)) for t in aligned
                ]
            elif all(pa.types.is_null(k) or k == next(iter(kinds - {pa.null()}), None) for k in kinds):
                target = next(iter(kinds - {pa.null()}))
                aligned = [t.set_column(order.index(name), name, pc.cast(t.column(name), target)) for t in aligned]
            else:
                raise InvalidPlan(f"union: column {name!r} has different types ({', '.join(map(str, kinds))})")
    return pa.concat_tables(aligned)


def _message(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"the engine could not execute the plan: {text[:200]}"
