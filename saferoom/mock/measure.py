"""The differentially private measurements mock data is sampled from, with OpenDP.

For a personal dataset and its public ``Structure``:

    each root attribute      a noisy 1-way marginal (its bins, the missing-value bin included)
    each child c of p        a noisy 2-way marginal over p x c (c's 1-way marginal is its sum over its first
                             parent); a child of two parents p, q: the two 2-way marginals p x c and q x c
    rows per unit            a noisy histogram of how many rows (1..k) each privacy unit has, when the catalog
                             does not declare one row per unit

A privacy unit keeps at most k rows (k = 1 for one row per unit, else the policy's ``max_contributions``; its
later rows are dropped, as the DP releases do), so adding or removing one changes each marginal by at most k
in L1 and the rows-per-unit histogram by 1. Each of the M measurements is OpenDP's discrete Laplace
(``make_laplace`` on integer vectors, exact sampling) at epsilon / M; their sum is the publication's epsilon
(basic composition, pure: delta 0), the same units every researcher's budget is kept in.

Post-processing (free): negative counts become 0, and counts below ``threshold`` become 0 (chosen from the
noisy counts themselves, their scale and the noisy total, so that empty cells passing it add about 1% of the
rows at most), so a marginal of 100,000 mostly empty cells does not sample rows from noise. A marginal whose
child is an amount (log bins up to a public bound far above most values: incomes to 5,000,000) also keeps its
tail cells only where noise alone could not have put them (``tail_thresholds``): one phantom count of 20 in a
top income bin moves a district's mean income by a tenth, and a count threshold that bounds phantom *rows*
does not bound phantom *amounts*. What is stored, and all that is ever sampled from or shown, are these
post-processed noisy counts.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import opendp.prelude as dp
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog.manifest import DatasetInfo
from saferoom.mock.select import ONE_WAYS, SELECTION, orient, select_tree
from saferoom.mock.structure import Structure

__all__ = ["Marginal", "Measurements", "measure"]

dp.enable_features("contrib")

ROWS_PER_UNIT = "(rows per unit)"
PHANTOM = 0.01  # share of the rows that noise in empty cells may add, at most (expected)
TAIL = 1e-4  # chance that noise leaves any large phantom in an amount's tail (union bound over empty cells)
LARGE = 0.02  # a phantom is large when it carries this share of the noisy amount of the smallest parent bin


@dataclass(frozen=True)
class Marginal:
    """One post-processed noisy marginal: counts over ``attributes`` (1 or 2), flattened row-major."""

    attributes: tuple[str, ...]
    shape: tuple[int, ...]
    counts: np.ndarray  # int64, >= 0
    scale: float  # of the Laplace noise added to every cell
    epsilon: float
    removed: int  # noisy mass set to 0 by the threshold (a noisy quantity: for the fidelity estimate)

    @property
    def table(self) -> np.ndarray:
        return self.counts.reshape(self.shape)

    @property
    def key(self) -> str:
        return ",".join(self.attributes)


@dataclass(frozen=True)
class Measurements:
    """Everything a mock is sampled from: noisy marginals keyed by their attributes."""

    dataset: str
    marginals: dict[str, Marginal]
    epsilon: float
    contributions: int
    edges: tuple[tuple[str, str], ...] = ()  # (parent, child): the tree selected privately (none: declared)
    selection_epsilon: float = 0.0  # spent selecting ``edges``; with the marginals' epsilons: ``epsilon``
    rows: int | None = None  # the noisy row count before post-processing (None: stored before it was kept)

    def structure(self, declared: Structure) -> Structure:
        """The structure these measurements were taken along: ``declared``, or with the selected tree."""
        return declared.with_edges(self.edges) if declared.selected else declared

    def describe(self) -> list[str]:
        """What was measured, each with its epsilon (for the publication's record)."""
        out = [f"{m.key} (eps={m.epsilon:.6g})" for m in self.marginals.values()]
        if self.edges or self.selection_epsilon:
            out.append(f"tree selection, MST (eps={self.selection_epsilon:.6g})")
        return out

    def marginal(self, *attributes: str) -> Marginal:
        """The marginal over ``attributes``: measured, or summed out of a measured one holding them (in order):
        publications made before children of two parents were measured as two 2-ways hold a 3-way table."""
        key = ",".join(attributes)
        if key in self.marginals:
            return self.marginals[key]
        for m in self.marginals.values():
            if set(attributes) <= set(m.attributes):
                keep = [m.attributes.index(a) for a in attributes]
                if keep != sorted(keep):
                    continue
                drop = tuple(i for i in range(len(m.attributes)) if i not in keep)
                counts = m.table.sum(axis=drop).ravel()
                shape = tuple(m.shape[i] for i in keep)
                return Marginal(tuple(attributes), shape, counts, m.scale, m.epsilon, m.removed)
        raise KeyError(key)

    def one_way(self, attribute: str, structure: Structure) -> np.ndarray:
        """An attribute's 1-way noisy counts: measured for a root, else summed out of its marginal with its first
        parent."""
        if attribute in self.marginals:
            return self.marginals[attribute].counts
        table = self.marginal(structure.parents[attribute][0], attribute).table
        summed: np.ndarray = table.sum(axis=0)
        return summed

    @property
    def total(self) -> int:
        """The noisy number of rows: the sum of the 1-way marginal whose sum is least noisy, before the
        thresholds (which can zero a small dataset's 1-way marginal entirely)."""
        if self.rows is not None:
            return max(self.rows, 0)
        one_ways = [m for m in self.marginals.values() if len(m.attributes) == 1 and m.key != ROWS_PER_UNIT]
        best = min(one_ways, key=lambda m: m.counts.size * m.scale**2)
        return int(best.counts.sum())

    def to_bytes(self) -> bytes:
        """An ``npz`` archive (no pickles) of the post-processed counts and their metadata."""
        arrays: dict[str, np.ndarray] = {
            "__meta": np.array([self.epsilon, float(self.contributions), self.selection_epsilon, float(self.total)]),
            "__edges": np.frombuffer(json.dumps([list(e) for e in self.edges]).encode("utf-8"), dtype=np.uint8),
            "__dataset": np.frombuffer(self.dataset.encode("utf-8"), dtype=np.uint8),
        }
        for i, m in enumerate(self.marginals.values()):
            arrays[f"m{i}_counts"] = m.counts
            arrays[f"m{i}_shape"] = np.array(m.shape, dtype=np.int64)
            arrays[f"m{i}_meta"] = np.array([m.scale, m.epsilon, float(m.removed)])
            arrays[f"m{i}_key"] = np.frombuffer(m.key.encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Measurements:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = [float(v) for v in z["__meta"]]
            epsilon, contributions = meta[0], meta[1]
            selection = meta[2] if len(meta) > 2 else 0.0  # stored before selection existed: none
            rows = int(meta[3]) if len(meta) > 3 else None
            text = bytes(z["__edges"]).decode("utf-8") if "__edges" in z.files else "[]"
            edges = tuple((str(p), str(c)) for p, c in json.loads(text))
            dataset = bytes(z["__dataset"]).decode("utf-8")
            marginals: dict[str, Marginal] = {}
            i = 0
            while f"m{i}_key" in z.files:
                key = bytes(z[f"m{i}_key"]).decode("utf-8")
                scale, eps, removed = (float(v) for v in z[f"m{i}_meta"])
                shape = tuple(int(v) for v in z[f"m{i}_shape"])
                marginals[key] = Marginal(
                    tuple(key.split(",")), shape, z[f"m{i}_counts"].astype(np.int64), scale, eps, int(removed)
                )
                i += 1
        return cls(dataset, marginals, epsilon, int(contributions), edges, selection, rows)


def _bounded(table: pa.Table, info: DatasetInfo, k: int) -> tuple[pa.Table, np.ndarray | None]:
    """At most ``k`` rows per privacy unit (the first ones), and each kept unit's row count (None: one each)."""
    if info.one_row_per_unit or info.privacy_unit is None:
        return table, None
    units = pc.fill_null(table.column(info.privacy_unit), -1).to_numpy().astype(np.int64)
    order = np.argsort(units, kind="stable")
    sorted_units = units[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_units[1:] != sorted_units[:-1])))
    run = np.arange(units.size) - np.repeat(starts, np.diff(np.concatenate((starts, [units.size]))))
    keep = np.sort(order[run < k])
    per_unit = np.minimum(np.diff(np.concatenate((starts, [units.size]))), k)
    return table.take(pa.array(keep)), per_unit


