"""What the release rewrite knows about each node of a plan, and what it hands to the release step.

Every node of an output plan is at one of three levels (``Level``):

    public      only public datasets below it: releasable row by row
    rows        row-level data from a personal dataset: never releasable
    aggregate   cells of a group-by over personal rows, each counted and thresholded

For personal rows, a level also carries the privacy units behind them (``Unit``: a hidden column each), which
visible columns are magnitudes and whose, each column's value domain (``engine.functions.Domain``) and the
subset checks the rows must pass. The rules (``thresholds``, ``dominance``, ``subsets``, ``dp_rewrite``) record
what they add in the dataclasses below; ``Protected`` gathers them per output.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from saferoom.disclosure.dp import NoisyAggregate
from saferoom.engine.functions import Domain
from saferoom.engine.optimize import columns_of
from saferoom.engine.plan import Expr, Node, Scalar

__all__ = [
    "ABSENT",
    "CONTRIBUTORS_PREFIX",
    "HIDDEN_PREFIX",
    "CellTable",
    "DominanceRule",
    "Level",
    "Protected",
    "Selection",
    "SubsetCheck",
    "ThresholdRule",
    "Unit",
    "columns_of",
    "magnitudes_through",
    "nullable",
]

HIDDEN_PREFIX = "_"
ABSENT = 2**62  # stands for "this source has no rows in the cell" while taking the minimum
CONTRIBUTORS_PREFIX = "__c"


@dataclass(frozen=True)
class Unit:
    """A privacy unit carried through row-level data: its hidden column and where it comes from."""

    column: str
    dataset: str
    unique: bool  # at most one row per unit so far
    minimum: int  # the dataset's min_contributors


@dataclass(frozen=True)
class ThresholdRule:
    """One suppression point: an aggregate whose cells need ``minimum`` distinct units."""

    label: str
    column: str
    minimum: int
    datasets: tuple[str, ...]
    units: tuple[str, ...]


@dataclass(frozen=True)
class Protected:
    """An output plan rewritten for release."""

    name: str
    kind: str  # "aggregate" | "public"
    plan: Node
    thresholds: dict[str, ThresholdRule] = field(default_factory=dict)
    minimums: dict[str, int] = field(default_factory=dict)  # contributor column -> required minimum
    clamped: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dataset -> columns clamped to bounds
    dominance: dict[str, DominanceRule] = field(default_factory=dict)
    subsets: dict[str, SubsetCheck] = field(default_factory=dict)  # checks whose failure withholds the output
    table: CellTable | None = None  # set when the output is a protected aggregate itself (for margins)
    noisy: dict[str, NoisyAggregate] = field(default_factory=dict)  # DP aggregates it reads (Input labels)
    quantiles: dict[str, QuantileRule] = field(default_factory=dict)
    # Every set of people the output's cells and conditions select, for the differencing check across outputs.
    selections: tuple[Selection, ...] = ()


@dataclass(frozen=True)
class CellTable:
    """An output that is a group-by over personal rows as it stands: which rows it groups (by identity of the
    rewritten input), by which keys, and a plan listing every one of its cells' keys before suppression (for
    the server alone: secondary suppression must know which cells were suppressed to protect them)."""

    source: int
    keys: tuple[str, ...]
    cells: Node
    domains: tuple[tuple[Scalar, ...], ...] | None = None  # each key's public domain, when every key has one


@dataclass(frozen=True)
class Level:
    kind: str  # "public" | "rows" | "aggregate"
    hidden: tuple[str, ...] = ()  # hidden column names carried by the node's output
    units: tuple[Unit, ...] = ()  # for "rows"
    # For "rows": visible columns derived from a magnitude column (income, price), and the hidden unit
    # columns of the people whose amounts they are. Renaming or computing with a magnitude keeps it one.
    magnitudes: dict[str, frozenset[str]] = field(default_factory=dict)
    checks: tuple[str, ...] = ()  # labels of the subset checks the data below must pass
    # For "rows": each visible column's value domain (bounds, null, NaN, infinity; ``engine.functions``),
    # from the catalog's declarations through the registry's domain rules.
    values: dict[str, Domain] = field(default_factory=dict)
    # For "rows": the catalog categories of columns passed through unchanged (the exact rules' public grids).
    domains: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class SubsetCheck:
    """The DataSHIELD subset rule at one filter (or head, or join that drops rows) over personal rows: a one-row
    plan counting the units it keeps and leaves out; the outputs it feeds are withheld unless each count is 0 or
    at least ``minimum``."""

    label: str
    plan: Node  # one row: columns "kept" and "left" (distinct units)
    minimum: int
    dataset: str
    what: str  # "filter" | "head" | "join" | "condition"


@dataclass(frozen=True)
class QuantileRule:
    """One quantile check point: cells whose quantiles (medians) have fewer than ``minimum`` units at or below
    the value, or at or above it, are suppressed."""

    label: str
    minimum: int
    datasets: tuple[str, ...]
    outputs: tuple[str, ...]
    qs: tuple[float, ...] = ()  # each output's q (0.5 for a median)


@dataclass(frozen=True)
class Selection:
    """A set of people one output releases something about, as the engine computes it: a protected aggregate's
    cells (one set per cell) or a filter's or a condition's rows (one set). ``members`` lists its distinct
    (cell keys, unit) pairs, the keys renamed ``__k0..`` and the unit ``__m`` (``differencing``)."""

    label: str
    dataset: str
    minimum: int
    keys: int  # how many key columns ``members`` has
    members: Node
    what: str  # "cells" | "filter" | "condition" | "everyone" (all the dataset's units: a public number)
    # Unique on ``__m``: each unit with the keys of one cell it is in (all of them when a unit has one row).
    owners: Node | None = None
    node: int = 0  # for "cells": id of the protected aggregate's top node (to find the outputs that hold it)
    names: tuple[str, ...] = ()  # for "cells": the key columns as the output names them
    # Each cell's distinct units (keys ``__k0..``, count ``__n``): a plan the outputs or checks compute anyway.
    sizes: Node | None = None
    rows: Node | None = None  # the rows the cells group (cells), a filter keeps, a condition is evaluated on
    predicate: Expr | None = None  # for "condition": which of ``rows`` it selects
    unique: bool = True  # at most one row per unit in ``rows``


@dataclass(frozen=True)
class DominanceRule:
    """One dominance check point: the cells of an aggregate whose sums of a magnitude must not be dominated."""

    label: str
    n: int
    k: float
    p: float
    datasets: tuple[str, ...]
    outputs: tuple[str, ...]  # the aggregate columns checked


def magnitudes_through(
    columns: tuple[tuple[str, Expr], ...], before: dict[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Which projected columns still carry magnitudes, and whose."""
    out: dict[str, frozenset[str]] = {}
    for name, expr in columns:
        owners = frozenset().union(*(before.get(c, frozenset()) for c in columns_of(expr)))
        if owners:
            out[name] = owners
    return out


def nullable(values: Mapping[str, Domain], names: Collection[str]) -> dict[str, Domain]:
    """``values`` where the columns ``names`` may also be null (the missing side of an outer join)."""
    return {c: (replace(d, null=True) if c in names else d) for c, d in values.items()}
