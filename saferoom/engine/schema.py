"""Static types of plans: the output columns of every node and the type of every expression.

Types are the catalog's logical types ("int64", "float64", "string", "bool", "date32") plus "null" for a null
literal. Checking them before anything runs gives errors that name the column and function, on the line of
algorithm code that built the plan, and lets the release step reason about plans it did not build.
"""

from __future__ import annotations

from collections.abc import Mapping

from saferoom.catalog.manifest import Manifest
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Bound,
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
    children,
)
from saferoom.errors import InvalidPlan

__all__ = ["Schema", "agg_type", "expr_type", "infer_schema", "node_schema"]

Schema = dict[str, str]
NUMERIC = frozenset({"int64", "float64"})
_FLOAT_UNARY = {"floor", "ceil", "sqrt", "log", "exp", "sin", "cos", "radians"}
_ORDERED = {"lt", "le", "gt", "ge"}
_LITERAL_ARGS = {"grid_cell": (2,), "cell_lat": (1,), "cell_lon": (1,), "histogram": (1, 2, 3), "round": (1,)}


def _kind(t: str) -> str:
    return "number" if t in NUMERIC else t


def _require_numeric(fn: str, types: list[str]) -> None:
    for t in types:
        if t not in NUMERIC and t != "null":
            raise InvalidPlan(f"{fn}: needs numbers, got {t}")


def _comparable(fn: str, a: str, b: str) -> None:
    if "null" in (a, b):
        return
    if _kind(a) != _kind(b):
        raise InvalidPlan(f"{fn}: cannot compare {a} with {b}")
    if fn in _ORDERED and a == "bool":
        raise InvalidPlan(f"{fn}: cannot order true/false values")


def _unify(fn: str, types: list[str]) -> str:
    concrete = {t for t in types if t != "null"}
    if not concrete:
        return "null"
    if concrete <= NUMERIC:
        return "float64" if "float64" in concrete else "int64"
    if len(concrete) > 1:
        raise InvalidPlan(f"{fn}: values of different types ({', '.join(sorted(concrete))})")
    return concrete.pop()


def expr_type(expr: Expr, schema: Mapping[str, str]) -> str:
    """The type of ``expr`` over rows of ``schema``; InvalidPlan if it is ill-typed."""
    if isinstance(expr, Col):
        if expr.name not in schema:
            known = ", ".join(sorted(schema)[:20])
            raise InvalidPlan(f"unknown column {expr.name!r} (columns: {known})")
        return schema[expr.name]
    if isinstance(expr, Lit):
        v = expr.value
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int):
            return "int64"
        if isinstance(v, float):
            return "float64"
        return "string"
    fn = expr.fn
    for position in _LITERAL_ARGS.get(fn, ()):
        if position < len(expr.args) and not isinstance(expr.args[position], Lit):
            raise InvalidPlan(f"{fn}: argument {position + 1} must be a literal value")
    if fn == "is_in" and not all(isinstance(a, Lit) for a in expr.args[1:]):
        raise InvalidPlan("is_in: the values must be literals")
    types = [expr_type(a, schema) for a in expr.args]
    if fn in ("add", "sub", "mul", "mod"):
        _require_numeric(fn, types)
        return "float64" if "float64" in types else "int64"
    if fn in ("div", "pow"):
        _require_numeric(fn, types)
        return "float64"
    if fn in ("neg", "abs"):
        _require_numeric(fn, types)
        return "int64" if types[0] == "int64" else "float64"
    if fn in _FLOAT_UNARY:
        _require_numeric(fn, types)
        return "float64"
    if fn == "round":
        _require_numeric(fn, types[:1])
        return "int64" if types[0] == "int64" else "float64"
    if fn in ("eq", "ne", "lt", "le", "gt", "ge"):
        _comparable(fn, types[0], types[1])
        return "bool"
    if fn in ("and", "or", "not"):
        for t in types:
            if t not in ("bool", "null"):
                raise InvalidPlan(f"{fn}: needs true/false values, got {t}")
        return "bool"
    if fn == "is_null":
        return "bool"
    if fn == "is_in":
        for t in types[1:]:
            _comparable(fn, types[0], t)
        return "bool"
    if fn == "clamp":
        _require_numeric(fn, types)
        return "int64" if types[0] == "int64" else "float64"
    if fn == "between":
        _comparable(fn, types[0], types[1])
        _comparable(fn, types[0], types[2])
        return "bool"
    if fn == "case":
        conditions, values = types[:-1][0::2], [*types[:-1][1::2], types[-1]]
        for t in conditions:
            if t not in ("bool", "null"):
                raise InvalidPlan(f"when: the condition must be true/false, got {t}")
        return _unify("when/otherwise", values)
    if fn == "cast_int":
        return "int64"
    if fn == "cast_float":
        return "float64"
    if fn == "cast_str":
        return "string"
    if fn in ("grid_cell", "distance_m", "histogram"):
        _require_numeric(fn, types)
        return "int64" if fn == "grid_cell" else "float64"
    if fn in ("cell_lat", "cell_lon"):
        if types[0] not in ("int64", "null"):
            raise InvalidPlan(f"{fn}: a grid cell is an integer, got {types[0]}")
        _require_numeric(fn, types[1:])
        return "float64"
    raise InvalidPlan(f"unknown function {fn!r}")