def _laplace(exact: np.ndarray, sensitivity: int, epsilon: float) -> tuple[np.ndarray, float]:
    """OpenDP's discrete Laplace on every cell, calibrated by its own privacy map; and the scale."""
    scale = sensitivity / epsilon
    m: Any = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)
    assert m.map(sensitivity) <= epsilon * (1 + 1e-9)
    return np.asarray(m(exact.astype(np.int64).tolist()), dtype=np.int64), scale


def threshold(noisy: np.ndarray, scale: float, total: float) -> float:
    """The smallest count kept: the expected noise mass of empty cells passing it, about
    empty * e^(-t / scale) * (t + scale) / 2, stays under ``PHANTOM`` of the (noisy) total. The empty cells are
    estimated as twice the noisy counts at or below 0 (an empty cell's noise is <= 0 half the time, a full
    cell's almost never). Post-processing: it reads the noisy counts, their scale and a noisy total only."""
    empty = min(noisy.size, 2 * int((noisy <= 0).sum()))
    t = 0.0
    while empty * math.exp(-t / scale) * (t + scale) / 2 > PHANTOM * max(total, 1.0) and t < 50 * scale:
        t += scale / 4
    return t


def tail_thresholds(noisy: np.ndarray, scale: float, limit: float, values: np.ndarray) -> np.ndarray:
    """The smallest count kept in each child bin of a ``rows x bins`` marginal of an amount (``values``: each
    value bin's mean; the last bin, missing, has none).

    A phantom count N in bin b adds N x values[b] to its row's amount; it is *large* when that exceeds
    ``LARGE`` of the noisy amount of the smallest row holding 1% of the amount. Where a phantom could be large
    below ``u``, the count at which noise in any of the empty cells passes with chance under ``TAIL``, the
    bin's threshold is ``u``; elsewhere the count threshold ``limit`` stands. Post-processing: noisy counts,
    their scale and public bin values only."""
    table = np.clip(noisy, 0, None).astype(np.float64)
    out = np.full(table.shape[1], max(limit, 1.0))
    amounts = (table[:, :-1] * values).sum(axis=1)
    significant = amounts >= PHANTOM * float(amounts.sum())
    if not significant.any() or amounts.sum() <= 0:
        return out
    smallest = float(amounts[significant].min())
    empty = max(1, min(noisy.size, 2 * int((noisy <= 0).sum())))
    u = scale * math.log(empty / TAIL)
    large_below_u = values * u > LARGE * smallest
    out[:-1] = np.where(large_below_u, np.maximum(out[:-1], u), out[:-1])
    return out


