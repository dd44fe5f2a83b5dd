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
check; the group-by lists only pairs that share.

Everything is computed in full over the data (the same plans and the same work whatever the data), in the same
engine run as the outputs, and admitted beforehand (``cost.admit_job`` analyses ``plans``). What it does not see: a
unit in several cells of one selection is counted in one of them only (when units may have several rows: a join or
a multi-row dataset), so overlaps there are undercounted; sets made by arithmetic rather than by conditions
(``income * (person_id - N)``) select everyone and are left to dominance and the output checker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from saferoom.disclosure.cells import Key, cell_keys
from saferoom.disclosure.levels import Protected, Selection
from saferoom.disclosure.release import plain
from saferoom.engine.plan import (
    MAX_DEPTH,
    AggExpr,
    Aggregate,
    Call,
    Col,
    Expr,
    Filter,
    Join,
    Limit,
    Lit,
    Node,
    Project,
    Scan,
    Sort,
)
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


def _prefix(i: int) -> str:
    return f"__s{i}"


def _within(fine: Selection, coarse: Selection) -> bool:
    """Whether each cell of ``fine`` lies within the cell of ``coarse`` it projects to, from the plan alone: the
    rows of ``fine`` are those of ``coarse`` or fewer (through filters, heads and sorts), with ``coarse``'s keys
    passed on unchanged, and ``coarse``'s keys are among ``fine``'s (a margin, a filter's rows, a subgroup)."""
    if fine.rows is None or coarse.rows is None or not set(coarse.names) <= set(fine.names):
        return False
    node: Node = fine.rows
    for _ in range(MAX_DEPTH):
        if node is coarse.rows:
            return True
        passes = isinstance(node, Project) and all((k, Col(k)) in node.columns for k in coarse.names)
        if not (passes or isinstance(node, Filter | Sort | Limit)):
            return False
        node = node.input  # type: ignore[union-attr]
    return False


def _nested(s: Selection, t: Selection) -> tuple[Selection, Selection] | None:
    """(coarse, fine) when one of two selections' cells lie within the other's (``_within``)."""
    if "everyone" in (s.what, t.what):
        return None
    if _within(t, s):
        return s, t
    if _within(s, t):
        return t, s
    return None


def _joined(chosen: list[Selection]) -> list[tuple[int, int]]:
    """The pairs whose shared units only a join can count (neither the public everyone nor nested)."""
    return [
        (i, j)
        for i, s in enumerate(chosen)
        for j, t in enumerate(chosen[i + 1 :], start=i + 1)
        if s.dataset == t.dataset and "everyone" not in (s.what, t.what) and _nested(s, t) is None
    ]


MAX_INLINE_DEPTH = 60  # deeper key or membership expressions are compared by a join instead


def _substitute(expr: Expr, columns: Mapping[str, Expr]) -> Expr:
    """``expr`` with each column replaced by its definition in ``columns`` (KeyError if one has none)."""
    if isinstance(expr, Col):
        return columns[expr.name]
    if isinstance(expr, Call):
        return Call(expr.fn, tuple(_substitute(a, columns) for a in expr.args))
    return expr


def _depth(expr: Expr) -> int:
    return 1 + max((_depth(a) for a in expr.args), default=0) if isinstance(expr, Call) else 1


def _inline(s: Selection) -> tuple[Project, list[Expr], Expr] | None:
    """A selection's cell keys and membership as expressions over the projection of its dataset's scan (the
    rows it groups come from there through projections, filters and sorts), or None."""
    if s.rows is None or s.what == "everyone":
        return None
    keys: list[Expr] = [Col(n) for n in s.names]
    flag: Expr = Lit(True) if s.predicate is None else Call("case", (s.predicate, Lit(True), Lit(False)))
    node: Node = s.rows
    try:
        for _ in range(MAX_DEPTH):
            if isinstance(node, Project) and isinstance(node.input, Scan):
                if max((_depth(e) for e in (*keys, flag)), default=0) > MAX_INLINE_DEPTH:
                    return None
                return node, keys, flag
            if isinstance(node, Filter):
                flag = Call("and", (flag, Call("case", (node.predicate, Lit(True), Lit(False)))))
            elif isinstance(node, Project):
                columns = dict(node.columns)
                keys = [_substitute(k, columns) for k in keys]
                flag = _substitute(flag, columns)
            elif not isinstance(node, Sort):
                return None
            node = node.input
    except KeyError:
        return None
    return None


