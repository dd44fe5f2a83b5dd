"""The release of one run's outputs, round by round: what the engine runs, and in which order.

    round 1..n   the exact statistics of the differentially private aggregates (``NoisyAggregate``), noised
                 by the server within the run's budget (``accounting``); aggregates that read other noisy
                 tables wait for them
    last round   every output plan, its subset checks, the cell lists that margins and marks need and the
                 member counts of the differencing check, in one engine run over the datasets and the noisy
                 tables; then each output is released (``release``), secondary suppression applied across
                 outputs, outputs that differ from another by a few people withheld (``differencing``), cells
                 marked

``execute(work, inputs)`` is the engine: it runs ``[name, plan]`` pairs over the datasets and the supplied
tables and returns each table with its Threshold drop counts. Every decision here is taken on results the
engine computed in full (no early exit), and the order of the rounds is fixed by the plans alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import accounting, differencing, dp
from saferoom.disclosure.cells import Key, cell_keys
from saferoom.disclosure.dp import Noised, NoisyAggregate
from saferoom.disclosure.levels import Protected
from saferoom.disclosure.marks import mark_cells, marked
from saferoom.disclosure.release import Released, flag, release, withhold
from saferoom.disclosure.secondary import margins, suppress_secondary
from saferoom.engine import plan
from saferoom.errors import InvalidPlan

__all__ = ["Execute", "release_all", "release_noisy"]

Execute = Callable[[list[list[Any]], dict[str, pa.Table]], dict[str, tuple[pa.Table, dict[str, int]]]]


def release_all(
    protected: dict[str, Protected],
    manifest: Manifest,
    execute: Execute,
    epsilon: Mapping[str, float],
    pad: dp.Pad | None = None,
) -> dict[str, Released]:
    """Execute protected outputs, their subset checks and margin cell lists in one engine run (after their DP
    aggregates have been computed and noised), and release each.

    ``execute(work, inputs)`` runs ``[name, plan]`` pairs over the datasets and the supplied (released) tables;
    ``pad`` is told the worst case of release work padded once its amount is public (``dp.noise``).
    """
    if not protected:
        return {}
    noisy = {label: agg for p in protected.values() for label, agg in p.noisy.items()}
    noised = release_noisy(noisy, manifest, execute, epsilon, pad) if noisy else {}
    checks = {label: c for p in protected.values() for label, c in p.subsets.items()}
    with_margins = margins(protected)  # tables whose margins are released too: their full cell lists
    listed = list(dict.fromkeys([*with_margins, *marked(protected)]))  # outputs that need their cell lists
    work = [[name, plan.to_data(p.plan)] for name, p in protected.items()]
    work += [[label, plan.to_data(check.plan)] for label, check in checks.items()]
    work += [[f"cells:{name}", plan.to_data(protected[name].table.cells)] for name in listed]  # type: ignore[union-attr]
    compared = differencing.plans(protected)
    work += [[label, plan.to_data(node)] for label, node in compared.items()]
    results = execute(work, {label: n.table for label, n in noised.items()})
    subsets = {label: _subset_counts(results[label][0]) for label in checks}
    released = {
        name: release(p, results[name][0], results[name][1], subsets, {label: noised[label] for label in p.noisy})
        for name, p in protected.items()
    }
    cells = {name: results[f"cells:{name}"][0] for name in listed}
    if with_margins:
        released = suppress_secondary(released, protected, cells)
    released = _differences(released, protected, {label: results[label][0] for label in compared})
    return mark_cells(released, protected, cells)


def _differences(
    released: dict[str, Released], protected: Mapping[str, Protected], results: Mapping[str, pa.Table]
) -> dict[str, Released]:
    """Withhold every output holding the later of two released sets of people that differ by a few."""
    out = dict(released)
    chosen = differencing.selections(protected)
    labels = {name: {s.label for s in p.selections} for name, p in protected.items()}
    holders = {s.label: [name for name in protected if s.label in labels[name]] for s in chosen}
    shown: dict[str, set[Key] | None] = {}
    for s in chosen:
        shown[s.label] = None
        for name, p in protected.items():
            if s.what == "cells" and p.table is not None and s.node == id(p.plan):
                shown[s.label] = set(cell_keys(out[name].table, s.names))
    withheld: set[str] = {name for name, r in out.items() if r.check.get("withheld")}
    found = differencing.find(protected, results, shown)
    for difference in found:
        first, second = holders[difference.first], holders[difference.second]
        public = difference.first.startswith("everyone_")
        if (not public and all(n in withheld for n in first)) or all(n in withheld for n in second):
            continue  # one of the two sets is not released any more
        [entry] = differencing.report([difference])
        for name in second:
            if name not in withheld:
                reason = {"rule": "differencing", **entry, "with_outputs": first}
                out[name] = withhold(out[name], reason)
                withheld.add(name)
    mine: dict[str, list[dict[str, Any]]] = {}  # each output's first 100 differences, in the order found
    for difference in found:
        wanting = [
            n
            for n in dict.fromkeys(holders[difference.first] + holders[difference.second])
            if len(mine.get(n, ())) < 100
        ]
        if wanting:
            [entry] = differencing.report([difference])
            for name in wanting:
                mine.setdefault(name, []).append(entry)
    for name in protected:
        if name in mine:
            out[name] = flag(out[name], "differences_between_outputs", pairs=mine[name])
    return out


def release_noisy(
    noisy: dict[str, NoisyAggregate],
    manifest: Manifest,
    execute: Execute,
    epsilon: Mapping[str, float],
    pad: dp.Pad | None = None,
) -> dict[str, Noised]:
    """Compute the exact statistics of every DP aggregate and release them with noise.

    Each spends its share of the run's budget (``accounting.split``). Aggregates that read other DP aggregates
    run in a later round, on their noisy tables.
    """
    shares = accounting.split(noisy, manifest, epsilon)
    done: dict[str, Noised] = {}
    pending = dict(noisy)
    while pending:
        ready = {
            label: agg
            for label, agg in pending.items()
            if all(x in done for x in _inputs_of(agg.exact, *agg.histograms.values()))
        }
        if not ready:
            raise InvalidPlan("differentially private aggregates depend on each other in a cycle")
        work = [[label, plan.to_data(agg.exact)] for label, agg in ready.items()]
        for label, agg in ready.items():
            work += [[f"{label}:{h}", plan.to_data(node)] for h, node in agg.histograms.items()]
        results = execute(work, {label: n.table for label, n in done.items()})
        for label, agg in ready.items():
            histograms = {h: results[f"{label}:{h}"][0] for h in agg.histograms}
            share = shares[label]
            done[label] = dp.noise(agg, results[label][0], histograms, share.epsilon, share.delta, pad)
            del pending[label]
    return done


def _inputs_of(*roots: plan.Node) -> set[str]:
    return {n.label for root in roots for n in plan.walk(root) if isinstance(n, plan.Input)}


def _subset_counts(table: pa.Table) -> tuple[int, int]:
    """(kept, left out) from a subset check's one-row result; anything unexpected fails the check."""
    if table.num_rows != 1 or set(table.column_names) != {"kept", "left"}:
        return (-1, -1)
    kept, left = table.column("kept")[0].as_py(), table.column("left")[0].as_py()
    return (int(kept or 0), int(left or 0))
