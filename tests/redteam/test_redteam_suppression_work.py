"""Red team: a pattern of small cells that makes complementary suppression slow, to show in a job's duration.

The attack: release a two-way table beside its row and column totals, with data such that each row holds
exactly one cell below the threshold (or a chain of them). Secondary suppression must then hide one more cell
per row, and the first version rescanned every released cell for every such row, pass after pass: its work grew
with the square of the hidden cells (6 s for a 200 x 200 table where the padding allowed 1.2 s), so the job's
end would show how many small cells the data has, and where. The padding (``engine.timing``) is by the cells and
margins; the rule must do work in proportion to them, whatever the pattern. Counted here in projections of a
cell onto a margin (the rule's unit of work), not in seconds, so the test holds on any machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saferoom import disclosure
from saferoom.catalog.manifest import Manifest
from saferoom.config import ServerConfig
from saferoom.disclosure import secondary
from saferoom.engine import cost, plan, timing
from saferoom.engine.plan import AggExpr
from saferoom.jobs.pipeline import to_limits
from tests.disclosure.test_disclosure_secondary import _reference

SIDE = 60
CELLS = [(i, j) for i in range(SIDE) for j in range(SIDE)]
POSITIONS = {"rows": [0], "columns": [1], "total": []}
PATTERNS = {
    "one small cell per row": {(i, i) for i in range(SIDE)},
    "one small cell per row, shifted": {(i, (i + 1) % SIDE) for i in range(SIDE)},
    "a single small cell": {(0, 0)},
    "a whole row small": {(0, j) for j in range(SIDE)},
    "every other cell small": {c for c in CELLS if sum(c) % 2},
}


@pytest.fixture
def projections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    counted = [0]
    real = secondary._project

    def counting(key: Any, positions: list[int]) -> Any:
        counted[0] += 1
        return real(key, positions)

    monkeypatch.setattr(secondary, "_project", counting)
    yield counted


def _margins() -> dict[str, set[Any]]:
    return {m: {tuple(c[i] for i in pos) for c in CELLS} for m, pos in POSITIONS.items()}


@pytest.mark.parametrize("pattern", PATTERNS, ids=list(PATTERNS))
def test_suppression_work_follows_the_cells_not_the_pattern(pattern: str, projections: list[int]) -> None:
    hidden = PATTERNS[pattern]
    secondary._complements(set(CELLS) - hidden, set(hidden), POSITIONS, _margins())
    # each cell projected once per margin when listed or hidden, and once more if it is hidden later
    assert projections[0] <= 2 * len(CELLS) * len(POSITIONS)


def test_the_first_version_did_quadratic_work_on_the_same_pattern(projections: list[int]) -> None:
    """The reference (the first version) on the diagonal: many times the cells, which is what the bound above
    keeps out."""
    hidden = PATTERNS["one small cell per row"]
    _reference(set(CELLS) - hidden, set(hidden), POSITIONS, _margins())
    assert projections[0] > 10 * 2 * len(CELLS) * len(POSITIONS)


def test_no_margin_cell_covers_exactly_one_hidden_cell_afterwards() -> None:
    for hidden in PATTERNS.values():
        kept = set(CELLS) - hidden
        margins = _margins()
        extra, removed = secondary._complements(kept, set(hidden), POSITIONS, margins)
        now_hidden = hidden | extra
        for m, pos in POSITIONS.items():
            for group in margins[m]:
                assert sum(1 for c in now_hidden if tuple(c[i] for i in pos) == group) != 1, (m, group)
        assert kept == set(CELLS) - now_hidden
        assert all(g not in margins[m] for m, gone in removed.items() for g in gone)


def test_the_padding_counts_every_margin_of_a_table(catalog_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Admission adds the rule's work per table and margin to the release's padding (made a second per cell and
    margin here, so that it stands out from the other rules' work)."""
    monkeypatch.setattr(timing, "SECONDARY_CELL_NS", 1e9 / timing.TIME_SAFETY)
    manifest = Manifest.load(catalog_dir)
    caps = to_limits(ServerConfig.load(env={}).engine_limits, "data")
    people = plan.Scan("population", ("person_id", "district", "sex"))

    def by(*keys: str) -> plan.Node:
        return plan.Aggregate(people, keys, (("n", AggExpr("count")),))

    def padded(outputs: dict[str, plan.Node]) -> tuple[float, int]:
        protected = disclosure.protect(outputs, manifest)
        runs = cost.admit_job(protected, manifest, caps)
        return runs[-1].release_seconds, runs[-1].roots["cells:table"].rows

    beside, cells = padded({"table": by("district", "sex"), "d": by("district"), "s": by("sex")})
    alone, _ = padded({"table": by("district", "sex")})
    assert cells > 0 and alone < cells  # no margin: no second per cell
    assert beside >= alone + 2 * cells  # two margins: two seconds per cell
