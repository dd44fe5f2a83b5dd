"""Rows sampled from the noisy measurements: ancestral sampling (exact for the graph), vectorised, deterministic.

Roots are drawn from their 1-way marginals, then every child from its conditional given its parents' drawn
bins: its parent's row of the noisy 2-way table, normalised (a parent bin with no noisy mass falls back to the
child's 1-way marginal, an attribute with none to uniform over its values). A child of two parents is drawn
from the table over both parents and the child that agrees with its two noisy 2-way marginals and with its
parents' distributions (``conditional``: iterative proportional fitting, the maximum-entropy fit, as
Private-PGM fits MST's 2-way measurements), fitted to consistent margins first so that it converges.
Values are drawn uniformly within their bins (log-uniformly for amounts: with exact counts, a district's mean
income comes out within 1%), derived columns recomputed (``price_per_m2 = price / area_m2``, clamped to its
bounds), identifiers are synthetic (1, 2, 3, ...); without one row per unit, each synthetic unit's row count
is drawn from the noisy rows-per-unit histogram. Nothing here reads real data: only ``Measurements`` and the
public ``Structure``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from saferoom.catalog.catalog import schema_of
from saferoom.catalog.manifest import DatasetInfo
from saferoom.mock.measure import ROWS_PER_UNIT, Measurements
from saferoom.mock.structure import Structure

__all__ = ["conditional", "sample", "sample_bins"]


def _normalised(counts: np.ndarray) -> np.ndarray:
    counts = counts.astype(np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    uniform = np.full_like(counts, 1.0 / max(1, counts.shape[-1] - 1))
    uniform[..., -1] = 0.0 if counts.shape[-1] > 1 else 1.0  # no noisy mass at all: a value, never a missing one
    return np.where(total > 0, counts / np.where(total > 0, total, 1.0), uniform)


def _allowed(p: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``p`` over the ``allowed`` bins only (uniform over them if it had no mass there)."""
    kept = np.where(allowed, p, 0.0)
    total = kept.sum()
    return kept / total if total > 0 else allowed / max(1, int(allowed.sum()))


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


IPF_ROUNDS = 30  # proportional-fitting rounds (the margins are made consistent first: it converges fast)
_SEED = 1e-3  # weight of the seed given to a child bin one 2-way marginal has mass in and the other none


def _rake(table: np.ndarray, axis: int, target: np.ndarray) -> np.ndarray:
    """``table`` scaled along ``axis`` so that its sums over the other axes are ``target`` (0 where it has none)."""
    other = tuple(i for i in range(table.ndim) if i != axis)
    sums = table.sum(axis=other)
    factor = np.where(sums > 0, target / np.where(sums > 0, sums, 1.0), 0.0)
    shape = [1] * table.ndim
    shape[axis] = -1
    scaled: np.ndarray = table * factor.reshape(shape)
    return scaled


def _fit(joint: np.ndarray, axis: int, target: np.ndarray) -> np.ndarray:
    """``joint`` (3-d) scaled so that its sum over ``axis`` is ``target`` (0 where it has none): one IPF step."""
    sums = joint.sum(axis=axis)
    factor = np.where(sums > 0, target / np.where(sums > 0, sums, 1.0), 0.0)
    fitted: np.ndarray = joint * np.expand_dims(factor, axis)
    return fitted


def _seeded(table: np.ndarray, target: np.ndarray, ordered: bool) -> np.ndarray:
    """``table`` (parent x child) given a small seed in child bins where ``target`` has mass and it has none:
    the parent profile of the nearest lower bin holding mass (an ordered child), else the parent's profile."""
    held = table.sum(axis=0) > 0
    lacking = (target > 0) & ~held
    if not lacking.any() or not held.any():
        return table
    if ordered:
        nearest = np.maximum.accumulate(np.where(held, np.arange(held.size), -1))
        nearest = np.where(nearest < 0, int(np.argmax(held)), nearest)
        profile = table[:, nearest]
    else:
        profile = np.repeat(table.sum(axis=1, keepdims=True), held.size, axis=1)
    profile = profile / max(float(profile.sum(axis=0).max()), 1e-300)
    out: np.ndarray = np.where(lacking[None, :], profile * _SEED * max(float(target.max()), 1.0), table)
    return out


