"""OpenDP's report noisy min and Laplace threshold invoked through its C interface (``disclosure.opendp_ffi``): the
same releases as the bindings, errors raised and freed, nothing leaked, safe from several threads."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import numpy as np
import opendp.prelude as opendp
import pytest
from opendp.mod import OpenDPException

from saferoom.disclosure import dp
from saferoom.disclosure.opendp_ffi import IndexInvoker, MapInvoker


def _exact_min() -> Any:
    """Scale 0: OpenDP's noisy min is the exact argmin (the first of tied minima), so releases can be compared."""
    return opendp.m.make_noisy_max(
        opendp.vector_domain(opendp.atom_domain(T="i64")),
        opendp.linf_distance(T="i64", monotonic=False),
        opendp.max_divergence(),
        scale=0.0,
        negate=True,
    )


def test_the_invoker_releases_what_the_bindings_release() -> None:
    measurement = _exact_min()
    invoke = IndexInvoker(measurement)
    rng = np.random.default_rng(2)
    for size in (1, 2, 17, 22, 23, 501):
        for _ in range(50):
            row = rng.integers(-(2**62), 2**62, size, dtype=np.int64)
            assert invoke(row) == int(measurement(row)) == int(np.argmin(row))
    extremes = np.array([2**63 - 1, -(2**63), 0], dtype=np.int64)
    assert invoke(extremes) == int(measurement(extremes)) == 1


def test_an_error_is_opendps_and_the_invoker_keeps_serving() -> None:
    invoke = IndexInvoker(dp._noisy_min(2, 1.0)[0])
    with pytest.raises(OpenDPException, match="empty"):
        invoke(np.zeros(0, dtype=np.int64))
    assert invoke(np.array([0, 10**12], dtype=np.int64)) == 0  # the far worse candidate is never accepted first


@pytest.mark.parametrize(
    "row",
    [
        np.zeros(3, dtype=np.int32),
        np.zeros(3, dtype=np.float64),
        np.zeros((2, 3), dtype=np.int64),
        np.zeros(6, dtype=np.int64)[::2],
    ],
    ids=["int32", "float64", "two-dimensional", "strided"],
)
def test_only_contiguous_int64_vectors_are_passed(row: np.ndarray) -> None:
    with pytest.raises(TypeError):
        IndexInvoker(_exact_min())(row)


def test_only_measurements_from_int64_vectors_to_an_index_are_invoked() -> None:
    laplace = opendp.m.make_laplace(opendp.vector_domain(opendp.atom_domain(T="i64")), opendp.l1_distance(T="i64"), 1.0)
    with pytest.raises(TypeError, match="usize"):
        IndexInvoker(laplace)  # Vec<i64> -> Vec<i64>
    floats = opendp.m.make_noisy_max(
        opendp.vector_domain(opendp.atom_domain(T=float, nan=False)),
        opendp.linf_distance(T=float, monotonic=False),
        opendp.max_divergence(),
        scale=1.0,
    )
    with pytest.raises(TypeError, match="Vec<i64>"):
        IndexInvoker(floats)


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_nothing_is_leaked() -> None:
    """Each call allocates the argument's copy, the release and its slice in Rust; all are freed: 50,000 calls
    on 501 candidates (4 kB each) would leak 200 MB."""
    invoke = IndexInvoker(dp._noisy_min(2, 1.0)[0])
    row = np.zeros(501, dtype=np.int64)  # tied: the first candidate tried is accepted, a call is quick
    for _ in range(2_000):
        invoke(row)
    before = _resident()
    for _ in range(50_000):
        invoke(row)
    assert _resident() - before < 8 * 2**20


def test_threads_share_one_invoker() -> None:
    invoke = IndexInvoker(_exact_min())
    rows = np.argsort(np.random.default_rng(4).random((4_000, 23)), axis=1).astype(np.int64)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(invoke, rows))
    assert got == list(np.argmin(rows, axis=1))


def _threshold(scale: float, threshold: int) -> Any:
    domain = opendp.map_domain(opendp.atom_domain(T="i64"), opendp.atom_domain(T="i64"))
    metric = opendp.l01inf_distance(opendp.absolute_distance(T="i64"))
    return opendp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold)


