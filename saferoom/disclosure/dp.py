"""Differential privacy: the noisy release of one aggregate over a differentially private dataset.

The release rewrite (``protect``) turns every aggregate over rows of a DP dataset into a ``NoisyAggregate``: an
exact plan over rows bounded to ``max_contributions`` per privacy unit, whose hidden statistics never leave the
server, and the recipe to noise them. Here, with OpenDP's samplers (exact, floating-point safe) and privacy maps:

    which cells exist   Laplace threshold (stability histogram) on the cell's row count: a cell is released
                        only if its noisy count reaches a threshold chosen so that a cell made by one person's
                        rows appears with probability at most delta; never below the policy's min_contributors.
                        The noisy count is the released ``count()``. A global aggregate (no keys) is one cell
                        that always exists: a plain Laplace count, no delta.
    count(x), count_distinct(x)   discrete Laplace, sensitivity k (k = rows one unit may contribute)
    sum(x)              Laplace on the sum of x clamped to its public bounds [lo, hi], sensitivity k * max|bound|
    mean(x)             lo..hi midpoint + noisy centred sum / noisy count, sensitivity of the centred sum
                        k * (hi - lo) / 2; clamped into [lo, hi]
    quantile(x, q)      report noisy min (OpenDP's make_noisy_max with max-divergence: permute and flip, MS20,
                        which is pure epsilon-DP like the exponential mechanism) over ``QUANTILE_BINS`` + 1
                        candidates in [lo, hi], scored |q n - #{x < c}| from a per-cell histogram; evenly
                        spaced, or evenly in log(1 + (x - lo) / u) for amounts (income, prices: skewed, so
                        the spacing grows with the value: about 2% of it). In a cell whose released noisy
                        count n' has n' epsilon / k >= ``QUANTILE_STAGED_FROM``, drawn in two stages of
                        epsilon / 2 each (``_draws``): one of the ``QUANTILE_STAGES[0]`` groups of
                        ``QUANTILE_GROUP`` neighbouring candidates, scored by its best candidate, then one
                        candidate of that group: 23 + 22 candidates to try at most instead of 501, at a
                        negligible cost in accuracy there (not in smaller cells: ``_draws``)

A unit changes at most k rows, hence at most k cells: every vector mechanism is calibrated to the L1 (or
L-infinity for the scores) sensitivity over all cells at once, so a whole aggregate costs one epsilon per
statistic, whatever the number of cells. Each ``measurement`` spends the epsilon the pipeline assigns it; their
sum over a job is what the researcher's budget was charged (basic composition).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import opendp.prelude as dp
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.disclosure.cells import cell_keys
from saferoom.disclosure.opendp_ffi import IndexInvoker, MapInvoker
from saferoom.engine import timing
from saferoom.engine.plan import Node
from saferoom.errors import ReleaseRefused

__all__ = [
    "QUANTILE_BINS",
    "QUANTILE_GROUP",
    "QUANTILE_STAGED_FROM",
    "QUANTILE_STAGES",
    "DPColumn",
    "Noised",
    "NoisyAggregate",
    "Pad",
    "noise",
    "quantile_draws_seconds",
]

dp.enable_features("contrib")

QUANTILE_BINS = 500  # candidate spacing (hi - lo) / QUANTILE_BINS
QUANTILE_GROUP = 22  # a quantile's first draw picks a group of this many neighbouring candidates (the last: 17)
QUANTILE_STAGES = (-(-(QUANTILE_BINS + 1) // QUANTILE_GROUP), QUANTILE_GROUP)  # each draw's candidates, at most
QUANTILE_STAGED_FROM = 300  # a cell's noisy count x epsilon / k from which its quantile is drawn in two stages
_SCORE_DENOMINATOR = 1000  # quantile q as a fraction of 1000: integer scores
_CI = math.log(20)  # |Laplace(b)| <= b ln 20 with probability 95%
Pad = Callable[[float], None]  # told the worst-case seconds of release work about to start (``ReleaseDeadline``)


@dataclass(frozen=True)
class DPColumn:
    """One released column of a noisy aggregate."""

    name: str
    kind: str  # "count" (the cell count) | "count_values" | "sum" | "mean" | "quantile"
    source: str = ""  # the exact statistic's hidden column (count_values, sum, mean) or histogram label
    lower: float = 0.0  # public bounds of the value (sum, mean, quantile)
    upper: float = 0.0
    q: float = 0.5  # quantile
    integer: bool = False  # released as int64
    log_unit: float = 0.0  # quantile of an amount: candidates spaced evenly in log(1 + (x - lower) / log_unit)

    def candidate(self, index: int) -> float:
        """The value of quantile candidate ``index`` in 0..QUANTILE_BINS."""
        if self.log_unit:
            top = math.log1p((self.upper - self.lower) / self.log_unit)
            return min(self.upper, self.lower + self.log_unit * math.expm1(index * top / QUANTILE_BINS))
        return self.lower + index * (self.upper - self.lower) / QUANTILE_BINS

    def sensitivity(self, k: int) -> float:
        """How far one privacy unit (adding or removing its at most ``k`` rows) can move this column's exact
        statistic, summed over all cells (L1); for a quantile, how far it moves any candidate's score (L-inf).
        The one place the calibration of every mechanism below reads it from."""
        if self.kind in ("count", "count_values"):
            return float(k)
        if self.kind == "sum":
            return k * max(abs(self.lower), abs(self.upper))
        if self.kind == "mean":  # of the sum centred on the bounds' midpoint
            return k * (self.upper - self.lower) / 2
        a = round(self.q * _SCORE_DENOMINATOR)
        return float(k * max(a, _SCORE_DENOMINATOR - a))

    @property
    def measured(self) -> bool:
        """Whether the column costs a measurement of its own (the cell count is shared)."""
        return self.kind != "count"


@dataclass(frozen=True)
class NoisyAggregate:
    """An aggregate over a DP dataset: the exact plans the engine runs and how their results are noised."""

    label: str
    dataset: str
    keys: tuple[str, ...]
    exact: Node  # keys, hidden statistics and the cell's row count ``count``
    count: str
    columns: tuple[DPColumn, ...]
    histograms: dict[str, Node]  # quantile label -> plan (keys, "__bin", "__n")
    contributions: int  # k: rows one privacy unit may contribute (enforced by a Bound node below)
    minimum: int  # the policy's min_contributors: the noisy count must reach it too
    schema: tuple[tuple[str, str], ...]  # released columns and their types, keys first
    # Each key's public domain (catalog categories, true/false) when every key has one and the grid is small:
    # then every combination is a cell, the key set is public, and no threshold (no delta) is needed.
    domains: tuple[tuple[Any, ...], ...] | None = None

    @property
    def selects_keys(self) -> bool:
        """Whether which cells exist must itself be chosen privately (it spends delta)."""
        return bool(self.keys) and self.domains is None

    @property
    def measurements(self) -> int:
        """How many epsilon shares this aggregate spends."""
        return 1 + sum(1 for c in self.columns if c.measured)


@dataclass(frozen=True)
class Noised:
    """A noisy aggregate's released table and what was done to it, for the report."""

    table: pa.Table
    noise: list[dict[str, Any]] = field(default_factory=list)
    threshold: int | None = None