def plans(protected: Mapping[str, Protected]) -> dict[str, Node]:
    """The plans the differencing check needs: each selection's cell sizes, and each pair's shared units.

    Sizes come from plans the outputs and their checks compute anyway (each cell's units, a filter's kept
    units). A pair with everyone (a cell's units are all among them) or a nested pair (a margin and its table,
    a filter and the cells of its rows) needs nothing more. For the others, when both selections' rows come
    from the same scan through projections, filters and sorts, one projection of that scan computes every
    selection's cell keys and membership per row (``_inline``), and each pair is one group-by of it; otherwise
    one wide table lists every unit with, for each selection, the keys of its cell and a flag (null: not in
    it), by a left join on the unit each (each selection listing a unit once: ``owners``)."""
    chosen = selections(protected)
    out: dict[str, Node] = {}
    for s in chosen:
        names = tuple(f"__k{i}" for i in range(s.keys))
        out[f"size:{s.label}"] = s.sizes or Aggregate(s.members, names, (("__n", AggExpr("count")),))
    pairs = _joined(chosen)
    involved = sorted({i for pair in pairs for i in pair})
    inline = {i: _inline(chosen[i]) for i in involved}
    bases: dict[int, tuple[Project, list[int]]] = {}
    for i, found in inline.items():
        if found is not None:
            bases.setdefault(id(found[0]), (found[0], []))[1].append(i)
    rowwise: dict[int, Node] = {}  # selection -> the projection of its scan that lists its cells
    for base, members in bases.values():
        unit = base.columns[-1][0]  # the rewrite's scan projection ends with the hidden unit column
        columns: list[tuple[str, Expr]] = [("__m", Col(unit))]
        for i in members:
            found = inline[i]
            assert found is not None
            _, exprs, flag = found
            columns += [(f"{_prefix(i)}k{j}", e) for j, e in enumerate(exprs)]
            columns.append((f"{_prefix(i)}in", Call("case", (flag, Lit(1), Lit(None)))))
        listing = Project(base, tuple(columns))
        rowwise.update(dict.fromkeys(members, listing))
    wide: dict[str, Node] = {}
    for i in involved:
        if i not in rowwise:
            _add_to_wide(wide, chosen, i)
    for i, j in pairs:
        s, t = chosen[i], chosen[j]
        keys = (f"{_prefix(i)}in", *_keys(i, s), f"{_prefix(j)}in", *_keys(j, t))
        if i in rowwise and j in rowwise and rowwise[i] is rowwise[j]:
            counted = AggExpr("count") if s.unique and t.unique else AggExpr("count_distinct", Col("__m"))
            out[f"pair:{s.label}:{t.label}"] = Aggregate(rowwise[i], keys, (("__i", counted),))
            continue
        for k in (i, j):  # a pair across two listings: both go in the dataset's wide table
            if rowwise.pop(k, None) is not None:
                _add_to_wide(wide, chosen, k)
        out[f"pair:{s.label}:{t.label}"] = Aggregate(wide[s.dataset], keys, (("__i", AggExpr("count")),))
    return out


def _add_to_wide(wide: dict[str, Node], chosen: list[Selection], i: int) -> None:
    """Left-join selection ``i``'s units, with the keys of their cells and a flag, onto its dataset's table of
    every unit."""
    s = chosen[i]
    if s.dataset not in wide:
        everyone = next(e for e in chosen if e.dataset == s.dataset and e.what == "everyone")
        wide[s.dataset] = Project(everyone.members, (("__m", Col("__m")),))
    p = _prefix(i)
    listed = s.owners if s.owners is not None else s.members
    named: list[tuple[str, Expr]] = [(f"{p}k{j}", Col(f"__k{j}")) for j in range(s.keys)]
    columns: tuple[tuple[str, Expr], ...] = (*named, (f"{p}in", Lit(1)), ("__m", Col("__m")))
    wide[s.dataset] = Join(wide[s.dataset], Project(listed, columns), ("__m",), "left")


def _keys(i: int, s: Selection) -> tuple[str, ...]:
    return tuple(f"{_prefix(i)}k{j}" for j in range(s.keys))


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

    def check(s: Selection, a: Key, t: Selection, b: Key, shared: int) -> None:
        if _shown(s, a, sizes, released) and _shown(t, b, sizes, released):
            delta = sizes[s.label].get(a, 0) + sizes[t.label].get(b, 0) - 2 * shared
            minimum = max(s.minimum, t.minimum)
            if 0 < delta < minimum:
                found.append(Difference(s.label, a, t.label, b, delta, minimum, s.dataset))

    joined = set(_joined(chosen))
    for i, s in enumerate(chosen):
        for j, t in enumerate(chosen[i + 1 :], start=i + 1):
            if s.dataset != t.dataset:
                continue
            if s.what == "everyone":  # every cell of t lies within everyone
                for b, n in sizes[t.label].items():
                    check(s, (), t, b, n)
            elif (i, j) not in joined:  # nested: each finer cell lies within the coarser cell it projects to
                coarse, fine = _nested(s, t) or (s, t)
                positions = [fine.names.index(n) for n in coarse.names]
                for b, n in sizes[fine.label].items():
                    a = tuple(b[k] for k in positions)
                    if a in sizes[coarse.label]:
                        if coarse is s:
                            check(s, a, t, b, n)
                        else:
                            check(s, b, t, a, n)
            else:
                table = results[f"pair:{s.label}:{t.label}"]
                a_keys = cell_keys(table, _keys(i, s))
                b_keys = cell_keys(table, _keys(j, t))
                flags = zip(
                    table.column(f"{_prefix(i)}in").to_pylist(),
                    table.column(f"{_prefix(j)}in").to_pylist(),
                    strict=True,
                )
                shared_counts = table.column("__i").to_pylist()
                for (in_a, in_b), a, b, shared in zip(flags, a_keys, b_keys, shared_counts, strict=True):
                    if in_a is not None and in_b is not None:
                        check(s, a, t, b, int(shared))
    # In the order of the plans, then of the cells' keys: whatever order an engine returned the groups in.
    order = {s.label: i for i, s in enumerate(chosen)}
    return sorted(found, key=lambda d: (order[d.first], order[d.second], repr(d.first_cell), repr(d.second_cell)))


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
            "first_cell": [plain(v) for v in d.first_cell],
            "second": d.second,
            "second_cell": [plain(v) for v in d.second_cell],
            "differ_by": d.delta,
            "minimum": d.minimum,
            "dataset": d.dataset,
        }
        for d in differences
    ]
