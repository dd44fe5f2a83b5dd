"""The plan language: a small tree of relational nodes over a small expression language, as plain data.

Algorithm code builds plans (through ``saferoom.api``); the release step rewrites them (``saferoom.disclosure``);
an engine executes them (``saferoom.engine``). Every node and expression maps one-to-one onto a Spark DataFrame
operation, so the same plan can run on Arrow here and on Spark Connect later.

Nodes:
    Scan(dataset, columns)             read columns of a catalog dataset
    Filter(input, predicate)           keep rows where predicate is true (null counts as false)
    Project(input, columns)            the output is exactly ``columns``: (name, Expr) pairs, in order
    Aggregate(input, keys, aggs)       group by key columns (none: one global row); (name, AggExpr) pairs
    Join(left, right, on, how)         equi-join on same-named key columns, kept once; how: inner|left|right|full
    Sort(input, keys)                  (column, descending) pairs; nulls last; stable
    Limit(input, n)                    the first n rows
    Union(inputs)                      rows of all inputs (same column names and types; union by name)
    Threshold(input, column, minimum, label)
                                       drop rows whose ``column`` < minimum; the engine reports how many rows
                                       it dropped under ``label`` (used by the release step for suppression)
    Bound(input, column, n)            keep at most n rows per distinct value of ``column`` (the first n in
                                       input order) [row_number() over (partition by column) <= n]
    Input(label, columns)              a table supplied with the plan under ``label``, with the (name, type)
                                       columns given (differentially private aggregates, after their noise)

Expressions:
    Col(name), Lit(value), Call(fn, args)   with ``fn`` a function of the registry (``engine.functions``)
    AggExpr(fn, arg, options)               with ``fn`` one of AGGREGATES; ``arg`` None only for count

Threshold, Bound and Input are written by the release step only; algorithm plans that contain them are refused.

Column names that start with ``_`` are reserved for the release step (hidden privacy-unit and contributor
columns); ``saferoom.api`` refuses them from algorithm code, the engine accepts them.

Plans cross process boundaries as JSON (``to_json`` / ``from_json``). ``from_json`` treats its input as hostile:
unknown tags, wrong types, excessive depth or size raise ``InvalidPlan`` and nothing else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from typing import Any, TypeAlias

from saferoom.errors import InvalidPlan

__all__ = [
    "AGGREGATES",
    "JOIN_KINDS",
    "MAX_DEPTH",
    "MAX_NODES",
    "RELEASE_ONLY",
    "AggExpr",
    "Aggregate",
    "Bound",
    "Call",
    "Col",
    "Expr",
    "Filter",
    "Input",
    "Join",
    "Limit",
    "Lit",
    "Node",
    "Project",
    "Scalar",
    "Scan",
    "Sort",
    "Threshold",
    "Union",
    "children",
    "exact_key",
    "from_data",
    "from_json",
    "share_subtrees",
    "to_data",
    "to_json",
    "walk",
    "with_children",
]

Scalar: TypeAlias = bool | int | float | str | None

# Aggregates; options in brackets. Nulls are ignored by all but count.
#   count            rows (arg None) or non-null values of arg
#   count_distinct   distinct non-null values
#   sum mean std     std is the sample standard deviation (ddof=1)
#   median           exact median, linear interpolation between the two middle values
#   quantile [q]     exact quantile q in [0, 1], linear interpolation
#   min max
AGGREGATES: frozenset[str] = frozenset(
    {"count", "count_distinct", "sum", "mean", "std", "median", "quantile", "min", "max"}
)

JOIN_KINDS: frozenset[str] = frozenset({"inner", "left", "right", "full"})

MAX_DEPTH = 200  # nesting of nodes and expressions
MAX_NODES = 20_000  # nodes + expressions in one plan
MAX_JSON_BYTES = 4 * 1024 * 1024


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Col:
    """A column of the node's input, by name."""

    name: str


@dataclass(frozen=True, slots=True)
class Lit:
    """A literal value."""

    value: Scalar