def _threshold(scale: float, k: int, delta: float, minimum: int) -> int:
    """The smallest noisy-count threshold for which OpenDP's map gives at most ``delta`` (and >= minimum)."""
    start = max(minimum, math.ceil(k + scale * math.log(k / (2 * delta))) - 3)
    for threshold in range(start, start + 64):
        if _threshold_measurement(scale, threshold).map((k, k, k))[1] <= delta:
            return threshold
    raise ReleaseRefused("no threshold meets the policy's delta")  # unreachable with sane policies


def _threshold_measurement(scale: float, threshold: int) -> Any:
    domain = dp.map_domain(dp.atom_domain(T="i64"), dp.atom_domain(T="i64"))
    metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)


def _laplace_int(values: np.ndarray, sensitivity: int, epsilon: float) -> tuple[list[int], float]:
    """Discrete Laplace noise on int64 ``values`` (numpy: OpenDP copies them into Rust without a Python loop)."""
    scale = sensitivity / epsilon
    m: Any = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)
    assert m.map(sensitivity) <= epsilon * (1 + 1e-9)
    return [int(v) for v in m(_writable(values, np.int64))] if len(values) else [], scale


def _laplace_float(values: np.ndarray, sensitivity: float, epsilon: float) -> tuple[list[float], float]:
    """Laplace noise on float64 ``values`` (numpy, as above)."""
    scale = sensitivity / epsilon
    domain = dp.vector_domain(dp.atom_domain(T=float, nan=False))
    m: Any = dp.m.make_laplace(domain, dp.l1_distance(T=float), scale=scale)
    assert m.map(sensitivity) <= epsilon * (1 + 1e-9)
    return [float(v) for v in m(_writable(values, np.float64))] if len(values) else [], scale


