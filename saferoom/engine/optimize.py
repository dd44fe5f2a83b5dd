"""Projection pushdown: every node reads only the columns something above it uses.

Plans may share subtrees (``plan.share_subtrees``); a shared node keeps the union of what its parents need, so
it is still one object, executed once.
"""

from __future__ import annotations

from dataclasses import replace

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
    Node,
    Project,
    Scan,
    Sort,
    Threshold,
    Union,
    children,
    walk,
    with_children,
)

__all__ = ["columns_of", "output_columns", "prune_columns", "shared_nodes"]

Need = frozenset[str] | None  # None: every column


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
    return out


def output_columns(node: Node, memo: dict[int, list[str]] | None = None) -> list[str]:
    """The names of the columns ``node`` produces, in order."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Scan):
        out = list(node.columns)
    elif isinstance(node, Input | Project):
        out = [name for name, _ in node.columns]
    elif isinstance(node, Aggregate):
        out = [*node.keys, *(name for name, _ in node.aggs)]
    elif isinstance(node, Join):
        right = [c for c in output_columns(node.right, memo) if c not in node.on]
        out = [*output_columns(node.left, memo), *right]
    elif isinstance(node, Union):
        out = output_columns(node.inputs[0], memo)
    else:
        out = output_columns(node.input, memo)
    memo[id(node)] = out
    return out


def _merge(a: Need, b: Need) -> Need:
    return None if a is None or b is None else a | b


def _child_needs(node: Node, need: Need, memo: dict[int, list[str]]) -> list[Need]:
    if isinstance(node, Scan | Input):
        return []
    if isinstance(node, Filter):
        return [None if need is None else need | columns_of(node.predicate)]
    if isinstance(node, Project):
        below: set[str] = set()
        for name, expr in node.columns:
            if need is None or name in need:
                below |= columns_of(expr)
        return [frozenset(below)]
    if isinstance(node, Aggregate):
        below = set(node.keys)
        for _, agg in node.aggs:
            below |= columns_of(agg)
        return [frozenset(below)]
    if isinstance(node, Join):
        left, right = set(output_columns(node.left, memo)), set(output_columns(node.right, memo))
        want = left | right if need is None else need
        return [frozenset((want & left) | set(node.on)), frozenset((want & right) | set(node.on))]
    if isinstance(node, Sort):
        return [None if need is None else need | {k for k, _ in node.keys}]
    if isinstance(node, Limit):
        return [need]
    if isinstance(node, Threshold | Bound):
        return [None if need is None else need | {node.column}]
    names = frozenset(output_columns(node.inputs[0], memo)) if need is None else need
    return [names for _ in node.inputs]


def column_needs(*roots: Node) -> dict[int, Need]:
    """The columns each node of ``roots`` must produce for all its parents (by node id; None: all of them)."""
    return _needs(_post_order(roots), roots)


def _post_order(roots: tuple[Node, ...]) -> list[Node]:
    order: list[Node] = []  # post-order, unique by identity
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
    return order


def _needs(order: list[Node], roots: tuple[Node, ...]) -> dict[int, Need]:
    memo: dict[int, list[str]] = {}
    need: dict[int, Need] = {id(r): None for r in roots}  # a root (even one that is also a child): every column
    for node in reversed(order):  # parents before children
        for kid, kid_need in zip(
            children(node), _child_needs(node, need.get(id(node), frozenset()), memo), strict=True
        ):
            need[id(kid)] = _merge(need[id(kid)], kid_need) if id(kid) in need else kid_need
    return need


def prune_columns(*roots: Node) -> list[Node]:
    """The same plans with scans and projections narrowed to the columns their outputs need."""
    order = _post_order(roots)
    need = _needs(order, roots)
    rebuilt: dict[int, Node] = {}
    for node in order:
        n = need.get(id(node))
        new = with_children(node, tuple(rebuilt[id(k)] for k in children(node)))
        if isinstance(new, Scan) and n is not None:
            new = replace(new, columns=tuple(c for c in new.columns if c in n))
        elif isinstance(new, Project) and n is not None:
            new = replace(new, columns=tuple((c, e) for c, e in new.columns if c in n))
        rebuilt[id(node)] = new
    return [rebuilt[id(r)] for r in roots]


def shared_nodes(roots: list[Node]) -> set[int]:
    """The ids of nodes with more than one parent among ``roots``: an engine computes each of them once.

    Being a root counts as a parent: a subset check's count is an output itself and read again by the size of
    its selection (a ``Project`` above it), and was computed twice when only the ``Project`` counted.
    """
    parents: dict[int, int] = {}
    for root in roots:
        parents[id(root)] = parents.get(id(root), 0) + 1
        for node in walk(root):
            for kid in children(node):
                parents[id(kid)] = parents.get(id(kid), 0) + 1
    return {i for i, n in parents.items() if n > 1}
