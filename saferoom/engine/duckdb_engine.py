"""The vectorised engine: the same plans as ``ArrowEngine``, executed by an embedded DuckDB over the same
(memory-mapped) Arrow tables, zero copy, on several threads, within a memory limit, spilling only where granted.

Each node becomes one SQL ``SELECT`` over its inputs' (the whole plan is one statement, optimised and
pipelined by DuckDB); a subtree shared by several parents and the input of every ``Threshold`` are kept once in
a temporary table (a Threshold's input is cells: few rows). Every function is the registry's, lowered in
``engine.duckdb_sql``; columns are carried under generated names (DuckDB resolves names without regard to case;
plan names may differ only in case), and the plan's names are put back on the result.

Where this engine and the Arrow engine differ (both stay total; tests/engine/test_engine_duckdb.py checks the
rest value for value over random and adversarial plans):
    Sort      ties are broken by the remaining columns (ascending, nulls last), as on Spark: a head is
              deterministic; Arrow keeps input order among ties
    Limit     without a Sort: some n rows
    Bound     keeps, per value of the column, the n rows that come first when ordered by all their other
              columns (as on Spark: a choice that depends only on that unit's own rows)
    keys      -0.0 and 0.0 are one group or join key, and so is every NaN (Arrow tells them apart by their bits:
              -0.0 beside 0.0, a NaN of either sign), and a distinct count counts them once
    float sums, means and standard deviations may differ in the last bits (another order of additions); one
              whose partial sums overflow may be infinite or NaN on one engine and finite on the other, and a
              standard deviation that overflows is NaN here, infinity on Arrow
    quantiles ignore NaN in every group (Arrow: below 257 groups; it sorts NaN last above)

Confinement: the connection is in memory; extensions are never installed or loaded (no download, no
``INSTALL``/``LOAD``), external access is off (no file, no URL: only the registered Arrow tables are readable),
and the configuration is locked before any plan runs, so no statement can undo it. Spilling goes to
``temp_directory`` only when one is granted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from saferoom.engine.arrow import Execution
from saferoom.engine.duckdb_sql import (
    ARROW_FUNCTIONS,
    LOWERINGS,
    Arg,
    Params,
    float_sql,
    int_sql,
    sql_type,
    unify,
    wrap64,
)
from saferoom.engine.expressions import TIMESTAMP
from saferoom.engine.functions import lookup
from saferoom.engine.optimize import prune_columns, shared_nodes
from saferoom.engine.plan import (
    AggExpr,
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
    walk,
)
from saferoom.errors import InvalidPlan

__all__ = ["DuckDBEngine"]

_NUMERIC_ONLY = {"sum", "mean", "std", "median", "quantile"}
_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}
_PARAM = re.compile(r"\$(p[0-9]+)")


def _logical(t: pa.DataType) -> str:
    """The logical type of an Arrow column (as the catalog declares them)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_date32(t):
        return "date32"
    if t == TIMESTAMP:
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    raise InvalidPlan(f"the engine cannot read columns of type {t}")


def _for_duckdb(table: pa.Table) -> pa.Table:
    """Dates as their int32 days and timestamps as their int64 seconds (zero copy): DuckDB would read date32's
    extremes as +-infinity, and timestamp[s] beyond its microseconds' range not at all."""
    if not any(pa.types.is_date32(t) or t == TIMESTAMP for t in table.schema.types):
        return table
    views = {pa.date32(): pa.int32(), TIMESTAMP: pa.int64()}
    columns = [_view(c, views[c.type]) if c.type in views else c for c in table.columns]
    return pa.table(columns, names=table.column_names)


