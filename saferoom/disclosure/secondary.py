"""Secondary (complementary) suppression: a suppressed cell must not be recoverable from a margin released in
the same result.

When one output groups some rows by keys K and another groups the very same rows by a subset of K (a margin:
row totals, column totals, a grand total), a margin cell covering exactly one suppressed cell would give that
cell away by subtraction. So, until no margin cell covers exactly one suppressed cell of a table, the server
suppresses one more released cell of the table in that group (the first by key order: the choice does not
look at values), or, if the group has no released cell left, the margin cell itself. The researcher's report says
that the rule ran on the table and its margins (whether or not it suppressed anything: how many cells it took
is exact data); the checker's view has the cells. Margins computed from other rows (another filter, a computed
key) are not recognised here: the differencing check (``differencing``) catches what they give away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pyarrow as pa

from saferoom.disclosure.cells import Key, cell_keys
from saferoom.disclosure.levels import Protected
from saferoom.disclosure.release import Released, RuleOutcome, add_rules, flag, plain

__all__ = ["margins", "suppress_secondary"]


def margins(protected: Mapping[str, Protected]) -> dict[str, list[str]]:
    """For each output that is a table, the other outputs that are margins of it (same rows, fewer keys)."""
    found: dict[str, list[str]] = {}
    for name, p in protected.items():
        if p.table is None or not p.table.keys:
            continue
        for other, q in protected.items():
            same_rows = other != name and q.table is not None and q.table.source == p.table.source
            if same_rows and q.table is not None and set(q.table.keys) < set(p.table.keys):
                found.setdefault(name, []).append(other)
    return found


def _project(key: Key, positions: list[int]) -> Key:
    return tuple(key[i] for i in positions)


def suppress_secondary(
    released: dict[str, Released], protected: Mapping[str, Protected], cells: Mapping[str, pa.Table]
) -> dict[str, Released]:
    """``released`` with complementary suppression applied; ``cells`` holds every table's full cell keys."""
    out = dict(released)
    for name, margin_names in margins(protected).items():
        table_info = protected[name].table
        if name not in cells or table_info is None:
            continue
        keys = table_info.keys
        kept = set(cell_keys(out[name].table, keys))
        hidden = set(cell_keys(cells[name], keys)) - kept
        positions: dict[str, list[int]] = {}
        margin_kept: dict[str, set[Key]] = {}
        for m in margin_names:
            m_keys = protected[m].table.keys  # type: ignore[union-attr]
            positions[m] = [keys.index(k) for k in m_keys]
            margin_kept[m] = set(cell_keys(out[m].table, m_keys))
        extra, removed = _complements(kept, hidden, positions, margin_kept)
        out[name] = _without(out[name], keys, extra, f"margins {', '.join(margin_names)}")
        for m, gone in removed.items():
            m_keys = protected[m].table.keys  # type: ignore[union-attr]
            out[m] = _without(out[m], m_keys, gone, f"the detailed table {name}")
    return out


def _complements(
    kept: set[Key], hidden: set[Key], positions: Mapping[str, list[int]], margin_kept: dict[str, set[Key]]
) -> tuple[set[Key], dict[str, set[Key]]]:
    """The table's cells to suppress more, and each margin's cells to suppress, until no released margin cell
    covers exactly one hidden cell of the table (``kept`` and ``margin_kept`` are updated).

    In passes, margin by margin: every group (margin cell) that covers exactly one hidden cell, in key order,
    hides the first released cell of its group in key order, or, if none is left, is suppressed itself. Every
    such step changes something and nothing is ever shown again, so there are at most as many steps as cells;
    each costs a constant: the hidden counts per group are kept up to date, each group's released cells are
    listed once in key order and walked with a cursor. Work and time so grow with the cells, never with the
    pattern of hidden cells (``engine.timing`` pads the rules by the cells: a pass rescanning every cell would be
    quadratic in the hidden ones)."""
    order = {key: repr(key) for key in kept}
    count: dict[str, dict[Key, int]] = {m: {} for m in positions}
    members: dict[str, dict[Key, list[Key]]] = {m: {} for m in positions}
    cursor: dict[str, dict[Key, int]] = {m: {} for m in positions}
    active: dict[str, set[Key]] = {m: set() for m in positions}  # groups covering one hidden cell, released

    def hide(key: Key) -> None:
        for m, pos in positions.items():
            group = _project(key, pos)
            n = count[m][group] = count[m].get(group, 0) + 1
            if n == 1 and group in margin_kept[m]:
                active[m].add(group)
            elif n == 2:
                active[m].discard(group)

    for key in sorted(kept, key=order.__getitem__):
        for m, pos in positions.items():
            members[m].setdefault(_project(key, pos), []).append(key)
    for key in hidden:
        hide(key)
    extra: set[Key] = set()
    removed: dict[str, set[Key]] = {m: set() for m in positions}
    changed = True
    while changed:
        changed = False
        for m in positions:
            for group in sorted(active[m], key=repr):
                listed, at = members[m].get(group, []), cursor[m].get(group, 0)
                while at < len(listed) and listed[at] not in kept:
                    at += 1
                cursor[m][group] = at
                if at < len(listed):
                    kept.discard(listed[at])
                    extra.add(listed[at])
                    hide(listed[at])
                else:
                    margin_kept[m].discard(group)
                    active[m].discard(group)
                    removed[m].add(group)
                changed = True
    return extra, removed


def _without(released: Released, keys: tuple[str, ...], drop: set[Key], because: str) -> Released:
    """``released`` without the cells ``drop``, and the rule in both reports (its count for the checker only)."""
    table = released.table
    mask = pa.array([key not in drop for key in cell_keys(table, keys)], pa.bool_())
    kept = replace(released, table=table.filter(mask))
    rule = RuleOutcome(
        "secondary",
        "more cells may be suppressed, key included, so that no suppressed cell can be recovered by subtraction "
        f"from {because} released in the same result",
        cells_suppressed=len(drop),
    )
    done = add_rules(kept, [rule], suppressed=len(drop))
    if drop:
        cells = sorted(([plain(v) for v in k] for k in drop), key=repr)[:100]
        done = flag(done, "secondary", cells=cells, because=because)
    return done
