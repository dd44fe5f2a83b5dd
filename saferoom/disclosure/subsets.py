"""The subset rule (DataSHIELD's): a filter, a head or a join that drops personal rows must keep and leave
out either nobody or at least ``min_contributors`` units, or the outputs it feeds are withheld whole; else two
outputs could single a person out by difference. Each check is a one-row plan counting the units kept and left.

A condition singles people out wherever it acts, not only in a filter: ``when(person_id == N, income)`` inside
a sum, a group key ``person_id == N``, a join on a computed flag. So every condition over personal rows (each
branch of a ``case``, and every other true/false expression: comparisons, and/or/not, is_null, is_in, between)
faces the same rule at the rows it is evaluated on (``at_conditions``). The rows a filter or a condition
selects are also a ``Selection`` for the differencing check across outputs (``differencing``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from saferoom.disclosure.levels import Level, Selection, SubsetCheck, Unit
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Call,
    Col,
    Expr,
    Filter,
    Join,
    Lit,
    Node,
    Project,
)
from saferoom.errors import ReleaseRefused

if TYPE_CHECKING:
    from saferoom.disclosure.protect import Rewriter

__all__ = ["PREDICATES", "at_conditions", "at_filter_or_head", "at_join", "conditions"]

# Functions whose value is true/false: a condition wherever it appears.
PREDICATES = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "is_null", "is_in", "between"})


def conditions(expr: Expr) -> tuple[list[Expr], list[Expr]]:
    """The conditions in ``expr`` that select rows: (outermost, within).

    Outermost: each branch region of a ``case`` (the rows whose first true test is that branch's, and the rows
    no test takes), and each outermost true/false call that reads a column. Within: every true/false call
    inside those (the operands of and/or, a comparison inside arithmetic inside a condition): a condition that
    holds for one person singles them out even as a part, as in ``district == "Siming" | person_id == N``."""
    outer: list[Expr] = []
    inner: list[Expr] = []
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        e, inside = stack.pop()
        if not isinstance(e, Call):
            continue
        if e.fn == "case":
            tests = e.args[0:-1:2]
            if len(tests) == 1:
                (inner if inside else outer).append(_truthy(tests[0]))
            else:
                for i in range(len(tests) + 1):
                    branches: list[Expr] = []
                    for j, test in enumerate(tests[: i + 1]):
                        branches += [test, Lit(j == i)]
                    (inner if inside else outer).append(Call("case", (*branches, Lit(i == len(tests)))))
            stack.extend((test, True) for test in tests)
            stack.extend((value, inside) for value in (*e.args[1::2], e.args[-1]))
        elif e.fn in PREDICATES and _reads_columns(e):
            if e.fn != "not":  # not(x) selects x's complement: the rule checks both sides of x anyway
                (inner if inside else outer).append(e)
            stack.extend((a, True) for a in e.args)
        else:
            stack.extend((a, inside) for a in e.args)
    outer = list(dict.fromkeys(outer))
    return outer, [c for c in dict.fromkeys(inner) if c not in outer]


def _truthy(test: Expr) -> Expr:
    """``test`` with null read as false, as ``case`` reads it."""
    return Call("case", (test, Lit(True), Lit(False)))


def _reads_columns(e: Expr) -> bool:
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, Col):
            return True
        if isinstance(x, Call):
            stack.extend(x.args)
    return False


def at_conditions(rw: Rewriter, rows: Node, level: Level, exprs: list[Expr], within_only: bool = False) -> Level:
    """Subset checks for every condition in ``exprs`` evaluated over personal ``rows`` (one per distinct
    condition and rows); the outermost ones are also selections for the differencing check. ``within_only``:
    ``exprs`` are filter predicates, checked as a whole by the filter itself."""
    labels: list[str] = []
    for expr in exprs:
        outer, inner = conditions(expr)
        if within_only:
            outer, inner = [], [c for c in (*outer, *inner) if c != expr]
        for condition, select in (*((c, True) for c in outer), *((c, False) for c in inner)):
            key = (id(rows), condition)
            if key not in rw.conditions:
                bare = replace(level, checks=())
                done = at_filter_or_head(rw, rows, bare, condition, None, "condition", select)
                rw.conditions[key] = list(done.checks)
            labels += rw.conditions[key]
    if not labels:
        return level
    return replace(level, checks=tuple(dict.fromkeys((*level.checks, *labels))))


def _members(rows: Node, predicate: Expr, unit: Unit) -> Node:
    """The distinct units of ``rows`` where ``predicate`` holds, as column ``__m``."""
    kept = Filter(rows, Call("case", (predicate, Lit(True), Lit(False))))
    if unit.unique:
        return Project(kept, (("__m", Col(unit.column)),))
    return Project(Aggregate(kept, (unit.column,), (("__x", AggExpr("count")),)), (("__m", Col(unit.column)),))


def at_filter_or_head(
    rw: Rewriter,
    rows: Node,
    level: Level,
    predicate: Expr | None,
    head: int | None,
    what: str = "filter",
    select: bool = True,
) -> Level:
    """Add a subset check for a filter (``predicate``) or a head (``head`` rows) over personal ``rows``."""
    labels = []
    for unit in level.units:
        if head is not None and 0 < head < unit.minimum:  # data-independent: refuse outright
            raise ReleaseRefused(
                f"head({head}) of personal rows ({unit.dataset}) selects fewer than {unit.minimum} people"
            )
        label = rw.fresh("subset")
        if head is not None:  # a head keeps at most ``head`` rows: check what it leaves out
            total = AggExpr("count") if unit.unique else AggExpr("count_distinct", Col(unit.column))
            counts = Aggregate(rows, (), (("total", total),))
            plan: Node = Project(counts, (("kept", Lit(head)), ("left", Call("sub", (Col("total"), Lit(head))))))
        else:
            assert predicate is not None
            if unit.unique:
                kept = AggExpr("sum", Call("case", (predicate, Lit(1), Lit(0))))
                left = AggExpr("sum", Call("case", (predicate, Lit(0), Lit(1))))
            else:
                kept = AggExpr("count_distinct", Call("case", (predicate, Col(unit.column), Lit(None))))
                left = AggExpr("count_distinct", Call("case", (predicate, Lit(None), Col(unit.column))))
            plan = Aggregate(rows, (), (("kept", kept), ("left", left)))
        rw.subsets[label] = SubsetCheck(label, plan, unit.minimum, unit.dataset, "head" if head else what)
        if predicate is not None and select:
            members = _members(rows, predicate, unit)
            sizes = Project(plan, (("__n", Col("kept")),))  # the check counts the units it keeps
            condition = what == "condition"
            rw.selections[label] = Selection(
                label,
                unit.dataset,
                unit.minimum,
                0,
                members,
                what,
                sizes=sizes,
                rows=rows if condition else None,  # a filter's: the filtered rows (set by the rewriter)
                predicate=predicate if condition else None,
                unique=unit.unique,
            )
        labels.append(label)
    return replace(level, checks=(*level.checks, *labels))


def at_join(rw: Rewriter, joined: Node, side: Node, level: Level) -> list[str]:
    """Subset checks for a join that may drop rows of ``side``: units kept in ``joined`` vs in ``side``."""
    labels = []
    for unit in level.units:
        label = rw.fresh("subset")
        total = AggExpr("count") if unit.unique else AggExpr("count_distinct", Col(unit.column))
        kept = Aggregate(joined, (), (("kept", AggExpr("count_distinct", Col(unit.column))),))
        before = Aggregate(side, (), (("total", total),))
        one = (("__k", Lit(1)),)
        pair = Join(
            Project(kept, (("kept", Col("kept")), *one)), Project(before, (("total", Col("total")), *one)), ("__k",)
        )
        plan = Project(pair, (("kept", Col("kept")), ("left", Call("sub", (Col("total"), Col("kept"))))))
        rw.subsets[label] = SubsetCheck(label, plan, unit.minimum, unit.dataset, "join")
        labels.append(label)
    return labels
