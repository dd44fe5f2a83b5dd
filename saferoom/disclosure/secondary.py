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
        everything = set(cell_keys(cells[name], keys))
        shown = cell_keys(out[name].table, keys)
        kept = set(shown)
        hidden = everything - kept
        margin_kept: dict[str, set[Key]] = {}
        positions: dict[str, list[int]] = {}
        for m in margin_names:
            m_keys = protected[m].table.keys  # type: ignore[union-attr]
            positions[m] = [keys.index(k) for k in m_keys]
            margin_kept[m] = set(cell_keys(out[m].table, m_keys))
        extra: set[Key] = set()
        removed: dict[str, set[Key]] = {m: set() for m in margin_names}
        changed = bool(hidden)
        while changed:
            changed = False
            for m in margin_names:
                groups: dict[Key, list[Key]] = {}
                for key in hidden:
                    groups.setdefault(_project(key, positions[m]), []).append(key)
                for group, members in sorted(groups.items(), key=lambda item: repr(item[0])):
                    if len(members) != 1 or group not in margin_kept[m]:
                        continue
                    candidates = sorted((k for k in kept if _project(k, positions[m]) == group), key=repr)
                    if candidates:
                        kept.discard(candidates[0])
                        hidden.add(candidates[0])
                        extra.add(candidates[0])
                    else:
                        margin_kept[m].discard(group)
                        removed[m].add(group)
                    changed = True
        out[name] = _without(out[name], keys, extra, f"margins {', '.join(margin_names)}")
        for m, gone in removed.items():
            m_keys = protected[m].table.keys  # type: ignore[union-attr]
            out[m] = _without(out[m], m_keys, gone, f"the detailed table {name}")
    return out


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
