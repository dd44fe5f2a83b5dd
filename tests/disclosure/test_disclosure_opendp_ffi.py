"""OpenDP's report noisy min invoked through its C interface (``disclosure.opendp_ffi``): the same releases as the
bindings, errors raised and freed, nothing leaked, safe from several threads."""

from __future__ import annotations

import concurrent.futures
import os
from typing import Any

import numpy as np
import opendp.prelude as opendp
import pytest
from opendp.mod import OpenDPException

from saferoom.disclosure import dp
from saferoom.disclosure.opendp_ffi import IndexInvoker


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
