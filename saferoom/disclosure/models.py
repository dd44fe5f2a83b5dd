"""Models fitted on the server from sufficient statistics: only coefficients leave, never rows or residuals.

For ``ols(y, x)`` the server (not the algorithm) builds one aggregate over the complete cases: n, the sums of
every product of the terms (1, x1..xp) and of the terms with y, and the sum of y squared. That aggregate goes
through the release rewrite like any other (contributor threshold, dominance, subset rule, clamping), so a
model over too few people is suppressed before it is fitted. The fit then happens here, in the server; what
is released is a table of coefficients and standard errors, and only with at least ``min_residual_df``
residual degrees of freedom (n - p - 1). The researcher's report states the rule, not the number of cases, nor
why a model was withheld (both are exact data); the checker's view has them, and the residual degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from saferoom.catalog.manifest import Manifest, Policy
from saferoom.disclosure.release import Released, RuleOutcome, add_rules, flag, withhold
from saferoom.engine.plan import AggExpr, Aggregate, Call, Col, Expr, Filter, Lit, Node
from saferoom.engine.schema import infer_schema
from saferoom.errors import InvalidPlan

__all__ = ["ModelSpec", "fit_logit", "fit_ols", "logit_statistics", "ols_statistics"]

MAX_TERMS = 10
# Newton steps of every logit fit, converged or not (fixed: the number must not depend on the data); Newton's
# method converges quadratically, in 5 to 8 steps from zero for well-posed fits.
NEWTON_STEPS = 12
TOLERANCE = 1e-8


@dataclass(frozen=True)
class ModelSpec:
    """What the algorithm asked for: a response and predictors over an input plan."""

    y: str
    x: tuple[str, ...]
    kind: str = "ols"  # "ols" | "logit"


def _product(a: str | None, b: str | None) -> Expr:
    def term(name: str | None) -> Expr:
        return Lit(1.0) if name is None else Call("cast_float", (Col(name),))

    if a is None and b is None:
        return Lit(1.0)
    if a is None or b is None:
        return term(a or b)
    return Call("mul", (term(a), term(b)))


def _complete_cases(node: Node, spec: ModelSpec, manifest: Manifest) -> Node:
    """The rows of ``node`` with a value in every model column (checked to be number columns)."""
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
    return Filter(node, complete)


def ols_statistics(node: Node, spec: ModelSpec, manifest: Manifest) -> Node:
    """The aggregate of sufficient statistics for ``spec`` over the complete cases of ``node``."""
    rows = _complete_cases(node, spec, manifest)
    terms: list[str | None] = [None, *spec.x]
    aggs: list[tuple[str, AggExpr]] = [("n", AggExpr("count"))]
    for i, a in enumerate(terms):
        for j in range(i, len(terms)):
            aggs.append((f"xx_{i}_{j}", AggExpr("sum", _product(a, terms[j]))))
        aggs.append((f"xy_{i}", AggExpr("sum", _product(a, spec.y))))
    aggs.append(("yy", AggExpr("sum", _product(spec.y, spec.y))))
    return Aggregate(rows, (), tuple(aggs))


def min_residual_df(released: Released, manifest: Manifest) -> int:
    """The strictest residual degrees of freedom the datasets behind a model ask for."""
    protected = released.protected
    datasets = {d for rule in protected.thresholds.values() for d in rule.datasets} if protected else set()
    policies = [manifest.dataset(d).policy for d in sorted(datasets)] or [Policy()]
    return max(policy.min_residual_df for policy in policies)


def fit_ols(released: Released, spec: ModelSpec, manifest: Manifest) -> Released:
    """Coefficients and standard errors from the released statistics, or the output withheld with why."""
    p = len(spec.x) + 1
    minimum = min_residual_df(released, manifest)
    stats = released.table.to_pylist()
    if len(stats) != 1 or stats[0]["n"] is None:
        return _withheld(released, "the model's cases did not pass the rules above", minimum)
    row = stats[0]
    n = int(row["n"])
    df = n - p
    if df < minimum:
        return _withheld(released, f"{df} residual degrees of freedom; at least {minimum} are needed", minimum)
    xtx = np.zeros((p, p))
    for i in range(p):
        for j in range(i, p):
            xtx[i, j] = xtx[j, i] = float(row[f"xx_{i}_{j}"] or 0.0)
    xty = np.array([float(row[f"xy_{i}"] or 0.0) for i in range(p)])
    if np.linalg.matrix_rank(xtx) < p:
        return _withheld(released, "the predictors are collinear (or constant) among these cases", minimum)
    beta = np.linalg.solve(xtx, xty)
    rss = max(float(row["yy"] or 0.0) - float(beta @ xty), 0.0)
    errors = np.sqrt(np.clip(np.diag(np.linalg.inv(xtx)) * rss / df, 0.0, None))
    explanation = (
        f"ordinary least squares with at least {minimum} residual degrees of freedom; only coefficients and "
        "standard errors are released, no residuals or fitted values"
    )
    detail = {"cases": n, "residual_df": df}
    return _coefficients(released, spec, beta.tolist(), errors.tolist(), explanation, minimum, detail)


def logit_statistics(rows: Node, spec: ModelSpec, beta: list[float]) -> Node:
    """One Newton (IRLS) step's statistics at ``beta``: X'WX and X'(y - p), with p = 1 / (1 + exp(-X beta)).

    ``beta`` enters the plan as literals, so every step is an ordinary, engine-neutral aggregate. Also
    sum(y (1 - y)), which is 0 exactly when the response is 0/1.
    """
    terms: list[str | None] = [None, *spec.x]
    eta: Expr = Lit(float(beta[0]))
    for coefficient, name in zip(beta[1:], spec.x, strict=True):
        eta = Call("add", (eta, Call("mul", (Lit(float(coefficient)), Call("cast_float", (Col(name),))))))
    prob = Call("div", (Lit(1.0), Call("add", (Lit(1.0), Call("exp", (Call("neg", (eta,)),))))))
    weight = Call("mul", (prob, Call("sub", (Lit(1.0), prob))))
    y = Call("cast_float", (Col(spec.y),))
    aggs: list[tuple[str, AggExpr]] = [
        ("n", AggExpr("count")),
        ("not_binary", AggExpr("sum", Call("mul", (y, Call("sub", (Lit(1.0), y)))))),
    ]
    for i, a in enumerate(terms):
        for j in range(i, len(terms)):
            aggs.append((f"xwx_{i}_{j}", AggExpr("sum", Call("mul", (weight, _product(a, terms[j]))))))
        aggs.append((f"score_{i}", AggExpr("sum", Call("mul", (_product(a, None), Call("sub", (y, prob)))))))
    return Aggregate(rows, (), tuple(aggs))


def fit_logit(node: Node, spec: ModelSpec, manifest: Manifest, evaluate: Callable[[Node], Released]) -> Released:
    """Logistic regression by Newton steps; each step's statistics go through protection and release
    (``evaluate``), and only the final coefficients and standard errors leave.

    Always exactly ``NEWTON_STEPS`` steps, whatever the data: a fit that stopped when it converged (or when a
    step found the cases too few, the response not 0/1, the matrix singular) would show, by how long the job
    took, how many steps the data needed. A step after a failure keeps the coefficients and still runs; the
    first failure, or a last step that has not converged, withholds the model at the end.
    """
    rows = _complete_cases(node, spec, manifest)
    p = len(spec.x) + 1
    beta = [0.0] * p
    failure: str | None = None
    converged = False
    released: Released | None = None
    row: dict[str, Any] = {}
    xwx = np.zeros((p, p))
    minimum = 0
    for _ in range(NEWTON_STEPS):
        released = evaluate(logit_statistics(rows, spec, beta))
        stats = released.table.to_pylist()
        minimum = min_residual_df(released, manifest)
        if failure is not None:
            continue  # the same work as a fit that goes on: nothing about why it failed, or when, shows
        if len(stats) != 1 or stats[0]["n"] is None:
            failure = "the model's cases did not pass the rules above"
            continue
        row = stats[0]
        df = int(row["n"]) - p
        if df < minimum:
            failure = f"{df} residual degrees of freedom; at least {minimum} are needed"
            continue
        if abs(float(row["not_binary"] or 0.0)) > 1e-9:
            failure = f"the response {spec.y} must be 0 or 1"
            continue
        xwx = np.zeros((p, p))
        for i in range(p):
            for j in range(i, p):
                xwx[i, j] = xwx[j, i] = float(row[f"xwx_{i}_{j}"] or 0.0)
        score = np.array([float(row[f"score_{i}"] or 0.0) for i in range(p)])
        if not np.all(np.isfinite(xwx)) or np.linalg.matrix_rank(xwx) < p:
            failure = "the fit is degenerate (collinear predictors or perfect separation)"
            continue
        step = np.linalg.solve(xwx, score)
        beta = [b + s for b, s in zip(beta, step.tolist(), strict=True)]
        converged = float(np.max(np.abs(step))) < TOLERANCE * (1.0 + float(np.max(np.abs(beta))))
    assert released is not None
    if failure is None and not converged:
        failure = f"no convergence in {NEWTON_STEPS} Newton steps (perfect separation?)"
    if failure is not None:
        return _withheld(released, failure, minimum)
    df = int(row["n"]) - p
    errors = np.sqrt(np.clip(np.diag(np.linalg.inv(xwx)), 0.0, None)).tolist()
    explanation = (
        f"logistic regression with at least {minimum} residual degrees of freedom, fitted by {NEWTON_STEPS} "
        "Newton steps; only coefficients and standard errors are released, no residuals or fitted values"
    )
    detail = {"cases": int(row["n"]), "residual_df": df, "iterations": NEWTON_STEPS}
    return _coefficients(released, spec, beta, errors, explanation, minimum, detail)


def _coefficients(
    released: Released,
    spec: ModelSpec,
    beta: list[float],
    errors: list[float],
    explanation: str,
    minimum: int,
    detail: dict[str, Any],
) -> Released:
    table = pa.table({"term": ["intercept", *spec.x], "estimate": beta, "std_error": errors})
    rule = RuleOutcome("model", explanation, threshold=minimum)
    report = replace(released.report, kind="model", columns=table.column_names)
    done = add_rules(replace(released, table=table, report=report), [rule])
    done = replace(done, check={**done.check, "model": detail})
    return flag(done, "residual_df", residual_df=detail["residual_df"], minimum=minimum)


def _withheld(released: Released, reason: str, minimum: int) -> Released:
    """The model withheld; the researcher reads the rules, the checker ``reason``."""
    rule = RuleOutcome(
        "model",
        f"coefficients are released only with at least {minimum} residual degrees of freedom, full rank and "
        "convergence",
        threshold=minimum,
    )
    empty = pa.table(
        {
            "term": pa.array([], pa.string()),
            "estimate": pa.array([], pa.float64()),
            "std_error": pa.array([], pa.float64()),
        }
    )
    report = replace(released.report, kind="model", columns=empty.column_names)
    done = add_rules(replace(released, table=empty, report=report), [rule], rows=0)
    return withhold(done, {"rule": "model", "explanation": reason})