@dataclass(frozen=True, slots=True)
class Call:
    """A function of the registry (``engine.functions``) applied to argument expressions."""

    fn: str
    args: tuple[Expr, ...]


Expr: TypeAlias = Col | Lit | Call


@dataclass(frozen=True, slots=True)
class AggExpr:
    """An aggregate from ``AGGREGATES`` over an expression (None: count rows)."""

    fn: str
    arg: Expr | None = None
    q: float | None = None  # quantile only


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class Scan:
    dataset: str
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Filter:
    input: Node
    predicate: Expr


@dataclass(frozen=True, slots=True)
class Project:
    input: Node
    columns: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, slots=True)
class Aggregate:
    input: Node
    keys: tuple[str, ...]
    aggs: tuple[tuple[str, AggExpr], ...]


@dataclass(frozen=True, slots=True)
class Join:
    left: Node
    right: Node
    on: tuple[str, ...]
    how: str = "inner"


@dataclass(frozen=True, slots=True)
class Sort:
    input: Node
    keys: tuple[tuple[str, bool], ...]  # (column, descending)


@dataclass(frozen=True, slots=True)
class Limit:
    input: Node
    n: int


@dataclass(frozen=True, slots=True)
class Union:
    inputs: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Threshold:
    input: Node
    column: str
    minimum: int
    label: str


@dataclass(frozen=True, slots=True)
class Bound:
    input: Node
    column: str
    n: int


@dataclass(frozen=True, slots=True)
class Input:
    label: str
    columns: tuple[tuple[str, str], ...]  # (name, logical type)


Node: TypeAlias = Scan | Filter | Project | Aggregate | Join | Sort | Limit | Union | Threshold | Bound | Input
RELEASE_ONLY = (Threshold, Bound, Input)  # nodes only the release step may write


def children(node: Node) -> tuple[Node, ...]:
    """The input nodes of ``node``."""
    if isinstance(node, Scan | Input):
        return ()
    if isinstance(node, Join):
        return (node.left, node.right)
    if isinstance(node, Union):
        return node.inputs
    return (node.input,)


def walk(node: Node) -> list[Node]:
    """All nodes of the tree, parents before children (iterative: plans may be deep)."""
    out: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(children(current)))
    return out


# --------------------------------------------------------------------------- JSON codec


def _expr_to_data(expr: Expr) -> Any:
    if isinstance(expr, Col):
        return {"col": expr.name}
    if isinstance(expr, Lit):
        return {"lit": expr.value}
    return {"fn": expr.fn, "args": [_expr_to_data(a) for a in expr.args]}


def _agg_to_data(agg: AggExpr) -> Any:
    data: dict[str, Any] = {"agg": agg.fn, "arg": None if agg.arg is None else _expr_to_data(agg.arg)}
    if agg.q is not None:
        data["q"] = agg.q
    return data


def _node_to_data(node: Node) -> Any:
    if isinstance(node, Scan):
        return {"node": "scan", "dataset": node.dataset, "columns": list(node.columns)}
    if isinstance(node, Filter):
        return {"node": "filter", "input": _node_to_data(node.input), "predicate": _expr_to_data(node.predicate)}
    if isinstance(node, Project):
        return {
            "node": "project",
            "input": _node_to_data(node.input),
            "columns": [[name, _expr_to_data(e)] for name, e in node.columns],
        }
    if isinstance(node, Aggregate):
        return {
            "node": "aggregate",
            "input": _node_to_data(node.input),
            "keys": list(node.keys),
            "aggs": [[name, _agg_to_data(a)] for name, a in node.aggs],
        }
    if isinstance(node, Join):
        return {
            "node": "join",
            "left": _node_to_data(node.left),
            "right": _node_to_data(node.right),
            "on": list(node.on),
            "how": node.how,
        }
    if isinstance(node, Sort):
        return {"node": "sort", "input": _node_to_data(node.input), "keys": [[k, d] for k, d in node.keys]}
    if isinstance(node, Limit):
        return {"node": "limit", "input": _node_to_data(node.input), "n": node.n}
    if isinstance(node, Union):
        return {"node": "union", "inputs": [_node_to_data(i) for i in node.inputs]}
    if isinstance(node, Bound):
        return {"node": "bound", "input": _node_to_data(node.input), "column": node.column, "n": node.n}
    if isinstance(node, Input):
        return {"node": "input", "label": node.label, "columns": [[c, t] for c, t in node.columns]}
    return {
        "node": "threshold",
        "input": _node_to_data(node.input),
        "column": node.column,
        "minimum": node.minimum,
        "label": node.label,
    }