def agg_type(agg: AggExpr, schema: Mapping[str, str]) -> str:
    """The type of an aggregate's result."""
    if agg.arg is None:
        return "int64"
    t = expr_type(agg.arg, schema)
    if agg.fn in ("count", "count_distinct"):
        return "int64"
    if agg.fn in ("min", "max"):
        return t
    if t not in NUMERIC and t != "null":
        raise InvalidPlan(f"{agg.fn}: needs numbers, got {t}")
    return "int64" if agg.fn == "sum" and t == "int64" else "float64"


def node_schema(node: Node, inputs: list[Schema], manifest: Manifest) -> Schema:
    """The output schema of ``node`` given the schemas of its inputs."""
    if isinstance(node, Scan):
        info = manifest.dataset(node.dataset)
        types = {c.name: c.type for c in info.columns}
        out: Schema = {}
        for name in node.columns:
            if name not in types:
                raise InvalidPlan(f"dataset {node.dataset!r} has no column {name!r}")
            out[name] = types[name]
        return out
    if isinstance(node, Filter):
        if expr_type(node.predicate, inputs[0]) not in ("bool", "null"):
            raise InvalidPlan("filter needs a true/false condition")
        return dict(inputs[0])
    if isinstance(node, Project):
        return {name: expr_type(e, inputs[0]) for name, e in node.columns}
    if isinstance(node, Aggregate):
        out = {}
        for key in node.keys:
            if key not in inputs[0]:
                raise InvalidPlan(f"unknown group key {key!r}")
            out[key] = inputs[0][key]
        for name, agg in node.aggs:
            if name in out:
                raise InvalidPlan(f"aggregate {name!r} has the name of a group key")
            out[name] = agg_type(agg, inputs[0])
        return out
    if isinstance(node, Join):
        left, right = inputs
        for key in node.on:
            if key not in left or key not in right:
                raise InvalidPlan(f"join key {key!r} must exist on both sides")
            if _kind(left[key]) != _kind(right[key]) and "null" not in (left[key], right[key]):
                raise InvalidPlan(f"join key {key!r} is {left[key]} on the left and {right[key]} on the right")
        clash = (set(left) & set(right)) - set(node.on)
        if clash:
            raise InvalidPlan(f"column {sorted(clash)[0]!r} exists on both sides of the join; rename it first")
        return {**left, **{k: v for k, v in right.items() if k not in node.on}}
    if isinstance(node, Sort):
        for key, _ in node.keys:
            if key not in inputs[0]:
                raise InvalidPlan(f"cannot sort by unknown column {key!r}")
        return dict(inputs[0])
    if isinstance(node, Limit):
        return dict(inputs[0])
    if isinstance(node, Input):
        return dict(node.columns)
    if isinstance(node, Bound):
        if node.column not in inputs[0]:
            raise InvalidPlan(f"bound on unknown column {node.column!r}")
        return dict(inputs[0])
    if isinstance(node, Threshold):
        if inputs[0].get(node.column) != "int64":
            raise InvalidPlan(f"threshold column {node.column!r} must be an integer column")
        return dict(inputs[0])
    first = inputs[0]
    out = dict(first)
    for other in inputs[1:]:
        if set(other) != set(first):
            raise InvalidPlan("union needs the same column names on every input")
        for name in first:
            out[name] = _unify(f"union column {name!r}", [out[name], other[name]])
    return out


def infer_schema(node: Node, manifest: Manifest) -> Schema:
    """The output schema of a whole plan (iterative: plans may be deep)."""
    done: dict[int, Schema] = {}
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        if id(current) in done:
            continue
        kids = children(current)
        if expanded:
            done[id(current)] = node_schema(current, [done[id(k)] for k in kids], manifest)
        else:
            stack.append((current, True))
            stack.extend((k, False) for k in kids)
    return done[id(node)]