def conditional(measurements: Measurements, structure: Structure, child: str) -> np.ndarray:
    """The child's counts given both of its two parents, ``(p x q) x child`` (rows: the parents' joint bin,
    row-major), fitted by IPF to the noisy 2-way marginals p x child and q x child and to the parents'
    independent 1-way distributions; before fitting, the p x child table is scaled to p's distribution and
    the q x child table to q's and to the child's distribution so measured (IPF on inconsistent margins ends
    between them: a district's top incomes, cut in the finer age x income table, were lost)."""
    p, q = structure.parents[child]
    table_p = measurements.marginal(p, child).table.astype(np.float64)
    table_q = measurements.marginal(q, child).table.astype(np.float64)
    total = max(float(table_p.sum()), 1.0)
    rows_p = _normalised(measurements.one_way(p, structure)) * total
    rows_q = _normalised(measurements.one_way(q, structure)) * total
    table_p = _rake(table_p, 0, rows_p)
    by_child = table_p.sum(axis=0)
    ordered = all(b.edges is not None for b in structure.attributes[child].binnings)
    table_q = _seeded(table_q, by_child, ordered)
    for _ in range(IPF_ROUNDS):
        table_q = _rake(_rake(table_q, 1, by_child), 0, rows_q)
    joint = np.ones((table_p.shape[0], table_q.shape[0], by_child.size))
    parents = np.outer(rows_p, rows_q) / total
    for _ in range(IPF_ROUNDS):
        joint = _fit(joint, 1, table_p)
        joint = _fit(joint, 0, table_q)
        joint = _fit(joint, 2, parents)
    fitted: np.ndarray = joint.reshape(-1, by_child.size)
    return fitted


def sample_bins(measurements: Measurements, structure: Structure, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` rows of attribute bins drawn from the tree."""
    structure = measurements.structure(structure)
    rng = np.random.default_rng([seed, 0x6D6F636B])
    bins: dict[str, np.ndarray] = {}
    for name in structure.order():
        parents = structure.parents.get(name, ())
        allowed = structure.attributes[name].allowed()  # no missing value where the catalog declares none
        fallback = _allowed(_normalised(measurements.one_way(name, structure)), allowed)
        if not parents:
            bins[name] = _draw(rng, fallback, n)
            continue
        if len(parents) == 1:
            table = measurements.marginal(parents[0], name).table.astype(np.float64)
            row = bins[parents[0]]
        else:
            table = conditional(measurements, structure, name)
            row = bins[parents[0]] * structure.attributes[parents[1]].cells + bins[parents[1]]
        table = np.where(allowed, table, 0.0)
        empty = table.sum(axis=1) <= 0
        table[empty] = fallback
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


def sample(
    measurements: Measurements, structure: Structure, info: DatasetInfo, n: int, seed: int = 0, first_id: int = 1
) -> pa.Table:
    """``n`` synthetic rows with ``info``'s schema, deterministic for the same measurements, ``n`` and seed.
    Identifiers (units, row ids, free text) start at ``first_id``: a download made of several samples numbers
    each from where the one before it may have ended (at most one unit per row)."""
    structure = measurements.structure(structure)
    bins = sample_bins(measurements, structure, n, seed)
    rng = np.random.default_rng([seed, 0x76616C])
    columns: dict[str, pa.Array] = {}
    for name in structure.order():
        columns.update(structure.attributes[name].draw(rng, bins[name]))
    for name in structure.identifiers:
        if name == info.privacy_unit and ROWS_PER_UNIT in measurements.marginals:
            columns[name] = pa.array(_units(rng, measurements, n) + (first_id - 1))
        else:
            columns[name] = pa.array(np.arange(first_id, first_id + n, dtype=np.int64))
    for name in structure.free_text:
        labels = (f"{name[:40]}-{i}" for i in range(first_id, first_id + n))  # within TEXT_BYTES: 40 + 1 + 12 digits
        columns[name] = pa.array(list(labels), pa.string())
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
