"""Dominance: sums and means of magnitudes (income, prices) must not be dominated by their largest
contributors ((n, k) rule) nor be estimable by the runner-up (p% rule).

The rules read what each unit contributes beyond the cell's smallest contribution: ``sum(masked + C)``, where
one person's income is hidden among constants C (``when(person_id == N, income).otherwise(0) + C``), is
dominated by that person once the shift is taken off, whatever C is. A cell passes only if it passes both as
it stands and shifted, so the shift only ever suppresses more (cells whose spread comes from one or two people;
for contributions of at least 0 the shifted shares are never smaller).

Also, shifted: the rules cannot see arithmetic that spreads one person's value over everyone (a scale, not a
shift); that is left to the subset rule on conditions and to the output checker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from saferoom.catalog.manifest import Policy
from saferoom.disclosure.levels import DominanceRule, Level, Unit, columns_of
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

if TYPE_CHECKING:
    from saferoom.disclosure.protect import Rewriter

__all__ = ["Check", "checks", "suppress"]


@dataclass(frozen=True)
class Check:
    """One sum or mean of a magnitude, for one owning unit."""

    output: str
    amount: Expr
    unit: Unit
    policy: Policy
    top: str  # hidden column: the cell's largest contribution
    total: str  # hidden column: the cell's total
    low: str  # hidden column: the cell's smallest contribution
    many: str  # hidden column: how many contributions the cell has
    unique: bool  # one row per unit: computed in the aggregate itself


def checks(rw: Rewriter, node: Aggregate, level: Level) -> list[Check]:
    """The sums and means of magnitudes in an aggregate, one check per owning unit."""
    units = {u.column: u for u in level.units}
    checks = []
    for name, agg in node.aggs:
        if agg.fn not in ("sum", "mean") or agg.arg is None:
            continue
        owners = frozenset().union(*(level.magnitudes.get(c, frozenset()) for c in columns_of(agg.arg)))
        for owner in sorted(owners):
            unit = units[owner]
            policy = rw.manifest.dataset(unit.dataset).policy
            top, total, low, many = rw.fresh("__t"), rw.fresh("__s"), rw.fresh("__l"), rw.fresh("__y")
            checks.append(Check(name, agg.arg, unit, policy, top, total, low, many, unit.unique))
    return checks


def suppress(
    rw: Rewriter,
    cells: Node,
    rows: Node,
    keys: tuple[str, ...],
    visible: tuple[str, ...],
    contributors: str,
    checks: list[Check],
) -> tuple[Node, str]:
    """Suppress cells whose sums of a magnitude are dominated ((n, k) rule) or too well estimated by the
    runner-up (p% rule), from each cell's total and largest contribution per unit.

    The runner-up is bounded above by the largest contribution: exact top-two statistics need every row
    joined with its cell (about 15x the cost of the query on 10M rows), and the bound only ever suppresses
    more (cells where one contributor alone holds more than k/2), never less. Units with several rows
    have them added up per unit first; cells without statistics (e.g. a null key) fail closed.
    """
    main = cells
    passthrough = [c for c in (*visible, contributors)]
    inline = [name for c in checks if c.unique for name in (c.top, c.total, c.low, c.many)]
    separate = [c for c in checks if not c.unique]
    missing: list[Expr] = []
    if separate:
        one = rw.fresh("__k")  # a constant join key, so that aggregates without keys join too
        main = Project(main, (*((c, Col(c)) for c in (*passthrough, *inline)), (one, Lit(1))))
        for check in separate:
            v, seen = rw.fresh("__v"), rw.fresh("__w")
            per_unit = Aggregate(rows, (*keys, check.unit.column), ((v, AggExpr("sum", check.amount)),))
            cell_stats = Aggregate(
                per_unit,
                keys,
                (
                    (check.top, AggExpr("max", Col(v))),
                    (check.total, AggExpr("sum", Col(v))),
                    (check.low, AggExpr("min", Col(v))),
                    (check.many, AggExpr("count", Col(v))),
                    (seen, AggExpr("count")),
                ),
            )
            # A cell the join cannot match (a null key) gets no statistics: it must fail, not pass.
            missing.append(Call("is_null", (Col(seen),)))
            stats = Project(
                cell_stats,
                (
                    *((k, Col(k)) for k in keys),
                    (check.top, Col(check.top)),
                    (check.total, Col(check.total)),
                    (check.low, Col(check.low)),
                    (check.many, Col(check.many)),
                    (seen, Col(seen)),
                    (one, Lit(1)),
                ),
            )
            main = Join(main, stats, (*keys, one), "left")
    conditions: list[Expr] = []
    for check in checks:
        # As they stand, and what each contributes beyond the cell's smallest contribution (a shift taken off).
        low: Expr = Col(check.low)
        shifted_top: Expr = Call("sub", (Col(check.top), low))
        shifted_total: Expr = Call("sub", (Col(check.total), Call("mul", (Col(check.many), low))))
        for top, total in ((Col(check.top), Col(check.total)), (shifted_top, shifted_total)):
            policy = check.policy
            largest_n = top if policy.dominance_n == 1 else Call("mul", (Lit(2), top))
            rest = Call("sub", (total, Call("mul", (Lit(2), top))))
            dominated_not = Call("le", (largest_n, Call("mul", (Lit(policy.dominance_k), total))))
            estimable_not = Call("ge", (rest, Call("mul", (Lit(policy.p_percent), top))))
            # No amounts at all in the cell (all null): nothing to dominate. Missing statistics: fail.
            nothing = Call("and", (Call("is_null", (total,)), Call("is_null", (top,))))
            conditions.append(Call("or", (nothing, Call("and", (dominated_not, estimable_not)))))
    for gap in missing:
        conditions.append(Call("not", (gap,)))
    passed = conditions[0]
    for condition in conditions[1:]:
        passed = Call("and", (passed, condition))
    flag = rw.fresh("__d")
    checked = Project(
        main,
        (*((c, Col(c)) for c in passthrough), (flag, Call("case", (passed, Lit(1), Lit(0))))),
    )
    label = rw.fresh("dominance")
    strictest = min((c.policy for c in checks), key=lambda p: (p.dominance_k, -p.p_percent))
    rw.dominance[label] = DominanceRule(
        label,
        strictest.dominance_n,
        strictest.dominance_k,
        strictest.p_percent,
        tuple(sorted({c.unit.dataset for c in checks})),
        tuple(dict.fromkeys(c.output for c in checks)),
    )
    return Threshold(checked, flag, 1, label), flag
