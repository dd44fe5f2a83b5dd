"""Opaque tables: lazy plans over datasets. Every method returns a new table; no method returns data."""

from __future__ import annotations

from typing import NoReturn

from saferoom.api.expressions import AggregateExpr, Expr, as_expr, check_name
from saferoom.catalog.manifest import Manifest
from saferoom.engine import plan
from saferoom.engine.schema import Schema, node_schema
from saferoom.errors import InvalidPlan, LimitExceeded, UserCodeError

MAX_MODEL_TERMS = 10

__all__ = ["Grouped", "Table"]

MAX_HEAD = 10_000_000
MAX_UNION = 100
MAX_COLUMNS = 1000
_JOIN_KINDS = ("inner", "left", "right", "full")


class Table:
    """A lazy table: build with filter/select/with_columns/group_by/join/sort/head/union, return it to release."""

    __slots__ = ("_manifest", "_node", "_schema", "_size")

    def __init__(self, node: plan.Node, schema: Schema, size: int, manifest: Manifest) -> None:
        self._node = node
        self._schema = schema
        self._size = size
        self._manifest = manifest

    def _derive(self, node: plan.Node, inputs: list[Table], extra: int = 0) -> Table:
        size = 1 + extra + sum(t._size for t in inputs)
        if size > plan.MAX_NODES:
            raise LimitExceeded(f"the plan has more than {plan.MAX_NODES} parts")
        try:
            schema = node_schema(node, [t._schema for t in inputs], self._manifest)
        except InvalidPlan as exc:
            raise UserCodeError(exc.message) from None
        if len(schema) > MAX_COLUMNS:
            raise LimitExceeded(f"a table has at most {MAX_COLUMNS} columns")
        return Table(node, schema, size, self._manifest)

    @property
    def columns(self) -> list[str]:
        """The column names (a new list each time)."""
        return list(self._schema)

    @property
    def schema(self) -> dict[str, str]:
        """Column name -> type ("int64", "float64", "string", "bool", "date32", "timestamp")."""
        return dict(self._schema)

    def filter(self, condition: object) -> Table:
        """Rows where ``condition`` is true."""
        expr = _expr(condition, "the condition of filter")
        return self._derive(plan.Filter(self._node, expr._node), [self], expr._size)

    def select(self, *columns: object, **named: object) -> Table:
        """Only these columns (names or col(...)), plus named expressions."""
        pairs: list[tuple[str, plan.Expr]] = []
        size = 0
        for c in columns:
            if type(c) is str:
                pairs.append((check_name(c), plan.Col(c)))
            elif type(c) is Expr and isinstance(c._node, plan.Col):
                pairs.append((c._node.name, c._node))
            else:
                raise UserCodeError("select takes column names; name computed columns: select(x=expression)")
        for name, value in named.items():
            expr = as_expr(value, f"column {name!r}")
            pairs.append((check_name(name), expr._node))
            size += expr._size
        _unique([n for n, _ in pairs])
        return self._derive(plan.Project(self._node, tuple(pairs)), [self], size)

    def with_columns(self, **named: object) -> Table:
        """All columns, plus (or replacing) the named expressions."""
        new: dict[str, plan.Expr] = {}
        size = 0
        for name, value in named.items():
            expr = as_expr(value, f"column {name!r}")
            new[check_name(name)] = expr._node
            size += expr._size
        pairs = [(n, new.pop(n) if n in new else plan.Col(n)) for n in self._schema]
        pairs += list(new.items())
        return self._derive(plan.Project(self._node, tuple(pairs)), [self], size)

    def rename(self, **names: object) -> Table:
        """Rename columns: ``rename(new="old")``."""
        mapping: dict[str, str] = {}
        for new, old in names.items():
            if type(old) is not str or old not in self._schema:
                raise UserCodeError(f"rename: {str(old)[:40]!r} is not a column")
            mapping[old] = check_name(new)
        pairs = [(mapping.get(n, n), plan.Col(n)) for n in self._schema]
        _unique([n for n, _ in pairs])
        return self._derive(plan.Project(self._node, tuple(pairs)), [self])

    def group_by(self, *keys: object) -> Grouped:
        """Group by key columns; finish with ``.agg(name=aggregate, ...)``."""
        if not keys:
            raise UserCodeError("group_by needs at least one column; use agg(...) for totals")
        names = tuple(check_name(k, "group key") for k in keys)
        _unique(list(names))
        for k in names:
            if k not in self._schema:
                raise UserCodeError(f"unknown group key {k!r}")
        return Grouped(self, names)

    def agg(self, **aggregates: object) -> Table:
        """One row of totals over the whole table."""
        return _aggregate(self, (), aggregates)

    def join(self, other: object, on: object, how: object = "inner") -> Table:
        """Join with another table on same-named key column(s); how: inner, left, right or full."""
        if type(other) is not Table:
            raise UserCodeError("join needs another table")
        keys: tuple[object, ...] | None = (on,) if type(on) is str else tuple(on) if type(on) in (list, tuple) else None  # type: ignore[arg-type]
        if not keys:
            raise UserCodeError("join: on must be a column name or a list of them")
        names = tuple(check_name(k, "join key") for k in keys)
        if how not in _JOIN_KINDS or type(how) is not str:
            raise UserCodeError(f"join: how must be one of {', '.join(_JOIN_KINDS)}")
        return self._derive(plan.Join(self._node, other._node, names, how), [self, other])

    def sort(self, by: object, descending: object = False) -> Table:
        """Sort by column(s); nulls last."""
        keys = [by] if type(by) is str else list(by) if type(by) in (list, tuple) else None  # type: ignore[call-overload]
        if not keys or len(keys) > 100:
            raise UserCodeError("sort: by must be a column name or a list of up to 100")
        if type(descending) is bool:
            flags = [descending] * len(keys)
        elif type(descending) in (list, tuple) and len(descending) == len(keys):  # type: ignore[arg-type]
            flags = list(descending)  # type: ignore[call-overload]
            if not all(type(f) is bool for f in flags):
                raise UserCodeError("sort: descending must be true/false values")
        else:
            raise UserCodeError("sort: descending must be a bool or one bool per key")
        pairs = tuple((check_name(k, "sort key"), d) for k, d in zip(keys, flags, strict=True))
        return self._derive(plan.Sort(self._node, pairs), [self])

    def head(self, n: object = 10) -> Table:
        """The first ``n`` rows."""
        if type(n) is not int or not 0 <= n <= MAX_HEAD:
            raise UserCodeError(f"head: n must be an integer between 0 and {MAX_HEAD}")
        return self._derive(plan.Limit(self._node, n), [self])

    def ols(self, y: object, x: object) -> Model:
        """An ordinary least squares fit of column ``y`` on the columns ``x`` (with an intercept).

        Only the coefficients and their standard errors can leave (never residuals or fitted values), and
        only with enough residual degrees of freedom; rows with a missing value in any of them are left out.
        """
        return self._model("ols", y, x)

    def logit(self, y: object, x: object) -> Model:
        """A logistic regression of the 0/1 column ``y`` on the columns ``x`` (with an intercept); released
        like ``ols``: coefficients and standard errors only."""
        return self._model("logit", y, x)

    def _model(self, kind: str, y: object, x: object) -> Model:
        if type(y) is not str or not isinstance(x, list | tuple) or not 1 <= len(x) <= MAX_MODEL_TERMS:
            raise UserCodeError(f"{kind}(y, x): y is a column name, x a list of 1 to {MAX_MODEL_TERMS} column names")
        names = [check_name(y, f"{kind} response")] + [check_name(c, f"{kind} predictor") for c in x]
        if len(set(names)) != len(names):
            raise UserCodeError(f"{kind}: the response and the predictors must be different columns")
        for name in names:
            column_type = self._schema.get(name)
            if column_type not in ("int64", "float64"):
                raise UserCodeError(
                    f"{kind}: column {name!r} must be a number column, got {column_type or 'no such column'}"
                )
        return Model(kind, self._node, names[0], tuple(names[1:]))

    def union(self, *others: object) -> Table:
        """Rows of this table and the others (same column names)."""
        if not others or len(others) >= MAX_UNION:
            raise UserCodeError(f"union takes 1 to {MAX_UNION - 1} other tables")
        tables = [self]
        for other in others:
            if type(other) is not Table:
                raise UserCodeError("union takes tables")
            tables.append(other)
        return self._derive(plan.Union(tuple(t._node for t in tables)), tables)

    def __bool__(self) -> NoReturn:
        raise UserCodeError("a table has no truth value: its rows are never available to algorithm code")

    def __iter__(self) -> NoReturn:
        raise UserCodeError("a table cannot be iterated: its rows are never available to algorithm code")

    def __len__(self) -> NoReturn:
        raise UserCodeError("a table's length is not available to algorithm code; use agg(n=count())")

    def __repr__(self) -> str:
        return f"<table: {', '.join(self._schema)}>"