def _post(noisy: np.ndarray, limit: float | np.ndarray) -> tuple[np.ndarray, int]:
    kept = np.where(noisy >= np.maximum(limit, 1.0), noisy, 0)
    return kept, int(np.clip(noisy, 0, None).sum() - kept.sum())


def restore_tail(noisy: np.ndarray, kept: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """``kept`` (rows x bins) with each row's cut tail mass put back: the sum of the noisy counts of the tail
    cells the thresholds zeroed (negative ones included: unbiased for the real rows there, its noise about
    scale x sqrt(cells)), clipped at 0, in the cut cell of the largest noisy count. ``tail``: the bins whose
    threshold was raised.

    The tail thresholds remove phantoms, but also a district's real top incomes where fewer than the
    threshold share a bin (its mean fell by 1-3% at 200,000 persons); their number is known well even though
    their bins are not. A real tail falls with the value, so its largest cut count is its lowest bin; in a
    small dataset whose every bin is "tail" (1,000 sales over 6 districts), it is the row's mode."""
    cut = tail[None, :] & (kept == 0)
    if not cut.any():
        return kept
    where = np.argmax(np.where(cut, noisy, np.iinfo(np.int64).min), axis=1)
    mass = np.clip(np.where(cut, noisy, 0).sum(axis=1), 0, None).astype(kept.dtype)
    restored: np.ndarray = kept.copy()
    rows = np.flatnonzero(cut.any(axis=1))
    restored[rows, where[rows]] += mass[rows]
    return restored


def _split(shapes: list[tuple[int, ...]], epsilon: float, rows: int, floor: float = 0.25) -> np.ndarray:
    """Epsilon over measurements of these shapes: in proportion to the square root of their cells (what
    minimises their summed expected absolute error), counting at most ``rows`` (declared) cells, with a floor
    of ``floor`` of an even share for a 1-way marginal and of an even share for a 2-way one (the dependencies
    are what mock data is for: a district's incomes must not drown in noise because the table is small)."""
    weights = np.sqrt(np.array([min(math.prod(s), max(rows, 1)) for s in shapes], dtype=np.float64))
    floors = np.array([(1.0 if len(s) > 1 else floor) / len(shapes) for s in shapes])
    weights = np.maximum(weights / weights.sum(), floors)
    shares: np.ndarray = epsilon * weights / weights.sum()
    return shares


Raw = tuple[tuple[str, ...], tuple[int, ...], np.ndarray, float, float]  # attributes, shape, noisy, scale, eps


def _noisy(
    plan: list[tuple[str, ...]],
    structure: Structure,
    index: dict[str, np.ndarray],
    per_unit: np.ndarray | None,
    k: int,
    epsilon: float,
    rows: int,
    floor: float = 0.25,
) -> list[Raw]:
    """The noisy counts of every marginal of ``plan`` (and of the rows per unit, given ``per_unit``)."""
    shapes = [tuple(structure.attributes[a].cells for a in attributes) for attributes in plan]
    if per_unit is not None:
        shapes.append((k,))
    shares = _split(shapes, epsilon, rows, floor)
    raw: list[Raw] = []
    for attributes, shape, share in zip(plan, shapes, shares, strict=False):
        flat = index[attributes[0]]
        for name, cells in zip(attributes[1:], shape[1:], strict=True):
            flat = flat * cells + index[name]
        noisy, scale = _laplace(np.bincount(flat, minlength=math.prod(shape)), k, float(share))
        raw.append((attributes, shape, noisy, scale, float(share)))
    if per_unit is not None:
        noisy, scale = _laplace(np.bincount(per_unit - 1, minlength=k)[:k], 1, float(shares[-1]))
        raw.append(((ROWS_PER_UNIT,), (k,), noisy, scale, float(shares[-1])))
    return raw


def _total(raw: list[Raw]) -> float:
    """The noisy row count, from the 1-way marginal whose sum is least noisy (fewest cells x scale^2: public):
    unbiased (the noise before post-processing), free to reuse."""
    one_ways = [r for r in raw if len(r[0]) == 1 and r[0] != (ROWS_PER_UNIT,)]
    best = min(one_ways, key=lambda r: r[2].size * r[3] ** 2)
    return float(best[2].sum())


def _postprocessed(raw: list[Raw], structure: Structure, total: float, k: int) -> dict[str, Marginal]:
    marginals: dict[str, Marginal] = {}
    for attributes, shape, noisy, scale, share in raw:
        units = total / (k if attributes == (ROWS_PER_UNIT,) else 1)
        limit: float | np.ndarray = threshold(noisy, scale, units)
        child = structure.attributes.get(attributes[-1])
        # The child's marginal with its first parent gives its distribution in the mock (``sample``): its rows'
        # amounts (a district's incomes) are what phantoms must not move; a second parent's shapes only.
        first = len(attributes) == 2 and structure.parents.get(attributes[-1], ("",))[0] == attributes[0]
        tail: np.ndarray | None = None
        if first and child is not None and len(child.binnings) == 1 and child.binnings[0].amount:
            by_bin = tail_thresholds(noisy.reshape(shape), scale, float(limit), child.binnings[0].values())
            tail = by_bin > max(float(limit), 1.0)
            limit = np.broadcast_to(by_bin, shape).ravel()
        counts, removed = _post(noisy, limit)
        if tail is not None:
            counts = restore_tail(noisy.reshape(shape), counts.reshape(shape), tail).ravel()
        marginal = Marginal(attributes, shape, counts, scale, share, removed)
        marginals[marginal.key] = marginal
    return marginals


def measure(table: pa.Table, info: DatasetInfo, structure: Structure, epsilon: float) -> Measurements:
    """The noisy measurements of ``table`` (the real data) for a mock, spending ``epsilon`` in all.

    A declared structure: its marginals (``Structure.marginals``), epsilon split by ``_split`` (public
    declarations only). A structure to select (``structure.selected``, as in MST): ``SELECTION`` of epsilon
    selects the tree (``select``); of the rest, ``ONE_WAYS`` measures every attribute's 1-way marginal first
    (the selection's independence baseline; the rows per unit too), and the remainder the tree's 2-way
    marginals. The shares add up to ``epsilon``: one charge, basic composition.
    """
    multi = not info.one_row_per_unit and info.privacy_unit is not None
    k = 1 if not multi else info.policy.max_contributions
    bounded, per_unit = _bounded(table, info, k)
    index = {name: attr.index(bounded) for name, attr in structure.attributes.items()}
    edges: tuple[tuple[str, str], ...] = ()
    selection = 0.0
    if structure.selected:
        selection = SELECTION * epsilon
        first = ONE_WAYS * (epsilon - selection)
        # An even floor: these are the roots and the selection's baseline, not only a place's 17,000 cells.
        singles: list[tuple[str, ...]] = [(a,) for a in structure.attributes]
        raw = _noisy(singles, structure, index, per_unit, k, first, info.rows, floor=1.0)
        total = _total(raw)
        baseline = {m.attributes[0]: m.counts for m in _postprocessed(raw, structure, total, k).values()}
        rest = epsilon - selection - first
        chosen = select_tree(structure, index, baseline, k, selection, rest)
        edges = orient(structure, chosen)
        structure = structure.with_edges(edges)
        pairs = [m for m in structure.marginals() if len(m) > 1]
        raw += _noisy(pairs, structure, index, None, k, rest, info.rows) if pairs else []
    else:
        raw = _noisy(structure.marginals(), structure, index, per_unit, k, epsilon, info.rows)
        total = _total(raw)
    marginals = _postprocessed(raw, structure, total, k)
    return Measurements(info.name, marginals, epsilon, k, edges, selection, max(round(total), 0))