def _writable(values: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``values`` as OpenDP's numpy path takes them: C-contiguous, writable (a view of Arrow memory is read-only:
    copied), of ``dtype``."""
    return np.require(values, dtype=dtype, requirements=["C", "W"])


def _thresholded(measurement: Any, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Laplace threshold ``measurement`` on the map {row: count} of ``counts``: the rows it keeps, in order, and
    their noisy counts. Drawn in parts on every core: the measurement adds independent noise to each entry and
    keeps an entry by its own noisy value alone, so its release on a map has exactly the distribution of the union
    of its releases on the parts of any partition of the map's keys (each with fresh randomness, as every call
    has). Its privacy is accounted for once, on the whole map (``measurement.map``)."""
    invoke = MapInvoker(measurement)  # two int64 arrays each way, not 72,000 Python integers
    rows = np.arange(len(counts), dtype=np.int64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    size = max(_MIN_THRESHOLD_PER_PART, -(-len(rows) // _DRAW_THREADS))
    parts = [(rows[i : i + size], counts[i : i + size]) for i in range(0, len(rows), size)]
    pool = _draw_pool() if len(parts) > 1 else None
    released = [invoke(rows, counts)] if pool is None else list(pool.map(lambda part: invoke(*part), parts))
    keys = np.concatenate([kept for kept, _ in released])
    order = np.argsort(keys, kind="stable")
    return keys[order], np.concatenate([noisy for _, noisy in released])[order]


def _filled(column: pa.ChunkedArray, integer: bool) -> np.ndarray:
    """A hidden statistic's exact values as a numpy array, nulls (no value in the cell) as 0."""
    kind = pa.int64() if integer else pa.float64()
    filled = pc.fill_null(pc.cast(column, kind), pa.scalar(0, kind))
    return np.asarray(filled.to_numpy(), dtype=np.int64 if integer else np.float64)


def _quantile_scores(counts: np.ndarray, q: float) -> np.ndarray:
    """Integer scores |q n - #{x < c}| (x 1000) of the QUANTILE_BINS + 1 candidates: lower is better. ``counts``
    is one cell's histogram, or one row per cell (then one row of scores per cell, C-contiguous)."""
    a = round(q * _SCORE_DENOMINATOR)
    if counts.ndim == 1:
        one: np.ndarray = _quantile_scores(counts[np.newaxis, :], q)[0]
        return one
    # #{x < c_j}, candidates at the bins' lower edges and hi; computed in place (one array of cells x 501)
    scores = np.zeros((len(counts), counts.shape[1] + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, dtype=np.int64, out=scores[:, 1:])
    n = scores[:, -1:] * a
    scores *= -_SCORE_DENOMINATOR
    scores += n
    np.abs(scores, out=scores)
    return scores


def _noisy_min(sensitivity: int, epsilon: float) -> tuple[Any, float]:
    """Report-noisy-min over integer scores, and its scale: with max-divergence OpenDP draws it by permute and flip
    (candidates in random order, each accepted with probability exp(-(score - min) / scale), the first wins),
    exactly, in rational arithmetic with fresh randomness for every candidate tried: most of a quantile's cost."""
    scale = 2 * sensitivity / epsilon  # scores may move in both directions (not monotonic)
    m: Any = dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T="i64")),
        dp.linf_distance(T="i64", monotonic=False),
        dp.max_divergence(),
        scale=scale,
        negate=True,
    )
    assert m.map(sensitivity) <= epsilon * (1 + 1e-9)
    return m, scale


def noise(
    agg: NoisyAggregate,
    exact: pa.Table,
    histograms: dict[str, pa.Table],
    epsilon: float,
    delta: float,
    pad: Pad | None = None,
) -> Noised:
    """Release ``agg`` from its exact results: every statistic spends ``epsilon``; choosing the cells spends
    ``epsilon`` and ``delta`` (keys) or ``epsilon`` alone (a global aggregate).

    ``pad``, if given, is told the worst-case time of each quantile's draws before they start: a function of the
    released cells (``engine.timing.draws_seconds``), which the result shows anyway."""
    k = agg.contributions
    report: list[dict[str, Any]] = []
    scale = k / epsilon
    threshold: int | None
    if agg.selects_keys:
        threshold = _threshold(scale, k, delta, agg.minimum)
        measurement = _threshold_measurement(scale, threshold)
        kept_rows, released_counts = _thresholded(measurement, _filled(exact.column(agg.count), True))
        kept, noisy_counts = kept_rows.tolist(), released_counts.tolist()
        eps, dlt = measurement.map((k, k, k))
        mechanism = "laplace threshold"
    else:  # a public set of cells (one global cell, or the grid of public domains): all noised, no delta
        exact = _on_grid(exact, agg)
        counts = [int(c) for c in exact.column(agg.count).to_pylist()]
        threshold = agg.minimum
        noisy, _ = _laplace_int(np.array(counts, dtype=np.int64), k, epsilon)
        kept = [i for i, c in enumerate(noisy) if c >= agg.minimum]
        noisy_counts = [noisy[i] for i in kept]
        eps, dlt = epsilon, 0.0
        mechanism = "laplace over every combination of public keys" if agg.keys else "laplace"
    report.append(
        {
            "column": "(cells)" if agg.keys else "(count)",
            "mechanism": mechanism,
            "epsilon": eps,
            "delta": dlt,
            "scale": scale,
            "sensitivity": k,
            "ci95": scale * _CI,
            "threshold": threshold,
        }
    )
    rows = exact.take(pa.array(kept, type=pa.int64()))
    arrays: dict[str, pa.Array] = {key: _plain(rows.column(key)) for key in agg.keys}
    for column in agg.columns:
        entry: dict[str, Any] = {"column": column.name, "epsilon": epsilon, "delta": 0.0}
        if column.kind == "count":
            values: list[Any] = noisy_counts
            entry = {
                **report[0],
                "column": column.name,
                "epsilon": 0.0,  # the cells' noisy count, already paid for
                "delta": 0.0,
                "note": "the noisy count that chose the cells: no extra epsilon",
            }
        elif column.kind == "count_values":
            noisy, scale = _laplace_int(_filled(rows.column(column.source), True), k, epsilon)
            values = [max(0, v) for v in noisy]
            entry |= {"mechanism": "laplace", "scale": scale, "sensitivity": k, "ci95": scale * _CI}
        elif column.kind == "sum":
            sensitivity = column.sensitivity(k)
            noisy_sums, scale = _laplace_float(_filled(rows.column(column.source), False), sensitivity, epsilon)
            values = [round(v) for v in noisy_sums] if column.integer else noisy_sums
            entry |= {"mechanism": "laplace", "scale": scale, "sensitivity": sensitivity, "ci95": scale * _CI}
        elif column.kind == "mean":
            sensitivity = column.sensitivity(k)
            mid = (column.lower + column.upper) / 2
            noisy_sums, scale = _laplace_float(_filled(rows.column(column.source), False), sensitivity, epsilon)
            values = [
                min(column.upper, max(column.lower, mid + s / max(c, 1)))
                for s, c in zip(noisy_sums, noisy_counts, strict=True)
            ]
            entry |= {
                "mechanism": "laplace on the centred sum, divided by the noisy count",
                "scale": scale,
                "sensitivity": sensitivity,
                "ci95": scale * _CI,
                "note": "the mean's 95% interval is about ci95 / count",
            }
        else:
            staged = _staged(noisy_counts, epsilon, k)
            if pad is not None:
                pad(quantile_draws_seconds(len(staged) - int(staged.sum()), int(staged.sum())))
            values, entry = _quantiles(column, histograms[column.source], rows, agg.keys, staged, k, epsilon, entry)
        arrays[column.name] = pa.array(values, type=pa.int64() if column.integer else pa.float64())
        report.append(entry)
    names = [name for name, _ in agg.schema]
    table = pa.table([arrays[name] for name in names], names=names)
    return Noised(table, report, threshold)


def _quantiles(
    column: DPColumn,
    histogram: pa.Table,
    rows: pa.Table,
    keys: tuple[str, ...],
    staged: np.ndarray,
    k: int,
    epsilon: float,
    entry: dict[str, Any],
) -> tuple[list[Any], dict[str, Any]]:
    """One noisy quantile per released cell (``rows``, one per cell) from its histogram: ``__bin`` holds each
    value's bin index; drawn in two stages in the cells ``staged`` marks (``_staged``)."""
    cells = rows.num_rows
    flat = np.zeros(cells * QUANTILE_BINS, dtype=np.int64)
    if histogram.num_rows and cells:
        bins = np.clip(histogram.column("__bin").to_numpy(zero_copy_only=False), 0, QUANTILE_BINS - 1)
        n = np.asarray(histogram.column("__n").to_numpy(zero_copy_only=False), dtype=np.int64)
        index = _cell_index(histogram, rows, keys)
        found = index >= 0
        where = index[found] * QUANTILE_BINS + bins.astype(np.int64)[found]
        np.add.at(flat, where, n[found])  # exact integer sums (bins clipped to the ends may repeat a cell's bin)
    sensitivity = int(column.sensitivity(k))  # one row moves every score, hence every group's best, by at most this
    single, scale = _noisy_min(sensitivity, epsilon)  # the same for every cell: built once
    halved, staged_scale = _noisy_min(sensitivity, epsilon / 2)  # each of the two stages
    scores = _quantile_scores(flat.reshape(cells, QUANTILE_BINS), column.q)
    values = [column.candidate(i) for i in _draws(single, halved, scores, staged)] if cells else []
    spacing = "spaced evenly" if not column.log_unit else "spaced about 2% of the value apart (log scale)"
    groups, size = QUANTILE_STAGES
    entry |= {
        "mechanism": f"report noisy min (permute and flip, pure epsilon-DP) over {QUANTILE_BINS + 1} candidates",
        "scale": scale,
        "sensitivity": sensitivity,
        "resolution": 0.0 if column.log_unit else (column.upper - column.lower) / QUANTILE_BINS,
        "note": f"the released value is one of the candidates, {spacing}",
        "staged_cells": int(staged.sum()),
        "staged": (
            f"in cells whose noisy count x epsilon / {k} reaches {QUANTILE_STAGED_FROM}, drawn in two stages of "
            f"epsilon / 2 (scale {staged_scale:g}): one of {groups} groups of up to {size} neighbouring candidates "
            "(a group scored by its best candidate), then one candidate of that group"
        ),
    }
    return values, entry


def _cell_index(histogram: pa.Table, rows: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """Each histogram row's released cell (its row in ``rows``, whose keys are unique: a group-by's cells), -1 for
    rows of cells that were not released. Vectorised for every number and type of keys, so that its time per row
    is the same whatever the keys' values (``engine.timing.histogram_seconds`` pads it per row and key)."""
    wanted, released = _key_codes(histogram, rows, keys)
    found = pc.index_in(pa.array(wanted), value_set=pa.array(released))
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _common(a: pa.ChunkedArray, b: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Both columns in one type that holds either's values (a cast that cannot fail on any value)."""
    if a.type == b.type:
        return a, b
    if pa.types.is_integer(a.type) and pa.types.is_integer(b.type):
        wide: pa.DataType = pa.int64()
    elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in (a.type, b.type)):
        wide = pa.float64()
    else:
        return a, pc.cast(b, a.type)  # texts, dates, booleans: the same values in another layout
    return pc.cast(a, wide, safe=False), pc.cast(b, wide, safe=False)  # no value check: never data-dependent


def _key_codes(histogram: pa.Table, rows: pa.Table, keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One int64 code per row of each table for its combination of ``keys``: equal codes, equal keys (a null
    equals a null, as in a group-by). Key by key, the pair (code so far, this key's code) is re-encoded densely,
    so codes stay below the rows of both tables together and never overflow."""
    n = histogram.num_rows
    codes = np.zeros(n + rows.num_rows, dtype=np.int64)
    for i, key in enumerate(keys):
        mine, theirs = _common(_plain(histogram.column(key)), _plain(rows.column(key)))
        both = pa.chunked_array([*mine.chunks, *theirs.chunks], type=mine.type)
        encoded = pc.dictionary_encode(both, null_encoding="encode").combine_chunks()
        column = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        if i == 0:  # a dictionary's indices are already dense codes
            codes = column
            continue
        pairs = codes * (len(encoded.dictionary) + 1) + column  # < (n + rows)^2: fits int64 below 3e9 rows
        codes = np.unique(pairs, return_inverse=True)[1].astype(np.int64).reshape(-1)
    return codes[:n], codes[n:]


def quantile_draws_seconds(single: int, staged: int) -> float:
    """The worst-case time of one quantile's draws: ``single`` cells drawn once among every candidate, ``staged``
    cells in two stages (``_draws``)."""
    return timing.quantile_draws_seconds([(single, QUANTILE_BINS + 1), *((staged, c) for c in QUANTILE_STAGES)])


def _staged(noisy_counts: list[int], epsilon: float, k: int) -> np.ndarray:
    """Which released cells draw their quantile in two stages: those whose noisy count is large for the noise,
    n' epsilon / k >= ``QUANTILE_STAGED_FROM``. The noisy count is a DP output the release has paid for (shown as
    the cell's ``count()`` when that is an output), so a choice made from it, and a duration that follows it, is
    post-processing: it shows nothing of the data beyond what that count may."""
    return np.asarray(noisy_counts, dtype=np.float64).reshape(-1) * epsilon / k >= QUANTILE_STAGED_FROM


def _group_minima(scores: np.ndarray, group: int = QUANTILE_GROUP) -> np.ndarray:
    """Each row's best score in each group of ``group`` neighbouring candidates (the first stage's scores). One
    row moves every score by at most the sensitivity, hence every group's best too: the same calibration."""
    starts = np.arange(0, scores.shape[1], group)
    if not len(scores):
        return np.zeros((0, len(starts)), dtype=np.int64)
    return _writable(np.minimum.reduceat(scores, starts, axis=1), np.int64)


def _draws(single: Any, halved: Any, scores: np.ndarray, staged: np.ndarray, group: int = QUANTILE_GROUP) -> list[int]:
    """One candidate per row of ``scores``: by one draw of ``single`` (epsilon) among all, or where ``staged``, by
    two draws of ``halved`` (epsilon / 2 each; adaptive composition): a group of ``group`` neighbouring candidates
    by the groups' best scores (``_group_minima``), then a candidate of that group by its own scores.

    Why two stages, and where: permute and flip tries candidates until it accepts one, about half of them when
    one is far better than the rest, which is what a large cell's scores look like (1 ms of CPU a draw over 501
    candidates); two draws over 23 and 22 try at most 45 (0.1 ms). Each stage's noise is twice a single draw's,
    which costs accuracy where the noise, not the candidates' spacing, limits it: in small cells (measured on
    site selection's 7,423 cells at 10M persons, epsilon 0.25 a median, k 1, candidates off the best on average
    single against staged: 5.6 against 19 where n epsilon / k < 25; 0.25 against 0.61 from 200 to 300, the
    95th percentile 1 against 2; 0.14 against 0.36 from 300 to 500 and 0.06 against 0.12 from 500 up, the 95th
    percentile 1 either way: ``QUANTILE_STAGED_FROM``). The choice follows the released noisy count, never the
    data.

    The rows run on every core: OpenDP's exact samplers run in Rust without the GIL (ctypes; called through
    ``opendp_ffi``, since the bindings' own conversions would hold the GIL for most of a small draw), so threads
    give the processors' speed up with the same samplers and randomness (OpenSSL's, in OpenDP). Each row is
    independent, so their order of running changes nothing. The rows go out in small batches that idle threads take
    in turn, so a processor slowed by other work holds up at most one batch; each row reaches OpenDP as a
    contiguous int64 view (no copy)."""
    scores = _writable(scores, np.int64)
    minima = _group_minima(scores, group)
    starts = list(range(0, scores.shape[1], group))
    whole, stage = IndexInvoker(single), IndexInvoker(halved)  # without the bindings' 70 us a call
    two = [bool(b) for b in np.asarray(staged, dtype=bool).reshape(-1)]
    if len(two) != len(scores):
        raise ValueError("one staging flag per row of scores")

    def draw(lo: int, hi: int) -> list[int]:
        out = []
        for i in range(lo, min(hi, len(scores))):
            if two[i]:
                first = starts[stage(minima[i])]
                out.append(first + stage(scores[i, first : first + group]))
            else:
                out.append(whole(scores[i]))
        return out

    chunks = min(_DRAW_THREADS, max(1, len(scores) // _MIN_DRAWS_PER_THREAD))
    if chunks <= 1:
        return draw(0, len(scores))
    size = max(_MIN_DRAWS_PER_THREAD, len(scores) // (chunks * _BATCHES_PER_THREAD))
    parts = range(0, len(scores), size)
    return [d for part in _draw_pool().map(lambda lo: draw(lo, lo + size), parts) for d in part]


_DRAW_THREADS = max(1, len(os.sched_getaffinity(0)))
_MIN_DRAWS_PER_THREAD = 16  # below this, starting the threads costs more than they save
_MIN_THRESHOLD_PER_PART = 4_096  # cells: a part's noise (7 us a cell) well above a thread's hand-over
_BATCHES_PER_THREAD = 8  # batches per thread: enough for idle threads to take over a slowed one's share
_pool: list[concurrent.futures.ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def _draw_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads drawing noise, one per processor, started on first use and shared by every release."""
    with _pool_lock:
        if not _pool:
            _pool.append(concurrent.futures.ThreadPoolExecutor(_DRAW_THREADS, thread_name_prefix="dp-draw"))
        return _pool[0]


# A process's first OpenDP mechanisms take milliseconds more than the next (the library's first use): paid here,
# when the server imports this module, rather than inside the first release's padded noise (``engine.timing``).
IndexInvoker(_noisy_min(1, 1.0)[0])
_threshold_measurement(1.0, 10).map((1, 1, 1))


def _on_grid(exact: pa.Table, agg: NoisyAggregate) -> pa.Table:
    """The exact cells laid out on the public grid: one row per key combination, in domain order, zeros where
    no row fell (keys outside the grid, e.g. null, are dropped: they are not public)."""
    plain = pa.table([_plain(c) for c in exact.columns], names=exact.column_names)
    if not agg.keys:
        return plain
    assert agg.domains is not None
    rows = dict(zip(cell_keys(plain, agg.keys), plain.to_pylist(), strict=True))
    zero = {name: 0 for name in plain.column_names if name not in agg.keys}
    grid = [
        rows.get(combination, {**zero, **dict(zip(agg.keys, combination, strict=True))})
        for combination in itertools.product(*agg.domains)
    ]
    return pa.Table.from_pylist(grid, schema=plain.schema)


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(column, column.type.value_type) if pa.types.is_dictionary(column.type) else column