class Grouped:
    """A table grouped by keys, waiting for ``agg``."""

    __slots__ = ("_keys", "_table")

    def __init__(self, table: Table, keys: tuple[str, ...]) -> None:
        self._table = table
        self._keys = keys

    def agg(self, **aggregates: object) -> Table:
        """One row per group: the keys and the named aggregates."""
        return _aggregate(self._table, self._keys, aggregates)

    def __repr__(self) -> str:
        return f"<grouped by {', '.join(self._keys)}>"


def _expr(value: object, what: str) -> Expr:
    if type(value) is not Expr:
        raise UserCodeError(f"{what} must be an expression like col('age') >= 18")
    return value


def _unique(names: list[str]) -> None:
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise UserCodeError(f"column {duplicate!r} appears twice")


def _aggregate(table: Table, keys: tuple[str, ...], aggregates: dict[str, object]) -> Table:
    if not aggregates:
        raise UserCodeError("agg needs at least one aggregate, e.g. agg(n=count())")
    pairs: list[tuple[str, plan.AggExpr]] = []
    size = 0
    for name, value in aggregates.items():
        if type(value) is not AggregateExpr:
            raise UserCodeError(f"agg: {name!r} must be an aggregate such as count() or mean('income')")
        pairs.append((check_name(name), value._agg))
        size += value._size
    _unique([*keys, *(n for n, _ in pairs)])
    return table._derive(plan.Aggregate(table._node, keys, tuple(pairs)), [table], size)


class Model:
    """A model to fit on the server (``Table.ols``, ``Table.logit``); return it like a table. Opaque."""

    __slots__ = ("_kind", "_node", "_x", "_y")

    def __init__(self, kind: str, node: plan.Node, y: str, x: tuple[str, ...]) -> None:
        self._kind = kind
        self._node = node
        self._y = y
        self._x = x

    def __repr__(self) -> str:
        return f"<{self._kind} model of {self._y} on {', '.join(self._x)}>"
