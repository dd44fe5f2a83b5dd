"""Models fitted on the server from sufficient statistics: only coefficients leave, never rows or residuals.

For ``ols(y, x)`` the server (not the algorithm) builds one aggregate over the complete cases: n, the sums of
every product of the terms (1, x1..xp) and of the terms with y, and the sum of y squared. That aggregate goes
through the release rewrite like any other (contributor threshold, dominance, subset rule, clamping), so a
model over too few people is suppressed before it is fitted. The fit then happens here, in the server; what
is released is a table of coefficients and standard errors, and only with at least ``min_residual_df``
residual degrees of freedom (n - p - 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from saferoom.catalog.manifest import Manifest
from saferoom.disclosure.release import Released, ReleaseReport, RuleOutcome
from saferoom.engine.plan import AggExpr, Aggregate, Call, Col, Expr, Filter, Lit, Node
from saferoom.engine.schema import infer_schema
from saferoom.errors import InvalidPlan

__all__ = ["ModelSpec", "fit_ols", "ols_statistics"]

MAX_TERMS = 10


@dataclass(frozen=True)
class ModelSpec:
    """What the algorithm asked for: a response and predictors over an input plan."""

    y: str
    x: tuple[str, ...]


def _product(a: str | None, b: str | None) -> Expr:
    def term(name: str | None) -> Expr:
        return Lit(1.0) if name is None else Call("cast_float", (Col(name),))

    if a is None and b is None:
        return Lit(1.0)
    if a is None or b is None:
        return term(a or b)
    return Call("mul", (term(a), term(b)))


def ols_statistics(node: Node, spec: ModelSpec, manifest: Manifest) -> Node:
    """The aggregate of sufficient statistics for ``spec`` over the complete cases of ``node``."""
    names = (spec.y, *spec.x)
    if not 1 <= len(spec.x) <= MAX_TERMS or len(set(names)) != len(names):
        raise InvalidPlan("a model needs 1 to 10 distinct predictors and a different response")
    schema = infer_schema(node, manifest)
    for name in names:
        if schema.get(name) not in ("int64", "float64"):
            raise InvalidPlan(f"model column {name!r} must be a number column")
    complete: Expr = Call("not", (Call("is_null", (Col(spec.y),)),))
    for name in spec.x:
        complete = Call("and", (complete, Call("not", (Call("is_null", (Col(name),)),))))
    rows = Filter(node, complete)
    terms: list[str | None] = [None, *spec.x]
    aggs: list[tuple[str, AggExpr]] = [("n", AggExpr("count"))]
    for i, a in enumerate(terms):
        for j in range(i, len(terms)):
            aggs.append((f"xx_{i}_{j}", AggExpr("sum", _product(a, terms[j]))))
        aggs.append((f"xy_{i}", AggExpr("sum", _product(a, spec.y))))
    aggs.append(("yy", AggExpr("sum", _product(spec.y, spec.y))))
    return Aggregate(rows, (), tuple(aggs))


def fit_ols(released: Released, spec: ModelSpec, min_residual_df: int) -> Released:
    """Coefficients and standard errors from the released statistics, or the output withheld with why."""
    p = len(spec.x) + 1
    stats = released.table.to_pylist()
    rules = [r for r in released.report.rules]
    names = ["intercept", *spec.x]

    def withheld(reason: str) -> Released:
        rule = RuleOutcome("model", f"withheld: {reason}", threshold=min_residual_df)
        empty = pa.table(
            {
                "term": pa.array([], pa.string()),
                "estimate": pa.array([], pa.float64()),
                "std_error": pa.array([], pa.float64()),
            }
        )
        report = ReleaseReport(released.report.output, "model", 0, empty.column_names, 0, [*rules, rule])
        return Released(empty, report)

    if len(stats) != 1 or stats[0]["n"] is None:
        return withheld("the model's cases did not pass the rules above")
    row = stats[0]
    n = int(row["n"])
    df = n - p
    if df < min_residual_df:
        return withheld(f"{df} residual degrees of freedom; at least {min_residual_df} are needed")
    xtx = np.zeros((p, p))
    for i in range(p):
        for j in range(i, p):
            xtx[i, j] = xtx[j, i] = float(row[f"xx_{i}_{j}"] or 0.0)
    xty = np.array([float(row[f"xy_{i}"] or 0.0) for i in range(p)])
    if np.linalg.matrix_rank(xtx) < p:
        return withheld("the predictors are collinear (or constant) among these cases")
    beta = np.linalg.solve(xtx, xty)
    rss = max(float(row["yy"] or 0.0) - float(beta @ xty), 0.0)
    errors = np.sqrt(np.clip(np.diag(np.linalg.inv(xtx)) * rss / df, 0.0, None))
    table = pa.table({"term": names, "estimate": beta.tolist(), "std_error": errors.tolist()})
    rule = RuleOutcome(
        "model",
        f"ordinary least squares on {n} complete cases with {df} residual degrees of freedom (at least "
        f"{min_residual_df}); only coefficients and standard errors are released, no residuals or fitted values",
        threshold=min_residual_df,
    )
    report = ReleaseReport(released.report.output, "model", table.num_rows, table.column_names, 0, [*rules, rule])
    return Released(table, report)
