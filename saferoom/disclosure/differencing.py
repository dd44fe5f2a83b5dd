"""Differencing across the outputs of one job: two released sets of people that differ by a few.

Every protected aggregate's cells, and every filter's and condition's rows over personal data, select a set of
people (a ``Selection``), and so does a whole personal dataset (its number of units is public); what is released
about two sets A and B of the same privacy unit gives away what is released about their difference. Filters,
computed keys, margins, heads and trackers (``district == "Siming" | person_id == N`` beside ``district ==
"Siming"``) all come down to this, whichever node made the sets. So the engine computes, for every pair of
selections over the same dataset, how many units each pair of their cells shares (a join of their member lists on
the unit), and each cell's size; a pair of released cells with 0 < |A Δ B| = |A| + |B| - 2 |A ∩ B| <
``min_contributors`` is a disclosure, and every output that holds the later of the two selections is withheld whole
(as the subset rule withholds). Cells that share no unit differ by at least two released cells' sizes and need no
check; the join lists only pairs that share.

Everything is computed in full over the data (the same plans and the same work whatever the data), in the same
engine run as the outputs, and admitted beforehand (``cost.admit_job`` analyses ``plans``). What it does not see: a
unit in several cells of one selection is listed by one of them when it stands on the second side of a pair (when
units may have several rows: a join or a multi-row dataset); sets made by arithmetic rather than by conditions
(``income * (person_id - N)``) select everyone and are left to dominance and the output checker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from saferoom.disclosure.cells import Key, cell_keys
from saferoom.disclosure.levels import Protected, Selection
from saferoom.engine.plan import AggExpr, Aggregate, Col, Join, Node, Project
from saferoom.errors import ReleaseRefused

__all__ = ["MAX_SELECTIONS", "Difference", "find", "plans", "selections"]

MAX_SELECTIONS = 48  # per job: the pairs grow with its square


@dataclass(frozen=True)
class Difference:
    """Two released cells whose member sets differ by ``delta`` units, fewer than the minimum."""

    first: str  # selection label
    first_cell: Key
    second: str
    second_cell: Key
    delta: int
    minimum: int
    dataset: str


def selections(protected: Mapping[str, Protected]) -> list[Selection]:
    """Every selection of the job once, in the order of the outputs (then of the rewrite)."""
    found: dict[str, Selection] = {}
    for p in protected.values():  # everyone first: a public set is never the one withheld
        for s in p.selections:
            if s.what == "everyone":
                found.setdefault(s.label, s)
    for p in protected.values():
        for s in p.selections:
            found.setdefault(s.label, s)
    if len(found) > MAX_SELECTIONS:
        raise ReleaseRefused(
            f"this job selects {len(found)} sets of people (cell tables, filters and conditions over personal rows); "
            f"at most {MAX_SELECTIONS} can be compared with each other for differencing: split it into several jobs"
        )
    return list(found.values())


def _renamed(node: Node, keys: int, prefix: str) -> Node:
    return Project(node, (*((f"{prefix}{i}", Col(f"__k{i}")) for i in range(keys)), ("__m", Col("__m"))))


def plans(protected: Mapping[str, Protected]) -> dict[str, Node]:
    """The plans the differencing check needs: each selection's cell sizes, and each pair's shared units."""
    chosen = selections(protected)
    out: dict[str, Node] = {}
    for s in chosen:
        keys = tuple(f"__k{i}" for i in range(s.keys))
        out[f"size:{s.label}"] = Aggregate(s.members, keys, (("__n", AggExpr("count")),))
    for i, s in enumerate(chosen):
        for t in chosen[i + 1 :]:
            if s.dataset != t.dataset:
                continue
            left = _renamed(s.members, s.keys, "__a")
            right = _renamed(t.owners if t.owners is not None else t.members, t.keys, "__b")
            keys = (*(f"__a{j}" for j in range(s.keys)), *(f"__b{j}" for j in range(t.keys)))
            shared = Aggregate(Join(left, right, ("__m",), "inner"), keys, (("__i", AggExpr("count")),))
            out[f"pair:{s.label}:{t.label}"] = shared
    return out


def _sizes(table: pa.Table, keys: int) -> dict[Key, int]:
    names = tuple(f"__k{i}" for i in range(keys))
    return dict(zip(cell_keys(table, names), (int(n) for n in table.column("__n").to_pylist()), strict=True))


def find(
    protected: Mapping[str, Protected],
    results: Mapping[str, pa.Table],
    released: Mapping[str, set[Key] | None],
) -> list[Difference]:
    """The pairs of released cells that differ by fewer than the minimum, from the computed ``plans``.

    ``released`` maps a cells selection's label to the keys of its cells that were released, or None when the
    selection is not an output as it stands (then every cell of at least the minimum counts as released)."""
    chosen = selections(protected)
    sizes = {s.label: _sizes(results[f"size:{s.label}"], s.keys) for s in chosen}
    found: list[Difference] = []
    for i, s in enumerate(chosen):
        for t in chosen[i + 1 :]:
            label = f"pair:{s.label}:{t.label}"
            if label not in results:
                continue
            table = results[label]
            a_keys = cell_keys(table, tuple(f"__a{j}" for j in range(s.keys)))
            b_keys = cell_keys(table, tuple(f"__b{j}" for j in range(t.keys)))
            minimum = max(s.minimum, t.minimum)
            for a, b, shared in zip(a_keys, b_keys, table.column("__i").to_pylist(), strict=True):
                if not (_shown(s, a, sizes, released) and _shown(t, b, sizes, released)):
                    continue
                delta = sizes[s.label].get(a, 0) + sizes[t.label].get(b, 0) - 2 * int(shared)
                if 0 < delta < minimum:
                    found.append(Difference(s.label, a, t.label, b, delta, minimum, s.dataset))
    return found


def _shown(
    s: Selection, key: Key, sizes: Mapping[str, dict[Key, int]], released: Mapping[str, set[Key] | None]
) -> bool:
    """Whether a selection's cell may be released: filters' and conditions' rows always count, and everyone."""
    if s.what != "cells":
        return True
    shown = released.get(s.label)
    if shown is not None:
        return key in shown
    return sizes[s.label].get(key, 0) >= s.minimum


def report(differences: list[Difference]) -> list[dict[str, Any]]:
    """The differences, JSON-serialisable, for the output checker."""
    return [
        {
            "first": d.first,
            "first_cell": [_plain(v) for v in d.first_cell],
            "second": d.second,
            "second_cell": [_plain(v) for v in d.second_cell],
            "differ_by": d.delta,
            "minimum": d.minimum,
            "dataset": d.dataset,
        }
        for d in differences
    ]


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