def to_data(node: Node) -> Any:
    """The plan as JSON-compatible data."""
    return _node_to_data(node)


def to_json(node: Node) -> str:
    """The plan as a compact JSON string."""
    return json.dumps(to_data(node), separators=(",", ":"), allow_nan=False)


class _Decoder:
    """Strict decoder: every field checked, depth and size bounded."""

    def __init__(self) -> None:
        self.count = 0

    def _tick(self, depth: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise InvalidPlan(f"plan has more than {MAX_NODES} nodes and expressions")
        if depth > MAX_DEPTH:
            raise InvalidPlan(f"plan is nested deeper than {MAX_DEPTH} levels")

    @staticmethod
    def _obj(data: Any, keys: set[str], what: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidPlan(f"{what}: expected an object")
        extra = set(data) - keys
        missing = keys - set(data)
        if extra or missing:
            raise InvalidPlan(f"{what}: unexpected fields {sorted(extra)} or missing {sorted(missing)}")
        return data

    @staticmethod
    def _name(value: Any, what: str) -> str:
        if not isinstance(value, str) or not value or len(value) > 256:
            raise InvalidPlan(f"{what}: expected a column or dataset name")
        return value

    def _names(self, value: Any, what: str) -> tuple[str, ...]:
        if not isinstance(value, list) or len(value) > 10_000:
            raise InvalidPlan(f"{what}: expected a list of names")
        return tuple(self._name(v, what) for v in value)

    @staticmethod
    def _scalar(value: Any) -> Scalar:
        if value is None or isinstance(value, bool | str):
            if isinstance(value, str) and len(value) > 65_536:
                raise InvalidPlan("literal string too long")
            return value
        if isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise InvalidPlan("integer literal outside 64-bit range")
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidPlan("non-finite float literal")
            return value
        raise InvalidPlan("literal must be null, bool, int, float or str")

    def expr(self, data: Any, depth: int) -> Expr:
        self._tick(depth)
        if isinstance(data, dict) and set(data) == {"col"}:
            return Col(self._name(data["col"], "col"))
        if isinstance(data, dict) and set(data) == {"lit"}:
            return Lit(self._scalar(data["lit"]))
        obj = self._obj(data, {"fn", "args"}, "expression")
        from saferoom.engine.functions import lookup  # the registry's kernels import this module

        fn = obj["fn"]
        args = obj["args"]
        lo, hi = lookup(fn).arity
        if not isinstance(args, list) or not lo <= len(args) <= hi:
            raise InvalidPlan(f"{fn}: takes {lo} to {hi} arguments")
        return Call(fn, tuple(self.expr(a, depth + 1) for a in args))

    def agg(self, data: Any, depth: int) -> AggExpr:
        self._tick(depth)
        if not isinstance(data, dict):
            raise InvalidPlan("aggregate: expected an object")
        obj = self._obj(data, {"agg", "arg", "q"} if "q" in data else {"agg", "arg"}, "aggregate")
        fn = obj["agg"]
        if not isinstance(fn, str) or fn not in AGGREGATES:
            raise InvalidPlan(f"unknown aggregate {str(fn)[:40]!r}")
        arg = None if obj["arg"] is None else self.expr(obj["arg"], depth + 1)
        if arg is None and fn != "count":
            raise InvalidPlan(f"{fn}: needs an argument")
        q = obj.get("q")
        if fn == "quantile":
            if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
                raise InvalidPlan("quantile: q must be a number in [0, 1]")
            q = float(q)
        elif q is not None:
            raise InvalidPlan(f"{fn}: takes no q")
        return AggExpr(fn, arg, q)

    def node(self, data: Any, depth: int) -> Node:
        self._tick(depth)
        if not isinstance(data, dict) or not isinstance(data.get("node"), str):
            raise InvalidPlan("node: expected an object with a 'node' tag")
        kind = data["node"]
        d = depth + 1
        if kind == "scan":
            o = self._obj(data, {"node", "dataset", "columns"}, "scan")
            return Scan(self._name(o["dataset"], "scan.dataset"), self._names(o["columns"], "scan.columns"))
        if kind == "filter":
            o = self._obj(data, {"node", "input", "predicate"}, "filter")
            return Filter(self.node(o["input"], d), self.expr(o["predicate"], d))
        if kind == "project":
            o = self._obj(data, {"node", "input", "columns"}, "project")
            return Project(self.node(o["input"], d), self._pairs(o["columns"], lambda e: self.expr(e, d)))
        if kind == "aggregate":
            o = self._obj(data, {"node", "input", "keys", "aggs"}, "aggregate")
            return Aggregate(
                self.node(o["input"], d),
                self._names(o["keys"], "aggregate.keys"),
                self._pairs(o["aggs"], lambda a: self.agg(a, d)),
            )
        if kind == "join":
            o = self._obj(data, {"node", "left", "right", "on", "how"}, "join")
            if o["how"] not in JOIN_KINDS:
                raise InvalidPlan("join.how must be one of inner, left, right, full")
            on = self._names(o["on"], "join.on")
            if not on:
                raise InvalidPlan("join.on must name at least one column")
            return Join(self.node(o["left"], d), self.node(o["right"], d), on, o["how"])
        if kind == "sort":
            o = self._obj(data, {"node", "input", "keys"}, "sort")
            keys = o["keys"]
            if not isinstance(keys, list) or not keys or len(keys) > 1000:
                raise InvalidPlan("sort.keys: expected a non-empty list")
            parsed: list[tuple[str, bool]] = []
            for k in keys:
                if not (isinstance(k, list) and len(k) == 2 and isinstance(k[1], bool)):
                    raise InvalidPlan("sort.keys: expected [name, descending] pairs")
                parsed.append((self._name(k[0], "sort.keys"), k[1]))
            return Sort(self.node(o["input"], d), tuple(parsed))
        if kind == "limit":
            o = self._obj(data, {"node", "input", "n"}, "limit")
            n = o["n"]
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**31:
                raise InvalidPlan("limit.n must be an integer in [0, 2**31)")
            return Limit(self.node(o["input"], d), n)
        if kind == "union":
            o = self._obj(data, {"node", "inputs"}, "union")
            inputs = o["inputs"]
            if not isinstance(inputs, list) or not 2 <= len(inputs) <= 1000:
                raise InvalidPlan("union.inputs: expected 2 to 1000 nodes")
            return Union(tuple(self.node(i, d) for i in inputs))
        if kind == "threshold":
            o = self._obj(data, {"node", "input", "column", "minimum", "label"}, "threshold")
            minimum = o["minimum"]
            if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 0:
                raise InvalidPlan("threshold.minimum must be a non-negative integer")
            return Threshold(
                self.node(o["input"], d),
                self._name(o["column"], "threshold.column"),
                minimum,
                self._name(o["label"], "threshold.label"),
            )
        if kind == "bound":
            o = self._obj(data, {"node", "input", "column", "n"}, "bound")
            n = o["n"]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 2**31:
                raise InvalidPlan("bound.n must be a positive integer")
            return Bound(self.node(o["input"], d), self._name(o["column"], "bound.column"), n)
        if kind == "input":
            o = self._obj(data, {"node", "label", "columns"}, "input")
            columns = o["columns"]
            if not isinstance(columns, list) or len(columns) > 10_000:
                raise InvalidPlan("input.columns: expected a list of [name, type] pairs")
            pairs: list[tuple[str, str]] = []
            for c in columns:
                if not (isinstance(c, list) and len(c) == 2):
                    raise InvalidPlan("input.columns: expected [name, type] pairs")
                pairs.append((self._name(c[0], "input.columns"), self._name(c[1], "input.columns")))
            return Input(self._name(o["label"], "input.label"), tuple(pairs))
        raise InvalidPlan(f"unknown node {kind[:40]!r}")

    def _pairs(self, value: Any, parse: Any) -> tuple[tuple[str, Any], ...]:
        if not isinstance(value, list) or len(value) > 10_000:
            raise InvalidPlan("expected a list of [name, expression] pairs")
        out = []
        for item in value:
            if not (isinstance(item, list) and len(item) == 2):
                raise InvalidPlan("expected [name, expression] pairs")
            out.append((self._name(item[0], "column name"), parse(item[1])))
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise InvalidPlan("duplicate output column names")
        return tuple(out)


def from_data(data: Any) -> Node:
    """Decode a plan from JSON-compatible data (hostile input: strictly checked)."""
    return _Decoder().node(data, 0)


def from_json(text: str | bytes) -> Node:
    """Decode a plan from JSON (hostile input: strictly checked)."""
    if len(text) > MAX_JSON_BYTES:
        raise InvalidPlan("plan is larger than 4 MiB")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidPlan("plan is not valid JSON") from exc
    return from_data(data)


def with_children(node: Node, kids: tuple[Node, ...]) -> Node:
    """``node`` with its inputs replaced by ``kids`` (same order as ``children``)."""
    if isinstance(node, Scan | Input):
        return node
    if isinstance(node, Join):
        return Join(kids[0], kids[1], node.on, node.how)
    if isinstance(node, Union):
        return Union(kids)
    return replace(node, input=kids[0])


def exact_key(value: Any) -> Any:
    """A hashable key equal only for values of the same meaning: as dataclasses ``Lit(1)``, ``Lit(1.0)`` and
    ``Lit(True)`` are equal (Python's ``1 == 1.0 == True``), and so are ``Lit(0.0)`` and ``Lit(-0.0)``, but they
    are an int, a float and a bool column, and -0.0 divides to -inf. Expressions, aggregates, and the tuples
    and scalars of a node's own fields."""
    if isinstance(value, Lit):
        return ("lit", type(value.value).__name__, repr(value.value))
    if isinstance(value, Col):
        return ("col", value.name)
    if isinstance(value, Call):
        return ("call", value.fn, tuple(exact_key(a) for a in value.args))
    if isinstance(value, AggExpr):
        return ("agg", value.fn, exact_key(value.arg), repr(value.q))
    if isinstance(value, tuple):
        return tuple(exact_key(v) for v in value)
    return (type(value).__name__, repr(value))


def _own_fields(node: Node) -> tuple[Any, ...]:
    skip = {"input", "left", "right", "inputs"}
    return tuple(exact_key(getattr(node, f.name)) for f in fields(node) if f.name not in skip)


def share_subtrees(roots: dict[str, Node]) -> dict[str, Node]:
    """The same plans, with structurally identical subtrees turned into one shared object.

    The release step then rewrites a repeated subtree once and the engine executes it once (a table built from
    the same intermediate twice, e.g. cells joined to their own maxima, costs one computation, not two).
    """
    interned: dict[tuple[Any, ...], Node] = {}
    done: dict[int, Node] = {}
    keep: list[Node] = []  # keeps originals alive so their ids stay unique while we work
    for root in roots.values():
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            current, expanded = stack.pop()
            if id(current) in done:
                continue
            kids = children(current)
            if not expanded:
                stack.append((current, True))
                stack.extend((k, False) for k in kids)
                continue
            shared = tuple(done[id(k)] for k in kids)
            key = (type(current).__name__, tuple(id(k) for k in shared), _own_fields(current))
            if key not in interned:
                interned[key] = with_children(current, shared)
            done[id(current)] = interned[key]
            keep.append(current)
    return {name: done[id(root)] for name, root in roots.items()}
