"""What algorithm code sees: the ``ctx`` object, the global names, and how its return value is read."""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence
from typing import Any

from saferoom.api.expressions import AggregateExpr, Expr, When, as_expr, check_name, literal, make_aggregate
from saferoom.api.table import Grouped, Model, Table
from saferoom.catalog.manifest import Manifest
from saferoom.engine import plan
from saferoom.engine.expressions import date_of, date_unit_of, timestamp_of
from saferoom.engine.functions import api_functions
from saferoom.errors import InvalidPlan, UserCodeError

__all__ = ["Context", "export_outputs", "namespace", "public_attributes"]

MAX_OUTPUTS = 64
MAX_VALUE_STRING = 65_536


class Context:
    """``ctx``: the datasets this package declared, as opaque tables."""

    __slots__ = ("_datasets", "_manifest")

    def __init__(self, manifest: Manifest, datasets: Sequence[str]) -> None:
        self._manifest = manifest
        self._datasets = tuple(datasets)

    @property
    def datasets(self) -> list[str]:
        """The datasets this package may read."""
        return list(self._datasets)

    def table(self, name: object) -> Table:
        """A dataset as an opaque table."""
        if type(name) is not str or name not in self._datasets:
            shown = str(name)[:64] if type(name) is str else type(name).__name__
            raise UserCodeError(
                f"dataset {shown!r} is not declared by this package (declared: {', '.join(self._datasets)})"
            )
        info = self._manifest.dataset(name)
        schema = {c.name: c.type for c in info.columns}
        return Table(plan.Scan(name, tuple(schema)), schema, 1, self._manifest)

    def describe(self, name: object) -> dict[str, dict[str, Any]]:
        """A declared dataset's public schema: column -> type, unit, bounds, categories."""
        self.table(name)
        info = self._manifest.dataset(name)  # type: ignore[arg-type]
        return {
            c.name: {
                "type": c.type,
                "unit": c.unit,
                "min": c.min,
                "max": c.max,
                "categories": list(c.categories) if c.categories else None,
                "description": c.description,
            }
            for c in info.columns
        }

    def __repr__(self) -> str:
        return f"<ctx: {', '.join(self._datasets)}>"


def col(name: object) -> Expr:
    """A column by name."""
    return Expr(plan.Col(check_name(name)), 1)


def lit(value: object) -> Expr:
    """A literal value."""
    return Expr(literal(value), 1)


def when(condition: object, value: object) -> When:
    """Start a conditional: ``when(c, v).when(c2, v2).otherwise(v3)``."""
    return When(()).when(condition, value)


def count(value: object = None) -> AggregateExpr:
    """Rows (no argument) or non-null values of a column."""
    return make_aggregate("count", value)


def count_distinct(value: object) -> AggregateExpr:
    return make_aggregate("count_distinct", value)


def mean(value: object) -> AggregateExpr:
    return make_aggregate("mean", value)


def median(value: object) -> AggregateExpr:
    return make_aggregate("median", value)


def std(value: object) -> AggregateExpr:
    return make_aggregate("std", value)


def quantile(value: object, q: object) -> AggregateExpr:
    """The exact q-quantile (0 <= q <= 1, linear interpolation)."""
    if type(q) not in (int, float) or not 0 <= q <= 1:  # type: ignore[operator]
        raise UserCodeError("quantile: q must be a number between 0 and 1")
    return make_aggregate("quantile", value, float(q))  # type: ignore[arg-type]


def _is_column_like(args: tuple[object, ...]) -> bool:
    return len(args) == 1 and type(args[0]) in (Expr, str)


def _dual(fn: str, builtin: Callable[..., Any]) -> Callable[..., Any]:
    """An aggregate when given one expression or column name; the Python builtin otherwise."""

    def dual(*args: object, **kwargs: object) -> Any:
        if _is_column_like(args) and not kwargs:
            return make_aggregate(fn, args[0])
        for a in args:
            if type(a) in (Expr, AggregateExpr, Table, When, Grouped):
                raise UserCodeError(f"{fn}: give one column or expression to aggregate")
        if args and type(args[0]) not in (list, tuple, int, float, range):
            raise UserCodeError(f"{fn}: expected a column, or numbers")
        return builtin(*args)

    dual.__name__ = fn
    return dual


def _function(fn: str, arity: int) -> Callable[..., Expr]:
    def function(*args: object) -> Expr:
        if len(args) != arity:
            raise UserCodeError(f"{fn} takes {arity} argument{'s' if arity > 1 else ''}")
        exprs = [as_expr(a, f"the argument of {fn}") for a in args]
        return Expr(plan.Call(fn, tuple(e._node for e in exprs)), 1 + sum(e._size for e in exprs))

    function.__name__ = fn
    return function


def _number(value: object, what: str) -> float | int:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise UserCodeError(f"{what} must be a number")
    return value  # type: ignore[return-value]


def grid_cell(lat: object, lon: object, meters: object = 500) -> Expr:
    """The id of the square grid cell (side ``meters``) containing each point."""
    m = _number(meters, "grid_cell: meters")
    if not 10 <= m <= 1_000_000:
        raise UserCodeError("grid_cell: meters must be between 10 and 1,000,000")
    return _function("grid_cell", 3)(lat, lon, m)


def cell_lat(cell: object, meters: object = 500) -> Expr:
    """Latitude of a grid cell's centre."""
    return _function("cell_lat", 2)(cell, _number(meters, "cell_lat: meters"))


def cell_lon(cell: object, meters: object = 500) -> Expr:
    """Longitude of a grid cell's centre."""
    return _function("cell_lon", 2)(cell, _number(meters, "cell_lon: meters"))


