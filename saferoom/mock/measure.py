"""The differentially private measurements mock data is sampled from, with OpenDP.

For a personal dataset and its public ``Structure``:

    each root attribute      a noisy 1-way marginal (its bins, the missing-value bin included)
    each child c of p        a noisy 2-way marginal over p x c (c's 1-way marginal is its sum over p); a child
                             of two parents p, q: a 3-way marginal over p x q x c
    rows per unit            a noisy histogram of how many rows (1..k) each privacy unit has, when the catalog
                             does not declare one row per unit

A privacy unit keeps at most k rows (k = 1 for one row per unit, else the policy's ``max_contributions``; its
later rows are dropped, as the DP releases do), so adding or removing one changes each marginal by at most k
in L1 and the rows-per-unit histogram by 1. Each of the M measurements is OpenDP's discrete Laplace
(``make_laplace`` on integer vectors, exact sampling) at epsilon / M; their sum is the publication's epsilon
(basic composition, pure: delta 0), the same units every researcher's budget is kept in.

Post-processing (free): negative counts become 0, and counts below ``threshold`` become 0 (chosen from the
noisy counts themselves, their scale and the noisy total, so that empty cells passing it add about 1% of the
rows at most), so a marginal of 100,000 mostly empty cells does not sample rows from noise. What is stored,
and all that is ever sampled from or shown, are these post-processed noisy counts.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import opendp.prelude as dp
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog.manifest import DatasetInfo
from saferoom.mock.structure import Structure

__all__ = ["Marginal", "Measurements", "measure"]

dp.enable_features("contrib")

ROWS_PER_UNIT = "(rows per unit)"
PHANTOM = 0.01  # share of the rows that noise in empty cells may add, at most (expected)


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

    def marginal(self, *attributes: str) -> Marginal:
        return self.marginals[",".join(attributes)]

    def one_way(self, attribute: str, structure: Structure) -> np.ndarray:
        """An attribute's 1-way noisy counts: measured for a root, else summed out of its marginal with its parents."""
        if attribute in self.marginals:
            return self.marginals[attribute].counts
        parents = structure.parents[attribute]
        table = self.marginal(*parents, attribute).table
        summed: np.ndarray = table.reshape(-1, table.shape[-1]).sum(axis=0)
        return summed

    @property
    def total(self) -> int:
        """The noisy number of rows (of the first root's marginal)."""
        first = next(m for m in self.marginals.values() if m.attributes[0] != ROWS_PER_UNIT)
        return int(first.counts.sum())

    def to_bytes(self) -> bytes:
        """An ``npz`` archive (no pickles) of the post-processed counts and their metadata."""
        arrays: dict[str, np.ndarray] = {
            "__meta": np.array([self.epsilon, float(self.contributions)]),
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
            epsilon, contributions = (float(v) for v in z["__meta"])
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
        return cls(dataset, marginals, epsilon, int(contributions))


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


def _post(noisy: np.ndarray, limit: float) -> tuple[np.ndarray, int]:
    kept = np.where(noisy >= max(limit, 1.0), noisy, 0)
    return kept, int(np.clip(noisy, 0, None).sum() - kept.sum())


def measure(table: pa.Table, info: DatasetInfo, structure: Structure, epsilon: float) -> Measurements:
    """The noisy measurements of ``table`` (the real data) for a mock, spending ``epsilon`` in all.

    Epsilon is split over the measurements in proportion to the square root of their cells (what minimises
    their summed expected absolute error), counting at most the catalog's declared rows as cells, with a floor
    of a quarter of an even share; the split depends on public declarations only.
    """
    multi = not info.one_row_per_unit and info.privacy_unit is not None
    k = 1 if not multi else info.policy.max_contributions
    plan = structure.marginals()
    shapes = [tuple(structure.attributes[a].cells for a in attributes) for attributes in plan]
    if multi:
        shapes.append((k,))
    weights = np.sqrt(np.array([min(math.prod(s), max(info.rows, 1)) for s in shapes], dtype=np.float64))
    weights = np.maximum(weights / weights.sum(), 0.25 / len(shapes))
    shares = epsilon * weights / weights.sum()
    bounded, per_unit = _bounded(table, info, k)
    index = {name: attr.index(bounded) for name, attr in structure.attributes.items()}
    raw: list[tuple[tuple[str, ...], tuple[int, ...], np.ndarray, float, float]] = []
    for attributes, shape, share in zip(plan, shapes, shares, strict=False):
        flat = index[attributes[0]]
        for name, cells in zip(attributes[1:], shape[1:], strict=True):
            flat = flat * cells + index[name]
        noisy, scale = _laplace(np.bincount(flat, minlength=math.prod(shape)), k, float(share))
        raw.append((attributes, shape, noisy, scale, float(share)))
    if per_unit is not None:
        noisy, scale = _laplace(np.bincount(per_unit - 1, minlength=k)[:k], 1, float(shares[-1]))
        raw.append(((ROWS_PER_UNIT,), (k,), noisy, scale, float(shares[-1])))
    total = float(raw[0][2].sum())  # the noisy row count of the first root: unbiased, free to reuse
    marginals: dict[str, Marginal] = {}
    for attributes, shape, noisy, scale, share in raw:
        units = total / (k if attributes == (ROWS_PER_UNIT,) else 1)
        counts, removed = _post(noisy, threshold(noisy, scale, units))
        marginal = Marginal(attributes, shape, counts, scale, share, removed)
        marginals[marginal.key] = marginal
    return Measurements(info.name, marginals, epsilon, k)
