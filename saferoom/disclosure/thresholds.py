"""The contributor threshold: every cell of an aggregate over personal rows needs ``min_contributors`` units.

Per personal source, the distinct units behind each cell are counted (a plain row count when the catalog
declares one row per unit and no join or union since the scan can have duplicated units); the smallest count
among the sources present in a cell is its contributors (``__c<k>``), and a ``Threshold`` node drops cells
below the strictest source policy right there, so that no later sort, filter, head or join ever sees a small
cell or its key. Min and max of personal rows never leave: each is one person's value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saferoom.disclosure import dominance
from saferoom.disclosure.levels import ABSENT, CONTRIBUTORS_PREFIX, CellTable, Level, ThresholdRule
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Call,
    Col,
    Expr,
    Lit,
    Node,
    Project,
    Threshold,
)
from saferoom.errors import ReleaseRefused

if TYPE_CHECKING:
    from saferoom.disclosure.protect import Rewriter

__all__ = ["protect_cells"]


def protect_cells(rw: Rewriter, node: Aggregate, child: Node, level: Level) -> tuple[Node, Level]:
    """Count the distinct units behind each cell of an aggregate over personal rows and drop the cells below
    the strictest source policy (key included), right there; sums and means of magnitudes also face the
    dominance rules."""
    refused = [agg.fn for _, agg in node.aggs if agg.fn in ("min", "max")]
    if refused:
        names = ", ".join(sorted({u.dataset for u in level.units}))
        raise ReleaseRefused(
            f"{refused[0]} of personal data ({names}) cannot be released: a minimum or maximum is one person's value"
        )
    counts: list[tuple[str, AggExpr]] = []
    for unit in level.units:
        agg = AggExpr("count") if unit.unique else AggExpr("count_distinct", Col(unit.column))
        counts.append((rw.fresh("__n"), agg))
    checks = [] if id(node) in rw.statistics else dominance.checks(rw, node, level)
    # Amounts of units with one row each: the cell's largest contribution and total, in the same pass.
    inline = tuple(
        agg
        for check in checks
        if check.unique
        for agg in ((check.top, AggExpr("max", check.amount)), (check.total, AggExpr("sum", check.amount)))
    )
    contributors = rw.fresh(CONTRIBUTORS_PREFIX)
    visible = tuple((*node.keys, *(n for n, _ in node.aggs)))
    carried = (*visible, *(name for name, _ in inline))
    if len(counts) == 1:
        rewritten: Node = Aggregate(child, node.keys, (*node.aggs, *inline, (contributors, counts[0][1])))
    else:
        # The smallest count among the sources present in the cell: a source with no rows in a cell (a
        # left join's missing side, another union input) contributes nothing to it.
        absent = Lit(ABSENT)
        present = [Call("case", (Call("eq", (Col(n), Lit(0))), absent, Col(n))) for n, _ in counts]
        least: Expr = present[0]
        for other in present[1:]:
            least = Call("case", (Call("le", (least, other)), least, other))
        least = Call("case", (Call("eq", (least, absent)), Lit(0), least))
        rewritten = Project(
            Aggregate(child, node.keys, node.aggs + inline + tuple(counts)),
            (*tuple((c, Col(c)) for c in carried), (contributors, least)),
        )
    label = rw.fresh("cells")
    minimum = max(u.minimum for u in level.units)
    datasets = tuple(sorted({u.dataset for u in level.units}))
    rw.minimums[contributors] = minimum
    rw.thresholds[label] = ThresholdRule(
        label, contributors, minimum, datasets, tuple(rw.unit_name(u) for u in level.units)
    )
    out: Node = Threshold(rewritten, contributors, minimum, label)
    hidden: tuple[str, ...] = (contributors,)
    if checks:
        out, flag = dominance.suppress(rw, out, child, node.keys, visible, contributors, checks)
        hidden = (contributors, flag)
    cells = Project(rewritten, tuple((k, Col(k)) for k in node.keys))
    domains = tuple(level.domains[k] for k in node.keys) if all(k in level.domains for k in node.keys) else None
    rw.tables[id(out)] = CellTable(id(child), node.keys, cells, domains if node.keys else None)
    return out, Level("aggregate", hidden, checks=level.checks)
