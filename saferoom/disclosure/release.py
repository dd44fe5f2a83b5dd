"""The last step before anything leaves: strip hidden columns, re-check every cell, write the report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from saferoom.disclosure.dp import Noised
from saferoom.disclosure.levels import CONTRIBUTORS_PREFIX, HIDDEN_PREFIX, Protected
from saferoom.errors import ReleaseRefused

__all__ = ["ReleaseReport", "Released", "RuleOutcome", "release", "subset_failures", "value_report"]


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
    report: ReleaseReport
    protected: Protected | None = None  # what was released (for post-processing such as model fits)


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
    if failed:
        checks = [protected.subsets[label] for label in failed]
        datasets = sorted({c.dataset for c in checks})
        minimum = max(c.minimum for c in checks)
        withheld = RuleOutcome(
            rule="subset",
            explanation=(
                f"withheld: a {checks[0].what} over {', '.join(datasets)} keeps or leaves out fewer than {minimum} "
                "people (and more than none), which could single someone out by difference"
            ),
            threshold=minimum,
            datasets=datasets,
        )
        visible = [n for n in table.column_names if not n.startswith(HIDDEN_PREFIX)]
        empty = table.select(visible).slice(0, 0)
        report = ReleaseReport(protected.name, protected.kind, 0, empty.column_names, 0, [withheld])
        return Released(empty, report, protected)
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
    if protected.subsets:
        checks = list(protected.subsets.values())
        minimum = max(c.minimum for c in checks)
        rules.append(
            RuleOutcome(
                rule="subset",
                explanation=(
                    f"every filter or head over personal rows keeps and leaves out either nobody or at least "
                    f"{minimum} people"
                ),
                threshold=minimum,
                datasets=sorted({c.dataset for c in checks}),
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
    report = ReleaseReport(
        output=protected.name,
        kind=protected.kind,
        rows=out.num_rows,
        columns=out.column_names,
        suppressed_cells=sum(r.cells_suppressed for r in rules),
        rules=rules,
    )
    return Released(out, report, protected)


def value_report(name: str) -> ReleaseReport:
    """The report of a plain value returned by an algorithm: computed without data, released as it is."""
    rule = RuleOutcome("value", "computed by the algorithm from its parameters, never from data: released as is")
    return ReleaseReport(output=name, kind="value", rows=1, columns=[], suppressed_cells=0, rules=[rule])
