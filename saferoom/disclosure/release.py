"""The last step before anything leaves: strip hidden columns, re-check every cell, write the reports.

Each released output has two reports. The researcher's (``report``) says which rules ran and what they do, and
nothing that depends on the data beyond the released table itself: no count of suppressed cells, no reason why
an output was withheld (a withheld output reads like one whose every cell was suppressed), since each such count
or reason is one more bit about the people behind it. The output checker's view (``check``) has everything:
the same report with its counts, every subset check's counts, what was withheld and why, and risk flags in the
manner of ACRO (cells under the threshold, dominance, quantiles, differences between outputs, models' residual
degrees of freedom).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from saferoom.disclosure.dp import Noised
from saferoom.disclosure.levels import CONTRIBUTORS_PREFIX, HIDDEN_PREFIX, Protected
from saferoom.errors import ReleaseRefused

__all__ = [
    "ReleaseReport",
    "Released",
    "RuleOutcome",
    "add_rules",
    "flag",
    "for_researcher",
    "plain",
    "release",
    "subset_failures",
    "value_report",
    "withhold",
]


@dataclass(frozen=True)
class RuleOutcome:
    """What one disclosure-control rule did to one output."""

    rule: str
    explanation: str
    cells_suppressed: int = 0
    threshold: int | None = None
    datasets: list[str] = field(default_factory=list)
    # Differential privacy: per released column, the mechanism, epsilon, delta, noise scale, sensitivity and
    # the half-width of a 95% interval for the noise (``ci95``), so that researchers can read the numbers.
    noise: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ReleaseReport:
    """Per output: what was released and what disclosure control did (readable by a human output checker)."""

    output: str
    kind: str  # "aggregate" | "public"
    rows: int
    columns: list[str]
    suppressed_cells: int
    rules: list[RuleOutcome]

    def to_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ReleaseReport:
        rules = [RuleOutcome(**r) for r in data.get("rules", [])]
        return cls(
            output=data["output"],
            kind=data["kind"],
            rows=data["rows"],
            columns=list(data["columns"]),
            suppressed_cells=data["suppressed_cells"],
            rules=rules,
        )


@dataclass(frozen=True)
class Released:
    table: pa.Table
    report: ReleaseReport  # the researcher's: no count or reason that depends on the data
    protected: Protected | None = None  # what was released (for post-processing such as model fits)
    # The output checker's view (JSON-serialisable): "report" (with every count), "withheld", "subsets",
    # "flags", and whatever later steps add (secondary suppression, differencing, marks, models).
    check: dict[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """A key value as JSON can hold it (for the checker's view)."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def for_researcher(report: ReleaseReport) -> ReleaseReport:
    """``report`` without its counts of suppressed cells (exact data)."""
    rules = [replace(r, cells_suppressed=0) for r in report.rules]
    return replace(report, suppressed_cells=0, rules=rules)


def flag(released: Released, name: str, **data: Any) -> Released:
    """``released`` with one more risk flag for the output checker."""
    check = dict(released.check)
    check["flags"] = [*check.get("flags", []), {"flag": name, **data}]
    return replace(released, check=check)


def add_rules(released: Released, rules: list[RuleOutcome], suppressed: int = 0, rows: int | None = None) -> Released:
    """``released`` with more rules in both reports: ``rules`` carry their counts, the researcher sees none."""
    full = ReleaseReport.from_data(released.check["report"]) if "report" in released.check else released.report
    rows = released.table.num_rows if rows is None else rows
    full = replace(
        full,
        rows=rows,
        columns=list(released.report.columns),
        suppressed_cells=full.suppressed_cells + suppressed,
        rules=[*full.rules, *rules],
    )
    known = {(r.rule, r.explanation) for r in released.report.rules}
    public = [replace(r, cells_suppressed=0) for r in rules if (r.rule, r.explanation) not in known]
    report = replace(released.report, rows=rows, rules=[*released.report.rules, *public])
    return replace(released, report=report, check={**released.check, "report": full.to_data()})


def withhold(released: Released, reason: dict[str, Any]) -> Released:
    """``released`` with no cell left; only the checker learns why (``reason``)."""
    empty = released.table.slice(0, 0)
    check = {**released.check, "withheld": [*released.check.get("withheld", []), reason]}
    if "report" in check:
        check["report"] = {**check["report"], "rows": 0}
    report = replace(released.report, rows=0)
    return replace(released, table=empty, report=report, check=check)


def _recheck(protected: Protected, table: pa.Table) -> None:
    """Defence in depth: every contributor count that reached the release must meet its threshold."""
    for name in table.column_names:
        if not name.startswith(CONTRIBUTORS_PREFIX):
            continue
        # A contributor column the rewrite does not know fails closed.
        below = pc.sum(pc.less(table.column(name), protected.minimums.get(name, 2**62))).as_py()
        if below:
            raise ReleaseRefused(f"output {protected.name!r} failed the release check; nothing was released")
    if protected.kind == "public" and any(n.startswith(HIDDEN_PREFIX) for n in table.column_names):
        raise ReleaseRefused(f"output {protected.name!r} failed the release check; nothing was released")


def subset_failures(protected: Protected, counts: Mapping[str, tuple[int, int]]) -> list[str]:
    """The subset checks of ``protected`` that failed (a missing result fails too)."""
    failed = []
    for label, check in protected.subsets.items():
        kept, left = counts.get(label, (-1, -1))
        if any(n < 0 or 0 < n < check.minimum for n in (kept, left)):
            failed.append(label)
    return failed


def release(
    protected: Protected,
    table: pa.Table,
    dropped: Mapping[str, int],
    subsets: Mapping[str, tuple[int, int]] | None = None,
    noised: Mapping[str, Noised] | None = None,
) -> Released:
    """The releasable form of an executed output, and its report.

    ``subsets`` holds the (kept, left out) unit counts of the subset checks; an output fed by a filter or head
    that keeps or leaves out fewer people than the policy's minimum (but more than none) is withheld whole.
    ``noised`` holds the differentially private aggregates the output was computed from.
    """
    _recheck(protected, table)
    failed = subset_failures(protected, subsets or {})
    visible = [n for n in table.column_names if not n.startswith(HIDDEN_PREFIX)]
    out = table.select(visible)
    # Decode categories so results read the same whatever the storage.
    out = pa.table(
        [pc.cast(c, c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in out.columns],
        names=out.column_names,
    )
    rules: list[RuleOutcome] = []
    for rule in protected.thresholds.values():
        cells = int(dropped.get(rule.label, 0))
        units = " / ".join(dict.fromkeys(rule.units))
        rules.append(
            RuleOutcome(
                rule="min_contributors",
                explanation=(
                    f"cells with fewer than {rule.minimum} distinct {units} ({', '.join(rule.datasets)}) are "
                    "suppressed, key included"
                ),
                cells_suppressed=cells,
                threshold=rule.minimum,
                datasets=list(rule.datasets),
            )
        )
    for check in protected.dominance.values():
        who = "largest contributor holds" if check.n == 1 else f"{check.n} largest contributors hold"
        rules.append(
            RuleOutcome(
                rule="dominance",
                explanation=(
                    f"cells where the {who} more than {check.k:.0%} of {', '.join(check.outputs)} ((n,k) rule), "
                    f"or where the rest is below {check.p:.0%} of the largest (p% rule), are suppressed, key included"
                ),
                cells_suppressed=int(dropped.get(check.label, 0)),
                datasets=list(check.datasets),
            )
        )
    for quantile in protected.quantiles.values():
        rules.append(
            RuleOutcome(
                rule="quantile",
                explanation=(
                    f"cells where fewer than {quantile.minimum} people have a value at or below "
                    f"{', '.join(quantile.outputs)}, or at or above it, are suppressed, key included"
                ),
                cells_suppressed=int(dropped.get(quantile.label, 0)),
                threshold=quantile.minimum,
                datasets=list(quantile.datasets),
            )
        )
    if protected.subsets:
        checks = list(protected.subsets.values())
        minimum = max(c.minimum for c in checks)
        rules.append(
            RuleOutcome(
                rule="subset",
                explanation=(
                    f"every filter, head, join and condition (when, a computed key or flag) over personal rows "
                    f"keeps and leaves out either nobody or at least {minimum} people, or the output is withheld "
                    "(it then reads like one whose every cell was suppressed)"
                ),
                threshold=minimum,
                datasets=sorted({c.dataset for c in checks}),
            )
        )
    if protected.selections:
        minimum = max(s.minimum for s in protected.selections)
        rules.append(
            RuleOutcome(
                rule="differencing",
                explanation=(
                    "every released cell, filter and condition is compared with those of the other outputs of "
                    f"this job: where two sets of people differ by fewer than {minimum} (and more than none), the "
                    "later output is withheld"
                ),
                threshold=minimum,
                datasets=sorted({s.dataset for s in protected.selections}),
            )
        )
    for label, agg in protected.noisy.items():
        done = (noised or {}).get(label)
        if done is None:
            raise ReleaseRefused(f"output {protected.name!r} failed the release check; nothing was released")
        by = f" by {', '.join(agg.keys)}" if agg.keys else ""
        rules.append(
            RuleOutcome(
                rule="differential_privacy",
                explanation=(
                    f"aggregate of {agg.dataset}{by} released with noise (each person contributes at most "
                    f"{agg.contributions} row{'s' if agg.contributions > 1 else ''}); cells appear only if their "
                    f"noisy count reaches {done.threshold} (how many did not is not reported: it is exact); "
                    "everything computed from it afterwards is post-processing"
                ),
                threshold=done.threshold,
                datasets=[agg.dataset],
                noise=done.noise,
            )
        )
    for dataset, columns in protected.clamped.items():
        rules.append(
            RuleOutcome(
                rule="clamp",
                explanation=(
                    f"{', '.join(columns)} of {dataset} clamped to the public bounds declared in the catalog before use"
                ),
                datasets=[dataset],
            )
        )
    if protected.kind == "public":
        rules.append(RuleOutcome("public", "only public datasets: released row by row"))
    full = ReleaseReport(
        output=protected.name,
        kind=protected.kind,
        rows=out.num_rows,
        columns=out.column_names,
        suppressed_cells=sum(r.cells_suppressed for r in rules),
        rules=rules,
    )
    counts = subsets or {}
    view: dict[str, Any] = {
        "output": protected.name,
        "report": full.to_data(),
        "withheld": [],
        "subsets": [
            {
                "check": label,
                "what": c.what,
                "dataset": c.dataset,
                "kept": counts.get(label, (-1, -1))[0],
                "left": counts.get(label, (-1, -1))[1],
                "minimum": c.minimum,
                "passed": label not in failed,
            }
            for label, c in protected.subsets.items()
        ],
        "flags": [],
    }
    released = Released(out, for_researcher(full), protected, view)
    for r in rules:
        if r.cells_suppressed and r.rule in ("min_contributors", "dominance", "quantile"):
            name = {"min_contributors": "cells_under_threshold", "dominance": "dominance", "quantile": "quantile"}
            released = flag(released, name[r.rule], cells=r.cells_suppressed, explanation=r.explanation)
    for quantile in protected.quantiles.values():  # ACRO flags quantiles in the tails for the checker
        extreme = [(n, q) for n, q in zip(quantile.outputs, quantile.qs, strict=False) if q < 0.1 or q > 0.9]
        if extreme:
            released = flag(released, "extreme_quantile", columns=[{"column": n, "q": q} for n, q in extreme])
    for label in failed:
        c = protected.subsets[label]
        kept, left = counts.get(label, (-1, -1))
        released = withhold(
            released,
            {
                "rule": "subset",
                "check": label,
                "explanation": (
                    f"a {c.what} over {c.dataset} keeps {kept} and leaves out {left} people: fewer than {c.minimum} "
                    "(and more than none) could single someone out by difference"
                ),
            },
        )
    return released


def value_report(name: str) -> ReleaseReport:
    """The report of a plain value returned by an algorithm: computed without data, released as it is."""
    rule = RuleOutcome("value", "computed by the algorithm from its parameters, never from data: released as is")
    return ReleaseReport(output=name, kind="value", rows=1, columns=[], suppressed_cells=0, rules=[rule])
