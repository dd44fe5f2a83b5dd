"""Rows sampled from the noisy measurements: ancestral sampling (exact for the graph), vectorised, deterministic.

Roots are drawn from their 1-way marginals, then every child from its conditional given its parents' drawn
bins: their row of the noisy 2- (or 3-) way table, normalised (a parent bin with no noisy mass falls back to the
child's 1-way marginal, an attribute with none to uniform over its values). Values are drawn uniformly within
their bins, derived columns recomputed (``price_per_m2 = price / area_m2``, clamped to its bounds), identifiers are
synthetic (1, 2, 3, ...); without one row per unit, each synthetic unit's row count is drawn from the noisy
rows-per-unit histogram. Nothing here reads real data: only ``Measurements`` and the public ``Structure``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from saferoom.catalog.catalog import schema_of
from saferoom.catalog.manifest import DatasetInfo
from saferoom.mock.measure import ROWS_PER_UNIT, Measurements
from saferoom.mock.structure import Structure

__all__ = ["sample", "sample_bins"]


def _normalised(counts: np.ndarray) -> np.ndarray:
    counts = counts.astype(np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / max(1, counts.shape[-1] - 1))
    uniform[..., -1] = 0.0 if counts.shape[-1] > 1 else 1.0  # no noisy mass at all: a value, never a missing one
    return np.where(total > 0, counts / np.where(total > 0, total, 1.0), uniform)


def _draw(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), p.size - 1).astype(np.int64)


def _draw_conditional(rng: np.random.Generator, table: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """One child bin per row from ``table[parent]`` (rows normalised): one searchsorted over all rows at once."""
    rows, cols = table.shape
    cdf = np.cumsum(table, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(rows)[:, None]).ravel()  # row r's cdf lives in (r, r + 1]
    found = np.searchsorted(flat, parent + rng.random(parent.size), side="right")
    child: np.ndarray = np.minimum(found - parent * cols, cols - 1).astype(np.int64)
    return child


def sample_bins(measurements: Measurements, structure: Structure, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` rows of attribute bins drawn from the tree."""
    rng = np.random.default_rng([seed, 0x6D6F636B])
    bins: dict[str, np.ndarray] = {}
    for name in structure.order():
        parents = structure.parents.get(name, ())
        if not parents:
            bins[name] = _draw(rng, _normalised(measurements.one_way(name, structure)), n)
            continue
        marginal = measurements.marginal(*parents, name)
        table = marginal.counts.reshape(-1, marginal.shape[-1]).astype(np.float64)
        fallback = _normalised(measurements.one_way(name, structure))
        empty = table.sum(axis=1) <= 0
        table[empty] = fallback
        row = bins[parents[0]]
        for parent, cells in zip(parents[1:], marginal.shape[1:-1], strict=True):
            row = row * cells + bins[parent]  # the parents' joint bin: the row of the flattened table
        bins[name] = _draw_conditional(rng, table, row)
    return bins


def _units(rng: np.random.Generator, measurements: Measurements, n: int) -> np.ndarray:
    """Synthetic unit ids for ``n`` rows, each unit's row count drawn from the noisy rows-per-unit histogram."""
    p = _normalised(measurements.marginals[ROWS_PER_UNIT].counts)
    mean = float((p * np.arange(1, p.size + 1)).sum())
    per_unit = _draw(rng, p, int(n / mean) + p.size + 1) + 1
    while per_unit.sum() < n:  # rare: draw more until the rows are covered
        per_unit = np.concatenate((per_unit, _draw(rng, p, p.size + 1) + 1))
    ids = np.repeat(np.arange(1, per_unit.size + 1, dtype=np.int64), per_unit)[:n]
    return ids[rng.permutation(n)]


def sample(measurements: Measurements, structure: Structure, info: DatasetInfo, n: int, seed: int = 0) -> pa.Table:
    """``n`` synthetic rows with ``info``'s schema, deterministic for the same measurements, ``n`` and seed."""
    bins = sample_bins(measurements, structure, n, seed)
    rng = np.random.default_rng([seed, 0x76616C])
    columns: dict[str, pa.Array] = {}
    for name in structure.order():
        columns.update(structure.attributes[name].draw(rng, bins[name]))
    for name in structure.identifiers:
        if name == info.privacy_unit and ROWS_PER_UNIT in measurements.marginals:
            columns[name] = pa.array(_units(rng, measurements, n))
        else:
            columns[name] = pa.array(np.arange(1, n + 1, dtype=np.int64))
    for name in structure.free_text:
        columns[name] = pa.array([f"{name}-{i + 1}" for i in range(n)], pa.string())
    for name, left, operator, right in structure.derived:
        a = columns[left].to_numpy(zero_copy_only=False).astype(np.float64)
        b = columns[right].to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            value = a / b if operator == "/" else a * b
        column = info.column(name)
        lo = -np.inf if column.min is None else column.min
        hi = np.inf if column.max is None else column.max
        value = np.round(np.clip(value, lo, hi), 0)
        mask = ~np.isfinite(value)
        columns[name] = pa.array(np.where(mask, 0.0, value), pa.float64(), mask=mask)
    schema = schema_of(info)
    return pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