def _view(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """The same buffers read as another type of the same width."""
    return pa.chunked_array([chunk.view(target) for chunk in column.chunks], target)


@dataclass
class _Rel:
    """A node lowered: its SELECT, and each output column's generated identifier and logical type."""

    sql: str
    columns: dict[str, tuple[str, str]]  # plan name -> (identifier, logical type)
    order: list[str] = field(default_factory=list)  # ORDER BY clause of a sorted relation (kept by a Limit)


class DuckDBEngine:
    """Executes plans in DuckDB over tables from ``source`` (dataset name -> Arrow table) and ``inputs``
    (tables supplied for ``Input`` nodes, by label). ``threads``, ``memory_mib`` and ``temp_directory`` bound
    the work: the memory limit applies to DuckDB's own buffers (the Arrow tables it reads are mapped, not
    copied); without a temporary directory nothing spills and a plan beyond the limit fails as a whole."""

    def __init__(
        self,
        source: Callable[[str], pa.Table],
        inputs: Mapping[str, pa.Table] | None = None,
        *,
        threads: int = 2,
        memory_mib: int = 4096,
        temp_directory: str | None = None,
    ) -> None:
        self._source = source
        self._inputs = dict(inputs or {})
        self._threads = max(1, int(threads))
        self._memory_mib = max(64, int(memory_mib))
        self._temp_directory = temp_directory

    def execute(self, plan: Node) -> Execution:
        return self.execute_all([plan])[0]

    def execute_all(self, plans: list[Node]) -> list[Execution]:
        """Execute several plans; a subtree they share (one object) is executed once."""
        import duckdb

        try:
            pruned = prune_columns(*plans)
            with self._connect(pruned) as con:
                run = _Run(con, shared_nodes(pruned), self._registered)
                return [run.execute(root) for root in pruned]
        except RecursionError:
            raise InvalidPlan("the plan is nested too deeply") from None
        except duckdb.Error as exc:
            # Never the exception's text: DuckDB quotes the values it failed on (an overflow names both operands).
            raise InvalidPlan(f"the engine could not execute the plan ({type(exc).__name__})") from None

    def _connect(self, plans: list[Node]) -> Any:
        import duckdb
        from duckdb.func import ARROW, SPECIAL

        config: dict[str, Any] = {
            "threads": self._threads,
            "memory_limit": f"{self._memory_mib}MiB",
            "temp_directory": self._temp_directory or "",
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "preserve_insertion_order": True,
        }
        con = duckdb.connect(":memory:", config=config)
        self._registered: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        try:
            used = _calls(plans)
            for name, function, params, result, needed_by in ARROW_FUNCTIONS:
                if needed_by not in used:
                    continue
                types: list[Any] = list(params)
                con.create_function(name, function, types, result, type=ARROW, null_handling=SPECIAL)
            for root in plans:
                for node in walk(root):
                    if isinstance(node, Scan) and ("scan", node.dataset) not in self._registered:
                        self._register(con, ("scan", node.dataset), self._source(node.dataset))
                    elif isinstance(node, Input) and ("input", node.label) not in self._registered:
                        supplied = self._inputs.get(node.label)
                        names = [name for name, _ in node.columns]
                        if supplied is None or supplied.column_names != names:
                            raise InvalidPlan(f"no table was supplied for input {node.label!r}")
                        self._register(con, ("input", node.label), supplied)
            # Only now: registering Python objects and functions is itself external access.
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    def _register(self, con: Any, key: tuple[str, str], table: pa.Table) -> None:
        name = f"t{len(self._registered)}"
        con.register(name, _for_duckdb(table))
        self._registered[key] = (name, {f.name: _logical(f.type) for f in table.schema})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Run:
    """One execution over one connection: the SQL of every node, shared subtrees kept in temporary tables."""

    def __init__(self, con: Any, shared: set[int], registered: dict[tuple[str, str], tuple[str, dict[str, str]]]):
        self._con = con
        self._shared = shared
        self._registered = registered
        self._rels: dict[int, _Rel] = {}
        self._dropped: dict[int, tuple[str, int]] = {}
        self._params = Params()
        self._counter = 0

    def _ident(self) -> str:
        self._counter += 1
        return f"c{self._counter}"

    def _run(self, sql: str) -> Any:
        """A relation of ``sql`` (lazy, read with ``to_arrow_table`` or ``fetchone``; DDL runs at once)."""
        used = {m.group(1) for m in _PARAM.finditer(sql)}
        values = {k: v for k, v in self._params.values.items() if k in used}
        return self._con.sql(sql, params=values or None)

    def execute(self, root: Node) -> Execution:
        rel = self.rel(root)
        names = list(rel.columns)
        select = ", ".join(rel.columns[n][0] for n in names) or "NULL AS c0"
        ordered = f" ORDER BY {', '.join(rel.order)}" if rel.order else ""
        table = self._run(f"SELECT {select} FROM ({rel.sql}) AS s{ordered}").to_arrow_table()
        columns = []
        for index, name in enumerate(names):
            columns.append(_arrow_column(table.column(index), rel.columns[name][1]))
        out = pa.table(columns, names=names) if names else pa.table({})
        dropped = {self._dropped[id(n)][0]: self._dropped[id(n)][1] for n in walk(root) if id(n) in self._dropped}
        return Execution(out, dropped)

    def rel(self, node: Node) -> _Rel:
        if id(node) in self._rels:
            return self._rels[id(node)]
        rel = self._lower(node)
        if id(node) in self._shared and _worth_keeping(node):
            rel = self._materialize(rel)
        self._rels[id(node)] = rel
        return rel

    def _materialize(self, rel: _Rel) -> _Rel:
        self._counter += 1
        name = f"m{self._counter}"
        ordered = f" ORDER BY {', '.join(rel.order)}" if rel.order else ""
        self._run(f"CREATE TEMP TABLE {name} AS SELECT * FROM ({rel.sql}) AS s{ordered}")
        return _Rel(f"SELECT * FROM {name}", rel.columns, [])

    # ------------------------------------------------------------------ nodes

    def _lower(self, node: Node) -> _Rel:
        if isinstance(node, Scan | Input):
            key = ("scan", node.dataset) if isinstance(node, Scan) else ("input", node.label)
            table, types = self._registered[key]
            wanted = list(node.columns) if isinstance(node, Scan) else [n for n, _ in node.columns]
            cols: dict[str, tuple[str, str]] = {}
            parts = []
            for name in wanted:
                if name not in types:
                    raise InvalidPlan(f"dataset {key[1]!r} has no column {name!r}")
                ident = self._ident()
                cols[name] = (ident, types[name])
                parts.append(f"{_quote(name)} AS {ident}")
            return _Rel(f"SELECT {', '.join(parts) or 'NULL AS c0'} FROM {table}", cols)
        if isinstance(node, Join):
            return self._join(node)
        if isinstance(node, Union):
            return self._union(node)
        below = self.rel(node.input)
        if isinstance(node, Filter):
            pred = self.expr(node.predicate, below)
            if pred.type not in ("bool", "null"):
                raise InvalidPlan(f"filter needs a true/false condition, got {pred.type}")
            return _Rel(f"SELECT * FROM ({below.sql}) AS s WHERE CAST({pred.sql} AS BOOLEAN)", below.columns)
        if isinstance(node, Project):
            cols, parts = {}, []
            for name, e in node.columns:
                arg = self.expr(e, below)
                ident = self._ident()
                cols[name] = (ident, arg.type)
                parts.append(f"{arg.sql} AS {ident}")
            return _Rel(f"SELECT {', '.join(parts) or 'NULL AS c0'} FROM ({below.sql}) AS s", cols)
        if isinstance(node, Aggregate):
            return self._aggregate(node, below)
        if isinstance(node, Sort):
            order = []
            for column, descending in node.keys:
                if column not in below.columns:
                    raise InvalidPlan(f"cannot sort by unknown column {column!r}")
                order += _order_terms(*below.columns[column], descending)
            for name, (ident, t) in below.columns.items():  # ties: the remaining columns, ascending
                if name not in {k for k, _ in node.keys}:
                    order += _order_terms(ident, t, False)
            return _Rel(f"SELECT * FROM ({below.sql}) AS s ORDER BY {', '.join(order)}", below.columns, order)
        if isinstance(node, Limit):
            ordered = f" ORDER BY {', '.join(below.order)}" if below.order else ""
            return _Rel(f"SELECT * FROM ({below.sql}) AS s{ordered} LIMIT {int(node.n)}", below.columns, below.order)
        if isinstance(node, Bound):
            if node.column not in below.columns:
                raise InvalidPlan(f"bound on unknown column {node.column!r}")
            ident = below.columns[node.column][0]
            order = [t for name, (i, ty) in below.columns.items() if name != node.column for t in _order_terms(i, ty)]
            window = f"PARTITION BY {ident}" + (f" ORDER BY {', '.join(order)}" if order else "")
            rank = self._ident()
            keep = ", ".join(i for i, _ in below.columns.values()) or "NULL AS c0"
            sql = (
                f"SELECT {keep} FROM (SELECT *, row_number() OVER ({window}) AS {rank} FROM ({below.sql}) AS s) "
                f"AS r WHERE {rank} <= {int(node.n)}"
            )
            return _Rel(sql, below.columns)
        assert isinstance(node, Threshold)
        if node.column not in below.columns:
            raise InvalidPlan(f"threshold on unknown column {node.column!r}")
        kept = self._materialize(below)
        ident = below.columns[node.column][0]
        keep = f"COALESCE({ident} >= {int_sql(node.minimum)}, false)"
        dropped = self._run(f"SELECT count(*) FROM ({kept.sql}) AS s WHERE NOT {keep}").fetchall()
        self._dropped[id(node)] = (node.label, int(dropped[0][0]))
        return _Rel(f"SELECT * FROM ({kept.sql}) AS s WHERE {keep}", below.columns)

    def _aggregate(self, node: Aggregate, below: _Rel) -> _Rel:
        for key in node.keys:
            if key not in below.columns:
                raise InvalidPlan(f"unknown group key {key!r}")
        cols: dict[str, tuple[str, str]] = {key: below.columns[key] for key in node.keys}
        keys = [below.columns[key][0] for key in node.keys]
        # The release step asks for the same aggregate more than once (a count of rows as the researcher's n
        # and as the contributor count): each distinct one is computed once, and named as often as asked.
        computed: dict[str, str] = {}
        outer = list(keys)
        for name, agg in node.aggs:
            sql, t = self._agg(agg, below)
            if sql not in computed:
                computed[sql] = self._ident()
            ident = self._ident()
            cols[name] = (ident, t)
            outer.append(f"{computed[sql]} AS {ident}")
        inner = keys + [f"{sql} AS {ident}" for sql, ident in computed.items()]
        group = f" GROUP BY {', '.join(keys)}" if node.keys else ""
        if not inner:  # no keys and no aggregates: one row of nothing
            inner = outer = ["count(*) AS c0"]
        sql = f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM ({below.sql}) AS s{group}) AS g"
        return _Rel(sql, cols)

    def _agg(self, agg: AggExpr, below: _Rel) -> tuple[str, str]:
        if agg.fn == "count" and agg.arg is None:
            return "count(*)", "int64"
        if agg.arg is None:
            raise InvalidPlan(f"{agg.fn}: needs an argument")
        a = self.expr(agg.arg, below)
        if agg.fn in _NUMERIC_ONLY and a.type not in ("int64", "float64", "null"):
            raise InvalidPlan(f"{agg.fn} needs a numeric column, got {a.type}")
        v = f"CAST({a.sql} AS DOUBLE)" if a.type != "float64" else a.sql
        not_nan = f"CASE WHEN isnan({v}) THEN NULL ELSE {v} END"
        if agg.fn == "count":
            return f"count({a.sql})", "int64"
        if agg.fn == "count_distinct":
            return f"count(DISTINCT {a.sql})", "int64"
        if agg.fn == "sum":
            if a.type == "int64":  # exact in HUGEINT, then wrapped as Arrow's int64 sum wraps
                return wrap64(f"sum(CAST({a.sql} AS HUGEINT))"), "int64"
            return f"CAST(sum({v}) AS DOUBLE)", "float64"
        if agg.fn == "mean":
            return f"CAST(avg({a.sql if a.type == 'int64' else v}) AS DOUBLE)", "float64"
        if agg.fn == "std":
            return f"stddev_samp({v})", "float64"
        if agg.fn in ("median", "quantile"):
            q = 0.5 if agg.fn == "median" else float(agg.q or 0.0)
            return f"CAST(quantile_cont({not_nan}, {float(q)!r}) AS DOUBLE)", "float64"
        if agg.fn in ("min", "max"):
            if a.type == "float64":  # NaN only where every value is NaN, as Arrow's
                nan = float_sql(float("nan"))
                return f"COALESCE({agg.fn}({not_nan}), CASE WHEN bool_or(isnan({v})) THEN {nan} END)", "float64"
            return f"{agg.fn}({a.sql})", a.type
        raise InvalidPlan(f"unknown aggregate {agg.fn!r}")

    def _join(self, node: Join) -> _Rel:
        left, right = self.rel(node.left), self.rel(node.right)
        for key in node.on:
            if key not in left.columns or key not in right.columns:
                raise InvalidPlan(f"join key {key!r} must exist on both sides")
        clash = (set(left.columns) & set(right.columns)) - set(node.on)
        if clash:
            raise InvalidPlan(f"column {sorted(clash)[0]!r} exists on both sides of the join; rename it first")
        for key in node.on:
            lt, rt = left.columns[key][1], right.columns[key][1]
            if lt != rt:
                raise InvalidPlan(f"join key {key!r} has type {lt} on the left and {rt} on the right")
        how = {"inner": "INNER", "left": "LEFT", "right": "RIGHT", "full": "FULL OUTER"}[node.how]
        cols: dict[str, tuple[str, str]] = {}
        parts = []
        for name, (ident, t) in left.columns.items():
            new = self._ident()
            cols[name] = (new, t)
            if name in node.on and node.how in ("right", "full"):
                parts.append(f"COALESCE(l.{ident}, r.{right.columns[name][0]}) AS {new}")
            else:
                parts.append(f"l.{ident} AS {new}")
        for name, (ident, t) in right.columns.items():
            if name in node.on:
                continue
            new = self._ident()
            cols[name] = (new, t)
            parts.append(f"r.{ident} AS {new}")
        on = " AND ".join(f"l.{left.columns[k][0]} = r.{right.columns[k][0]}" for k in node.on)
        sql = f"SELECT {', '.join(parts)} FROM ({left.sql}) AS l {how} JOIN ({right.sql}) AS r ON {on}"
        return _Rel(sql, cols)

    def _union(self, node: Union) -> _Rel:
        rels = [self.rel(i) for i in node.inputs]
        names = list(rels[0].columns)
        for r in rels[1:]:
            if set(r.columns) != set(names):
                raise InvalidPlan("union needs the same column names on every input")
        types: dict[str, str] = {}
        for name in names:
            t = rels[0].columns[name][1]
            for r in rels[1:]:
                _, _, t = unify(Arg("NULL", t), Arg("NULL", r.columns[name][1]), f"union: column {name!r}")
            types[name] = t
        cols = {name: (self._ident(), types[name]) for name in names}
        selects = []
        for r in rels:
            parts = []
            for name in names:
                ident, t = r.columns[name]
                value = ident if t == types[name] else f"CAST({ident} AS {sql_type(types[name])})"
                parts.append(f"{value} AS {cols[name][0]}")
            selects.append(f"SELECT {', '.join(parts) or 'NULL AS c0'} FROM ({r.sql}) AS s")
        return _Rel(" UNION ALL ".join(f"({s})" for s in selects), cols)

    # ------------------------------------------------------------------ expressions

    def expr(self, expr: Expr, rel: _Rel) -> Arg:
        if isinstance(expr, Col):
            if expr.name not in rel.columns:
                raise InvalidPlan(f"unknown column {expr.name!r}")
            ident, t = rel.columns[expr.name]
            return Arg(ident, t)
        if isinstance(expr, Lit):
            return _literal(expr.value, self._params)
        assert isinstance(expr, Call)
        lookup(expr.fn)  # InvalidPlan for a name outside the registry
        args = [self.expr(a, rel) for a in expr.args]
        sql, t = LOWERINGS[expr.fn](args, self._params)
        return Arg(f"({sql})", t)


