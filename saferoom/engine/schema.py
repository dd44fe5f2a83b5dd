"""Static types of plans: the output columns of every node and the type of every expression.

Types are the catalog's logical types ("int64", "float64", "string", "bool", "date32", "timestamp") plus "null"
for a null literal. Checking them before anything runs gives errors that name the column and function, on the
line of algorithm code that built the plan, and lets the release step reason about plans it did not build.
"""

from __future__ import annotations

from collections.abc import Mapping

from saferoom.catalog.manifest import Manifest
from saferoom.engine.functions import literal_domain, lookup, unify
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


def _kind(t: str) -> str:
    return "number" if t in NUMERIC else t


def expr_type(expr: Expr, schema: Mapping[str, str]) -> str:
    """The type of ``expr`` over rows of ``schema``; InvalidPlan if it is ill-typed (the registry's type rules)."""
    if isinstance(expr, Col):
        if expr.name not in schema:
            known = ", ".join(sorted(schema)[:20])
            raise InvalidPlan(f"unknown column {expr.name!r} (columns: {known})")
        return schema[expr.name]
    if isinstance(expr, Lit):
        return literal_domain(expr.value).type
    entry = lookup(expr.fn)
    return entry.result_type([expr_type(a, schema) for a in expr.args], expr.args)


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
            out[name] = unify(f"union column {name!r}", [out[name], other[name]])
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
