"""The subset rule (DataSHIELD's): a filter, a head or a join that drops personal rows must keep and leave
out either nobody or at least ``min_contributors`` units, or the outputs it feeds are withheld whole; else two
outputs could single a person out by difference. Each check is a one-row plan counting the units kept and left.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from saferoom.disclosure.levels import Level, SubsetCheck
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Call,
    Col,
    Expr,
    Join,
    Lit,
    Node,
    Project,
)
from saferoom.errors import ReleaseRefused

if TYPE_CHECKING:
    from saferoom.disclosure.protect import Rewriter

__all__ = ["at_filter_or_head", "at_join"]


def at_filter_or_head(rw: Rewriter, rows: Node, level: Level, predicate: Expr | None, head: int | None) -> Level:
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
        rw.subsets[label] = SubsetCheck(label, plan, unit.minimum, unit.dataset, "head" if head else "filter")
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
