"""Projection pushdown: every node reads only the columns something above it uses."""

from __future__ import annotations

from dataclasses import replace

from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Call,
    Col,
    Expr,
    Filter,
    Join,
    Limit,
    Lit,
    Node,
    Project,
    Scan,
    Sort,
    Threshold,
    Union,
)

__all__ = ["columns_of", "output_columns", "prune_columns"]


def columns_of(expr: Expr | AggExpr | None) -> set[str]:
    """The column names an expression reads."""
    out: set[str] = set()
    stack: list[Expr | AggExpr | None] = [expr]
    while stack:
        e = stack.pop()
        if isinstance(e, Col):
            out.add(e.name)
        elif isinstance(e, Call):
            stack.extend(e.args)
        elif isinstance(e, AggExpr):
            stack.append(e.arg)
        elif e is None or isinstance(e, Lit):
            continue
    return out


def output_columns(node: Node) -> list[str]:
    """The names of the columns ``node`` produces, in order."""
    if isinstance(node, Scan):
        return list(node.columns)
    if isinstance(node, Project):
        return [name for name, _ in node.columns]
    if isinstance(node, Aggregate):
        return [*node.keys, *(name for name, _ in node.aggs)]
    if isinstance(node, Join):
        right = [c for c in output_columns(node.right) if c not in node.on]
        return [*output_columns(node.left), *right]
    if isinstance(node, Union):
        return output_columns(node.inputs[0])
    return output_columns(node.input)


def prune_columns(plan: Node) -> Node:
    """The same plan, with scans and projections narrowed to the columns the output needs."""
    return _prune(plan, None)


def _prune(node: Node, needed: set[str] | None) -> Node:
    if isinstance(node, Scan):
        if needed is None:
            return node
        return replace(node, columns=tuple(c for c in node.columns if c in needed))
    if isinstance(node, Filter):
        below = None if needed is None else needed | columns_of(node.predicate)
        return replace(node, input=_prune(node.input, below))
    if isinstance(node, Project):
        kept = node.columns if needed is None else tuple((n, e) for n, e in node.columns if n in needed)
        below: set[str] = set()
        for _, expr in kept:
            below |= columns_of(expr)
        return replace(node, input=_prune(node.input, below), columns=kept)
    if isinstance(node, Aggregate):
        below = set(node.keys)
        for _, agg in node.aggs:
            below |= columns_of(agg)
        return replace(node, input=_prune(node.input, below))
    if isinstance(node, Join):
        left_cols, right_cols = set(output_columns(node.left)), set(output_columns(node.right))
        want = (left_cols | right_cols) if needed is None else needed
        return replace(
            node,
            left=_prune(node.left, (want & left_cols) | set(node.on)),
            right=_prune(node.right, (want & right_cols) | set(node.on)),
        )
    if isinstance(node, Sort):
        below = None if needed is None else needed | {k for k, _ in node.keys}
        return replace(node, input=_prune(node.input, below))
    if isinstance(node, Limit):
        return replace(node, input=_prune(node.input, needed))
    if isinstance(node, Threshold):
        below = None if needed is None else needed | {node.column}
        return replace(node, input=_prune(node.input, below))
    # Union matches columns by name: every input must keep the same set.
    names = set(output_columns(node.inputs[0])) if needed is None else needed
    return replace(node, inputs=tuple(_prune(i, names) for i in node.inputs))