def _worth_keeping(node: Node) -> bool:
    """A shared subtree is kept once in a table when it computes something (a join, an aggregate, a union);
    rows read straight from a dataset (scan, filter, derived columns) are rescanned by each parent instead: a
    scan of the mapped file costs less than copying every row into a table."""
    while isinstance(node, Filter | Project | Sort | Limit | Bound):
        node = node.input
    return not isinstance(node, Scan | Input)


def _calls(plans: list[Node]) -> set[str]:
    """The names of the functions the plans call."""
    names: set[str] = set()
    stack: list[Any] = []
    for root in plans:
        for node in walk(root):
            if isinstance(node, Filter):
                stack.append(node.predicate)
            elif isinstance(node, Project):
                stack.extend(e for _, e in node.columns)
            elif isinstance(node, Aggregate):
                stack.extend(a.arg for _, a in node.aggs)
    while stack:
        e = stack.pop()
        if isinstance(e, Call):
            names.add(e.fn)
            stack.extend(e.args)
    return names


def _literal(value: Any, params: Params) -> Arg:
    if value is None:
        return Arg("NULL", "null", True, None)
    if isinstance(value, bool):
        return Arg("true" if value else "false", "bool", True, value)
    if isinstance(value, int):
        return Arg(int_sql(value), "int64", True, value)
    if isinstance(value, float):
        return Arg(float_sql(value), "float64", True, value)
    return Arg(f"CAST({params.add(str(value))} AS VARCHAR)", "string", True, value)


def _order_terms(ident: str, t: str, descending: bool = False) -> list[str]:
    """ORDER BY terms with Arrow's placement: nulls last, NaN after every number (in either direction)."""
    direction = "DESC" if descending else "ASC"
    terms = [f"({ident} IS NULL) ASC"]
    if t == "float64":
        terms.append(f"isnan({ident}) ASC")
    terms.append(f"{ident} {direction}")
    return terms


def _arrow_column(column: pa.ChunkedArray, logical: str) -> pa.ChunkedArray:
    """A result column in the Arrow type the Arrow engine gives it."""
    if logical == "date32":
        return _view(column.cast(pa.int32()), pa.date32())
    if logical == "timestamp":
        return _view(column.cast(pa.int64()), TIMESTAMP)
    if logical == "null":
        return pa.chunked_array([pa.nulls(len(column))])
    target = _ARROW_TYPES.get(logical)
    if target is not None and column.type != target:
        return column.cast(target)
    return column