def test_the_map_invoker_releases_what_the_bindings_release() -> None:
    """Scale 0: the threshold keeps exactly the entries at or above it, so both paths can be compared."""
    measurement = _threshold(0.0, 5)
    invoke = MapInvoker(measurement)
    rng = np.random.default_rng(3)
    for size in (0, 1, 2, 100, 5_000):
        keys = rng.permutation(10 * size + 1)[:size].astype(np.int64) - 3 * size  # negative keys too
        values = rng.integers(0, 11, size, dtype=np.int64)
        kept, noisy = invoke(keys, values)
        assert kept.dtype == noisy.dtype == np.int64
        assert dict(zip(kept.tolist(), noisy.tolist(), strict=True)) == measurement(
            dict(zip(keys.tolist(), values.tolist(), strict=True))
        )
    extremes = np.array([2**63 - 1, -(2**63), 0], dtype=np.int64)
    kept, noisy = invoke(extremes, np.array([5, 6, 4], dtype=np.int64))
    assert dict(zip(kept.tolist(), noisy.tolist(), strict=True)) == {2**63 - 1: 5, -(2**63): 6}


def test_the_map_invoker_adds_opendps_noise() -> None:
    invoke = MapInvoker(_threshold(2.0, 0))
    keys = np.arange(20_000, dtype=np.int64)
    kept, noisy = invoke(keys, np.full(20_000, 1_000, dtype=np.int64))
    assert sorted(kept.tolist()) == keys.tolist()  # 500 scales above the threshold: all kept
    assert 1.5 < float(np.mean(np.abs(noisy - 1_000))) < 2.5  # discrete Laplace of scale 2: mean |noise| ~1.9


@pytest.mark.parametrize(
    ("keys", "values", "error"),
    [
        (np.zeros(3, dtype=np.int32), np.zeros(3, dtype=np.int64), TypeError),
        (np.arange(3, dtype=np.int64), np.zeros(3, dtype=np.float64), TypeError),
        (np.arange(6, dtype=np.int64)[::2], np.zeros(3, dtype=np.int64), TypeError),
        (np.arange(3, dtype=np.int64), np.zeros(2, dtype=np.int64), ValueError),
        (np.array([1, 2, 1], dtype=np.int64), np.zeros(3, dtype=np.int64), ValueError),
    ],
    ids=["int32 keys", "float values", "strided", "lengths differ", "repeated key"],
)
def test_only_int64_keys_and_values_of_a_map_are_passed(keys: np.ndarray, values: np.ndarray, error: type) -> None:
    with pytest.raises(error):
        MapInvoker(_threshold(1.0, 5))(keys, values)


def test_only_measurements_from_a_map_to_a_map_are_invoked_as_maps() -> None:
    with pytest.raises(TypeError, match="HashMap"):
        MapInvoker(_exact_min())
    with pytest.raises(TypeError, match="Vec<i64>"):
        IndexInvoker(_threshold(1.0, 5))


def test_no_count_makes_the_map_invoker_fail() -> None:
    """Noise saturates at the int64 ends and negative counts pass: no value can turn a release into an error."""
    invoke = MapInvoker(_threshold(1.0, 50))  # noise of scale 1 does not move a count by 50 (p < 1e-21)
    values = np.array([2**63 - 1, -(2**63), -1, 0, 10**9], dtype=np.int64)
    kept, noisy = invoke(np.arange(5, dtype=np.int64), values)
    assert set(kept.tolist()) == {0, 4}
    assert dict(zip(kept.tolist(), noisy.tolist(), strict=True))[0] >= 2**63 - 51  # noise up saturates: no wrap


def test_nothing_of_a_map_is_leaked() -> None:
    """Each call allocates two vectors, the map, the release and its two vectors in Rust; all are freed but the
    40-byte pair of pointers OpenDP leaves: 3,000 calls on 10,000 cells (80 kB a vector) would leak 1 GB."""
    invoke = MapInvoker(_threshold(0.0, 1))
    keys, values = np.arange(10_000, dtype=np.int64), np.ones(10_000, dtype=np.int64)
    for _ in range(100):
        invoke(keys, values)
    before = _resident()
    for _ in range(3_000):
        invoke(keys, values)
    assert _resident() - before < 16 * 2**20


def test_threads_share_one_map_invoker() -> None:
    invoke = MapInvoker(_threshold(0.0, 50))
    rng = np.random.default_rng(5)
    parts = [(np.arange(i * 1_000, (i + 1) * 1_000, dtype=np.int64), rng.integers(0, 100, 1_000)) for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda part: invoke(*part), parts))
    for (keys, values), (kept, noisy) in zip(parts, got, strict=True):
        assert dict(zip(kept.tolist(), noisy.tolist(), strict=True)) == {
            k: v for k, v in zip(keys.tolist(), values.tolist(), strict=True) if v >= 50
        }
