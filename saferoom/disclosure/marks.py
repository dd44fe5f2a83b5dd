"""Marking suppressed and empty cells, so that a released table reads like an output checker expects.

Suppressed cells are removed at the aggregate, key included: for keys whose values could themselves disclose
something (a grid cell, an exact income) nothing else is safe. When every key of a table is a column with a
public domain in the catalog (categories, true/false), its full grid of key combinations is public, and the
released table lists every combination with a ``cell_status``: ``released`` or ``suppressed`` (values null).
A suppressed cell may have too few people, be dominated, protect another cell, belong to a withheld output, or
have nobody at all: telling an empty cell from a small one would say, on a public grid, whether anyone has that
combination (a person's sex and education, once the rest of the grid is known). The output checker's view tells
them apart. Only outputs that are such an aggregate as it stands are marked (not post-processed ones), never
differentially private ones, and only grids of at most ``MAX_GRID`` combinations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa

from saferoom.disclosure.cells import MAX_GRID, cell_keys
from saferoom.disclosure.levels import Protected
from saferoom.disclosure.release import Released, RuleOutcome, add_rules

__all__ = ["STATUS", "mark_cells", "marked"]

STATUS = "cell_status"


def marked(protected: Mapping[str, Protected]) -> list[str]:
    """The outputs whose suppressed and empty cells can be marked (given their full cell lists)."""
    return [
        name
        for name, p in protected.items()
        if p.kind == "aggregate"
        and not p.noisy
        and p.table is not None
        and p.table.domains is not None
        and math.prod(len(d) for d in p.table.domains) <= MAX_GRID
    ]


def mark_cells(
    released: dict[str, Released], protected: Mapping[str, Protected], cells: Mapping[str, pa.Table]
) -> dict[str, Released]:
    """``released`` with every marked output listing its whole key grid; ``cells`` holds each output's cell keys
    before any suppression."""
    out = dict(released)
    for name in marked(protected):
        info, done = protected[name].table, out[name]
        if info is None or info.domains is None or name not in cells:
            continue
        table = done.table
        if STATUS in table.column_names:
            continue
        keys = info.keys
        rows = {key: row for key, row in zip(cell_keys(table, keys), table.to_pylist(), strict=True)}
        present = set(cell_keys(cells[name], keys))
        listed: list[dict[str, Any]] = []
        suppressed = zero = 0
        for combination in itertools.product(*info.domains):
            row = rows.pop(combination, None)
            if row is not None:
                listed.append({**row, STATUS: "released"})
                continue
            if combination in present:
                suppressed += 1
            else:
                zero += 1
            empty = dict.fromkeys(table.column_names)
            listed.append({**empty, **dict(zip(keys, combination, strict=True)), STATUS: "suppressed"})
        listed += [{**row, STATUS: "released"} for row in rows.values()]  # keys outside the grid (null keys)
        schema = pa.schema([*table.schema, pa.field(STATUS, pa.string())])
        grid = pa.Table.from_pylist(listed, schema=schema)
        rule = RuleOutcome(
            "marked",
            f"every combination of {', '.join(keys)} is listed: cells not released (too few people, none at all, "
            f"or withheld) are marked suppressed in {STATUS} (their values are null)",
        )
        marked_out = replace(done, table=grid, report=replace(done.report, columns=grid.column_names))
        marked_out = add_rules(marked_out, [rule])
        check = dict(marked_out.check)
        check["cells"] = {"released": len(listed) - suppressed - zero, "suppressed": suppressed, "zero": zero}
        out[name] = replace(marked_out, check=check)
    return out
