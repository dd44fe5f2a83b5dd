"""The differential-privacy cut-out: an aggregate over rows of a DP dataset leaves the plan.

The engine computes its exact statistics over rows bounded per privacy unit (``Bound``), the server releases
them with noise (``disclosure.dp``), and the plan above reads the noisy table through an ``Input`` node:
everything built on it is post-processing. No exact threshold, dominance, subset or secondary-suppression
decision is taken on such data (each would leak through what it suppresses); the noisy threshold on each
cell's count takes their place.

Every value a sum, mean or quantile measures is clamped in the engine to bounds taken from its value domain
(``engine.functions``): the noise is scaled to those bounds, and the clamp maps NaN to null and +-infinity to a
bound, so they hold for every value the engine can produce, whatever the domain analysis concluded.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from saferoom.disclosure.cells import MAX_GRID
from saferoom.disclosure.dp import QUANTILE_BINS, DPColumn, NoisyAggregate
from saferoom.disclosure.levels import Level, columns_of
from saferoom.engine.functions import expr_domain
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Bound,
    Call,
    Col,
    Expr,
    Filter,
    Input,
    Lit,
    Node,
    Project,
)
from saferoom.engine.schema import infer_schema
from saferoom.errors import ReleaseRefused

if TYPE_CHECKING:
    from saferoom.disclosure.protect import Rewriter

__all__ = ["LARGEST_SUM", "bin_index", "cut_out"]

LARGEST_SUM = 2.0**1000  # far below the largest double: a DP sum of values within bounds never overflows


def bin_index(value: Expr, column: DPColumn) -> Expr:
    """The index (0..QUANTILE_BINS-1) of the quantile candidate interval holding ``value``."""
    lo, hi = column.lower, column.upper
    if hi <= lo:
        return Lit(0)
    if column.log_unit:  # evenly in log(1 + (x - lo) / u)
        position: Expr = Call(
            "log", (Call("add", (Lit(1.0), Call("div", (Call("sub", (value, Lit(lo))), Lit(column.log_unit))))),)
        )
        top = math.log1p((hi - lo) / column.log_unit)
    else:
        position, top = Call("sub", (value, Lit(lo))), hi - lo
    scaled = Call("floor", (Call("mul", (position, Lit(QUANTILE_BINS / top))),))
    return Call("clamp", (Call("cast_int", (scaled,)), Lit(0), Lit(QUANTILE_BINS - 1)))


def cut_out(rw: Rewriter, node: Aggregate, rows: Node, level: Level) -> tuple[Node, Level]:
    """Cut a differentially private aggregate out of the plan: its exact statistics over rows bounded per
    unit, noised by the server; the plan above reads the released table through an ``Input`` node."""
    names = rw.names(level)
    if id(node) in rw.statistics:
        raise ReleaseRefused(f"models (ols, logit) are not available on differentially private data ({names})")
    unit = level.units[0]
    if len(level.units) != 1 or level.checks or level.hidden != (unit.column,):
        raise ReleaseRefused(
            f"a differentially private aggregate over {names} may combine its rows with public data only: "
            "aggregate each personal dataset on its own, then join the aggregates"
        )
    policy = rw.manifest.dataset(unit.dataset).policy
    k = policy.max_contributions
    bounded = rows if unit.unique else Bound(rows, unit.column, k)
    schema = infer_schema(node, rw.manifest)
    statistics: list[tuple[str, AggExpr]] = []
    columns: list[DPColumn] = []
    histograms: dict[str, Node] = {}
    for name, agg in node.aggs:
        if agg.fn == "count" and agg.arg is None:
            columns.append(DPColumn(name, "count", integer=True))
            continue
        if agg.fn in ("count", "count_distinct"):
            source = rw.fresh("__x")
            statistics.append((source, agg))
            columns.append(DPColumn(name, "count_values", source, integer=True))
            continue
        if agg.fn not in ("sum", "mean", "median", "quantile") or agg.arg is None:
            raise ReleaseRefused(
                f"{agg.fn} of {names} is not available under differential privacy: use count, sum, mean, "
                "median or quantile (e.g. a variance from the means of x and x * x)"
            )
        value = expr_domain(agg.arg, level.values)
        interval = value.interval
        if interval is None:
            raise ReleaseRefused(
                f"{agg.fn} for {name!r} over {names}: under differential privacy a value needs public bounds "
                "(the noise is scaled to them); compute it from bounded columns or use .clip(low, high)"
            )
        lo, hi = interval
        # A sum over at most rows x k values of at most max|bound| each must stay a finite float whatever the
        # data: a sum that overflowed to infinity would move by more than any sensitivity.
        most = rw.manifest.dataset(unit.dataset).rows * k * max(abs(lo), abs(hi))
        if not most < LARGEST_SUM:
            raise ReleaseRefused(
                f"{agg.fn} for {name!r} over {names}: the bounds [{lo:g}, {hi:g}] are too wide for a sum over "
                f"{rw.manifest.dataset(unit.dataset).rows} rows; use .clip(low, high) with narrower bounds"
            )
        # Clamped in the engine: NaN becomes null and +-infinity a bound, so [lo, hi] holds for every value
        # the engine can produce (the sensitivity rests on that, not on the domain analysis above). Summed as
        # floats: an integer sum could wrap around.
        clamped = Call("clamp", (Call("cast_float", (agg.arg,)), Lit(float(lo)), Lit(float(hi))))
        source = rw.fresh("__x")
        if agg.fn == "sum":
            statistics.append((source, AggExpr("sum", clamped)))
            columns.append(DPColumn(name, "sum", source, lo, hi, integer=schema[name] == "int64"))
        elif agg.fn == "mean":
            centred = Call("sub", (clamped, Lit((lo + hi) / 2)))
            statistics.append((source, AggExpr("sum", centred)))
            columns.append(DPColumn(name, "mean", source, lo, hi))
        else:
            q = 0.5 if agg.fn == "median" else float(agg.q if agg.q is not None else 0.5)
            amount = any(c in level.magnitudes for c in columns_of(agg.arg)) and lo >= 0 and hi > lo
            column = DPColumn(name, "quantile", source, lo, hi, q, log_unit=(hi - lo) / 1e4 if amount else 0.0)
            project = Project(bounded, (*((key, Col(key)) for key in node.keys), ("__bin", bin_index(clamped, column))))
            present = Filter(project, Call("not", (Call("is_null", (Col("__bin"),)),)))
            histograms[source] = Aggregate(present, (*node.keys, "__bin"), (("__n", AggExpr("count")),))
            columns.append(column)
    count = rw.fresh("__n")
    exact = Aggregate(bounded, node.keys, (*statistics, (count, AggExpr("count"))))
    label = rw.fresh("dp")
    released = tuple(schema.items())
    # Keys with a public set of values (catalog categories, true/false, or values the plan's literals fix,
    # e.g. when(...).otherwise(...) of strings): every combination is a cell, and no threshold is needed.
    domains = tuple(level.values[key].categories or () if key in level.values else () for key in node.keys)
    public = bool(node.keys) and all(domains) and math.prod(len(d) for d in domains) <= MAX_GRID
    rw.noisy[label] = NoisyAggregate(
        label, unit.dataset, node.keys, exact, count, tuple(columns), histograms, k, policy.min_contributors,
        released, domains if public else None,
    )  # fmt: skip
    return Input(label, released), Level("aggregate")