def distance_m(lat1: object, lon1: object, lat2: object, lon2: object) -> Expr:
    """Great-circle distance in metres."""
    return _function("distance_m", 4)(lat1, lon1, lat2, lon2)


def histogram(value: object, start: object, stop: object, bins: object) -> Expr:
    """The lower edge of the value's bin among ``bins`` equal bins over [start, stop) (outliers clamp)."""
    lo, hi = _number(start, "histogram: start"), _number(stop, "histogram: stop")
    if type(bins) is not int or not 1 <= bins <= 10_000 or lo >= hi:
        raise UserCodeError("histogram: needs start < stop and an integer number of bins between 1 and 10,000")
    return _function("histogram", 4)(value, lo, hi, bins)


def _literal_call(fn: str, check: Callable[[list[Any]], object], parts: tuple[object, ...]) -> Expr:
    try:
        check(list(parts))
    except InvalidPlan as exc:
        raise UserCodeError(exc.message) from None
    return Expr(plan.Call(fn, tuple(plan.Lit(p) for p in parts)), 1 + len(parts))  # type: ignore[arg-type]


def date(*parts: object) -> Expr:
    """A date: ``date("2024-01-31")`` or ``date(2024, 1, 31)``."""
    return _literal_call("date", date_of, parts)


def timestamp(*parts: object) -> Expr:
    """A timestamp: ``timestamp("2024-01-31 08:30:00")`` or ``timestamp(2024, 1, 31, 8, 30)`` (no time zone)."""
    return _literal_call("timestamp", timestamp_of, parts)


def date_trunc(value: object, unit: object) -> Expr:
    """The first day of the date's ``unit``: "year", "quarter", "month" or "week" (weeks start on Monday); a
    timestamp also truncates to its "day", "hour" or "minute" (whether the unit fits is checked with the type)."""
    try:
        date_unit_of(unit, timestamp=True)
    except InvalidPlan as exc:
        raise UserCodeError(exc.message) from None
    x = as_expr(value, "the argument of date_trunc")
    return Expr(plan.Call("date_trunc", (x._node, plan.Lit(str(unit)))), x._size + 2)


_NAMES: dict[str, object] = {
    "col": col,
    "lit": lit,
    "when": when,
    "count": count,
    "count_distinct": count_distinct,
    "sum": _dual("sum", builtins.sum),
    "mean": mean,
    "median": median,
    "quantile": quantile,
    "std": std,
    "min": _dual("min", builtins.min),
    "max": _dual("max", builtins.max),
}
# Functions with checks of their literal arguments here, for errors on the researcher's own line.
_CHECKED: dict[str, Callable[..., Expr]] = {
    "grid_cell": grid_cell,
    "cell_lat": cell_lat,
    "cell_lon": cell_lon,
    "distance_m": distance_m,
    "histogram": histogram,
    "date": date,
    "date_trunc": date_trunc,
    "timestamp": timestamp,
}
# Every function the registry gives a global name (``engine.functions``), and only those.
for _api, _entry in api_functions().items():
    _NAMES[_api] = _CHECKED.get(_api) or _function(_entry.name, _entry.arity[0])

_PUBLIC: dict[type, frozenset[str]] = {
    Context: frozenset({"datasets", "table", "describe"}),
    Table: frozenset(
        {
            "columns",
            "schema",
            "filter",
            "select",
            "with_columns",
            "rename",
            "group_by",
            "agg",
            "join",
            "sort",
            "head",
            "union",
            "ols",
            "logit",
        }
    ),
    Model: frozenset(),
    Grouped: frozenset({"agg"}),
    Expr: frozenset({"abs", "is_in", "between", "is_null", "round", "floor", "ceil", "cast", "clip"}),
    When: frozenset({"when", "otherwise"}),
    AggregateExpr: frozenset(),
}


def namespace() -> dict[str, object]:
    """The global names algorithm code gets (a new dict; the functions are stateless)."""
    return dict(_NAMES)


def public_attributes(obj: object) -> frozenset[str] | None:
    """The attributes algorithm code may read on an API object; None if ``obj`` is not one."""
    return _PUBLIC.get(type(obj))


def export_outputs(value: object) -> dict[str, dict[str, Any]]:
    """Read what ``run`` returned: a dict of named tables and plain values, as JSON-ready data."""
    if type(value) is not dict:
        raise UserCodeError(f"run() must return a dict of named results, got {type(value).__name__}")
    if not value:
        raise UserCodeError("run() returned no results")
    if len(value) > MAX_OUTPUTS:
        raise UserCodeError(f"run() may return at most {MAX_OUTPUTS} results")
    out: dict[str, dict[str, Any]] = {}
    for name, item in value.items():
        check_name(name, "result name")
        kind = type(item)
        if kind is Table:
            out[name] = {"plan": plan.to_data(item._node)}
        elif kind in (bool, int, float, str, type(None)):
            if kind is str and len(item) > MAX_VALUE_STRING:
                raise UserCodeError(f"result {name!r}: strings are at most {MAX_VALUE_STRING} characters")
            out[name] = {"value": literal(item).value}
        elif kind is Model:
            model = {"kind": item._kind, "input": plan.to_data(item._node), "y": item._y, "x": list(item._x)}
            out[name] = {"model": model}
        elif kind is Grouped:
            raise UserCodeError(f"result {name!r}: finish group_by(...) with .agg(...)")
        else:
            raise UserCodeError(f"result {name!r} must be a table or a number/string, got {kind.__name__}")
    return out
