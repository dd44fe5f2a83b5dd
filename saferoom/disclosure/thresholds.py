"""The contributor threshold: every cell of an aggregate over personal rows needs ``min_contributors`` units.

Per personal source, the distinct units behind each cell are counted (a plain row count when the catalog
declares one row per unit and no join or union since the scan can have duplicated units); the smallest count
among the sources present in a cell is its contributors (``__c<k>``), and a ``Threshold`` node drops cells
below the strictest source policy right there, so that no later sort, filter, head or join ever sees a small
cell or its key. Min and max of personal rows never leave: each is one person's value; nor do quantiles 0 and 1
(the same values). Any other quantile (median) is released only where at least ``min_contributors`` units of
the cell have a value at or below it and as many at or above it, computed by joining the rows with their
cell's quantile (a quantile over a condition's few people is the value of one of them).

Each cell is also a ``Selection`` (its distinct units), for the differencing check across outputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from saferoom.disclosure import dominance
from saferoom.disclosure.levels import (
    ABSENT,
    CONTRIBUTORS_PREFIX,
    CellTable,
    Level,
    QuantileRule,
    Selection,
    ThresholdRule,
)
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
    extreme = [agg.q for _, agg in node.aggs if agg.fn == "quantile" and agg.q in (0.0, 1.0)]
    if extreme:
        names = ", ".join(sorted({u.dataset for u in level.units}))
        raise ReleaseRefused(
            f"quantile(..., {extreme[0]:g}) of personal data ({names}) cannot be released: it is the "
            f"{'minimum' if extreme[0] == 0.0 else 'maximum'}, one person's value"
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
        for agg in (
            (check.top, AggExpr("max", check.amount)),
            (check.total, AggExpr("sum", check.amount)),
            (check.low, AggExpr("min", check.amount)),
            (check.many, AggExpr("count", check.amount)),
        )
    )
    quantiles = [(name, agg) for name, agg in node.aggs if agg.fn in ("quantile", "median") and agg.arg is not None]
    ranked: list[tuple[str, float]] = []  # one row per unit: each quantile's count of values, by rank
    if quantiles and len(level.units) == 1 and level.units[0].unique:
        for _, agg in quantiles:
            ranked.append((rw.fresh("__y"), 0.5 if agg.fn == "median" else float(agg.q or 0.0)))
        inline = (
            *inline,
            *((name, AggExpr("count", agg.arg)) for (name, _), (_, agg) in zip(ranked, quantiles, strict=True)),
        )
        quantiles = []
    contributors = rw.fresh(CONTRIBUTORS_PREFIX)
    visible = tuple((*node.keys, *(n for n, _ in node.aggs)))
    carried = (*visible, *(name for name, _ in inline))
    counted: list[tuple[Node, str]] = []  # per unit: the plan holding its count per cell, and the column
    if len(counts) == 1:
        rewritten: Node = Aggregate(child, node.keys, (*node.aggs, *inline, (contributors, counts[0][1])))
        counted.append((rewritten, contributors))
    else:
        # The smallest count among the sources present in the cell: a source with no rows in a cell (a
        # left join's missing side, another union input) contributes nothing to it.
        absent = Lit(ABSENT)
        present = [Call("case", (Call("eq", (Col(n), Lit(0))), absent, Col(n))) for n, _ in counts]
        least: Expr = present[0]
        for other in present[1:]:
            least = Call("case", (Call("le", (least, other)), least, other))
        least = Call("case", (Call("eq", (least, absent)), Lit(0), least))
        grouped = Aggregate(child, node.keys, node.aggs + inline + tuple(counts))
        counted += [(grouped, n) for n, _ in counts]
        rewritten = Project(grouped, (*tuple((c, Col(c)) for c in carried), (contributors, least)))
    label = rw.fresh("cells")
    minimum = max(u.minimum for u in level.units)
    datasets = tuple(sorted({u.dataset for u in level.units}))
    rw.minimums[contributors] = minimum
    rw.thresholds[label] = ThresholdRule(
        label, contributors, minimum, datasets, tuple(rw.unit_name(u) for u in level.units)
    )
    out: Node = Threshold(rewritten, contributors, minimum, label)
    if ranked:
        out = _quantile_ranks(rw, out, (*carried, contributors), ranked, node, level)
    hidden: tuple[str, ...] = (contributors,)
    if checks:
        out, flag = dominance.suppress(rw, out, child, node.keys, visible, contributors, checks)
        hidden = (contributors, flag)
    if quantiles:
        out, flag = _quantile_sides(rw, out, child, node.keys, (*visible, *hidden), quantiles, level)
        hidden = (*hidden, flag)
    for unit, (counting, column) in zip(level.units, counted, strict=True):
        renamed = tuple((f"__k{i}", Col(k)) for i, k in enumerate(node.keys))
        sizes = Project(counting, (*renamed, ("__n", Col(column))))
        owners: Node
        if unit.unique:  # one row per unit: the rows themselves list each unit once, in its one cell
            members = owners = Project(child, (*renamed, ("__m", Col(unit.column))))
        else:
            per_unit = Aggregate(child, (*node.keys, unit.column), (("__x", AggExpr("count")),))
            members = Project(per_unit, (*renamed, ("__m", Col(unit.column))))
            cell_of = tuple((f"__k{i}", AggExpr("min", Col(k))) for i, k in enumerate(node.keys))
            owners = Project(
                Aggregate(child, (unit.column,), (*cell_of, ("__x", AggExpr("count")))),
                (*((f"__k{i}", Col(f"__k{i}")) for i in range(len(node.keys))), ("__m", Col(unit.column))),
            )
        name = rw.fresh("selection")
        rw.selections[name] = Selection(
            name,
            unit.dataset,
            unit.minimum,
            len(node.keys),
            members,
            "cells",
            owners,
            id(out),
            node.keys,
            sizes,
            child,
            unique=unit.unique,
        )
    cells = Project(rewritten, tuple((k, Col(k)) for k in node.keys))
    domains = tuple(level.domains[k] for k in node.keys) if all(k in level.domains for k in node.keys) else None
    rw.tables[id(out)] = CellTable(id(child), node.keys, cells, domains if node.keys else None)
    return out, Level("aggregate", hidden, checks=level.checks)


def _quantile_ranks(
    rw: Rewriter, cells: Node, columns: tuple[str, ...], ranked: list[tuple[str, float]], node: Aggregate, level: Level
) -> Node:
    """Suppress cells where a quantile has fewer than the minimum of values at or below it, or at or above it,
    from the cell's count n of values alone (one row per unit): the quantile at q lies between the values of
    rank floor(q (n - 1)) and ceil(q (n - 1)) (from 0), so at least floor(..) + 1 values are at or below it and
    n - ceil(..) at or above (more with ties: the rule may suppress more than it must, never less)."""
    minimum = max(u.minimum for u in level.units)
    passed: list[Expr] = []
    for count, q in ranked:
        position = Call("mul", (Lit(q), Call("sub", (Col(count), Lit(1)))))
        below = Call("add", (Call("floor", (position,)), Lit(1)))
        above = Call("sub", (Col(count), Call("ceil", (position,))))
        passed += [Call("ge", (below, Lit(minimum))), Call("ge", (above, Lit(minimum)))]
    condition = passed[0]
    for other in passed[1:]:
        condition = Call("and", (condition, other))
    flag = rw.fresh("__d")
    flagged = Project(cells, (*((c, Col(c)) for c in columns), (flag, Call("case", (condition, Lit(1), Lit(0))))))
    label = rw.fresh("quantile")
    datasets = tuple(sorted({u.dataset for u in level.units}))
    names = tuple(name for name, agg in node.aggs if agg.fn in ("quantile", "median"))
    rw.quantiles[label] = QuantileRule(label, minimum, datasets, names, tuple(q for _, q in ranked))
    return Project(Threshold(flagged, flag, 1, label), tuple((c, Col(c)) for c in columns))


def _quantile_sides(
    rw: Rewriter,
    cells: Node,
    rows: Node,
    keys: tuple[str, ...],
    passthrough: tuple[str, ...],
    quantiles: list[tuple[str, AggExpr]],
    level: Level,
) -> tuple[Node, str]:
    """Suppress cells where a quantile has fewer than the minimum of units at or below it, or at or above it:
    every row joined with its cell's released quantiles, units counted on each side (a cell the join cannot
    match, such as a null key, fails)."""
    one = rw.fresh("__k")
    values = [(rw.fresh("__q"), name, agg) for name, agg in quantiles]
    cell_values = Project(
        cells, (*((k, Col(k)) for k in keys), *((v, Col(name)) for v, name, _ in values), (one, Lit(1)))
    )
    xs = [(rw.fresh("__x"), agg.arg) for _, _, agg in values]
    unit_columns = tuple(dict.fromkeys(u.column for u in level.units))
    row_values = Project(
        rows,
        (
            *((k, Col(k)) for k in keys),
            *((x, e) for x, e in xs if e is not None),
            *((u, Col(u)) for u in unit_columns),
            (one, Lit(1)),
        ),
    )
    joined = Join(row_values, cell_values, (*keys, one), "inner")
    counted: list[tuple[str, AggExpr]] = []
    passed: list[Expr] = []
    minimum = max(u.minimum for u in level.units)
    for (v, _, _), (x, _) in zip(values, xs, strict=True):
        for u in unit_columns:
            for side in ("le", "ge"):
                name = rw.fresh("__e")
                at = Call("case", (Call(side, (Col(x), Col(v))), Col(u), Lit(None)))
                counted.append((name, AggExpr("count_distinct", at)))
                passed.append(
                    Call("ge", (Call("case", (Call("is_null", (Col(name),)), Lit(0), Col(name))), Lit(minimum)))
                )
    per_cell = Aggregate(joined, keys, tuple(counted))
    stats = Project(per_cell, (*((k, Col(k)) for k in keys), *((n, Col(n)) for n, _ in counted), (one, Lit(1))))
    main: Node = Project(cells, (*((c, Col(c)) for c in passthrough), (one, Lit(1))))
    main = Join(main, stats, (*keys, one), "left")
    condition = passed[0]
    for other in passed[1:]:
        condition = Call("and", (condition, other))
    flag = rw.fresh("__d")
    checked = Project(main, (*((c, Col(c)) for c in passthrough), (flag, Call("case", (condition, Lit(1), Lit(0))))))
    label = rw.fresh("quantile")
    datasets = tuple(sorted({u.dataset for u in level.units}))
    qs = tuple(0.5 if agg.fn == "median" else float(agg.q or 0.0) for _, agg in quantiles)
    rw.quantiles[label] = QuantileRule(label, minimum, datasets, tuple(name for name, _ in quantiles), qs)
    return Threshold(checked, flag, 1, label), flag
