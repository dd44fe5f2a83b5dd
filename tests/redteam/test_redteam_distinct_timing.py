"""Red team: a distinct count whose duration shows how many of the values are distinct.

The attack: count the distinct values of a column the job may not release (or of ``case(condition, id, 0)``),
and read the job's end. Acero's hash count took 2 ns a row when every value was equal and 350-930 ns when every
one was distinct (1M and 10M rows), while the padding counted 10 ns a row for any aggregate: a count of distinct
people over 10M rows could end 9 s after a job padded to 0.2 s for it, and how late would show how many
distinct values the data holds. Now a distinct count without keys of integers, dates or timestamps is computed
by sorting (30-40 ns a row whatever the values), and the time model pads every distinct count for all of its
values distinct (``engine.timing``: ``DISTINCT_SORT_PASS_NS``, ``DISTINCT_NS``).

Measured here in CPU time of the aggregate alone (every thread's: at least its wall time on an idle machine),
for the values that make each path slowest, against the model's padding of that one node.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.engine import aggregates, timing
from saferoom.engine.cost import Facts, Value
from saferoom.engine.plan import AggExpr, Aggregate, Col, Scan

ROWS = 400_000
_rng = np.random.default_rng(11)
_distinct = _rng.permutation(ROWS).astype(np.int64) * 7_919  # every value distinct, in no order
VALUES = {
    "int64": pa.chunked_array([pa.array(_distinct[i : i + 100_000]) for i in range(0, ROWS, 100_000)]),
    "float64": pa.chunked_array([pa.array(_distinct * 0.37)]),
    "string": pa.chunked_array([pa.array(_distinct[: ROWS // 4]).cast(pa.string())]),  # a quarter: 60-byte worst
    "date32": pa.chunked_array([pa.array((_distinct % 3_000_000).astype(np.int32)).view(pa.date32())]),
}
GROUPS = {"no keys": 1, "6 groups": 6, "every row a group": ROWS}


def _seconds(table: pa.Table, keys: tuple[str, ...]) -> float:
    agg = (("n", AggExpr("count_distinct", Col("u"))),)
    start = time.process_time()
    aggregates.aggregate(table, keys, agg)
    return time.process_time() - start


@pytest.mark.parametrize("groups", GROUPS, ids=list(GROUPS))
@pytest.mark.parametrize("kind", VALUES, ids=list(VALUES))
def test_a_distinct_count_of_distinct_values_stays_within_its_padding(kind: str, groups: str) -> None:
    values = VALUES[kind]
    rows, n_groups = len(values), GROUPS[groups]
    keys: tuple[str, ...] = () if n_groups == 1 else ("g",)
    table = pa.table({"u": values, "g": pa.array(np.arange(rows) % min(n_groups, rows))})
    node = Aggregate(Scan("t", ("u", "g")), keys, (("n", AggExpr("count_distinct", Col("u"))),))
    width = 64 if kind == "string" else 8
    columns = {"u": Value(kind, width), "g": Value("int64", 8)}
    padded = timing.node_seconds(
        node, [Facts(rows, columns)], Facts(min(rows, n_groups), {"n": Value("int64", 8)}), 0, [kind]
    )
    spent = min(_seconds(table, keys) for _ in range(2))  # the first run may pay for page faults of its arrays
    assert spent <= padded, f"{kind}, {groups}: {spent:.3f} s of CPU, padded {padded:.3f} s"


def test_the_padding_covers_the_hashed_count_that_a_sort_replaced() -> None:
    """The hash count the sort replaced is what an all-distinct global count would cost if it came back: the
    model's hashed figure must cover it too (it is what grouped distinct counts still use)."""
    values = VALUES["int64"]
    start = time.process_time()
    assert pc.count_distinct(values).as_py() == ROWS
    hashed = time.process_time() - start
    node = Aggregate(Scan("t", ("u",)), ("g",), (("n", AggExpr("count_distinct", Col("u"))),))
    padded = timing.node_seconds(node, [Facts(ROWS, {"u": Value("int64", 8)})], Facts(6, {}), 0, ["int64"])
    assert hashed <= padded, f"{hashed:.3f} s of CPU, padded {padded:.3f} s"


def test_every_distinct_count_is_padded_for_its_values_whatever_they_are() -> None:
    """The padding is a function of the plan and the catalog: the same for any values (only their declared
    type chooses the path, and an unknown type counts as hashed, the slower)."""
    node = Aggregate(Scan("t", ("u",)), (), (("n", AggExpr("count_distinct", Col("u"))),))
    shape = [Facts(10**7, {"u": Value("int64", 8)})]
    sorted_ = timing.node_seconds(node, shape, Facts(1, {}), 0, ["int64"])
    hashed = timing.node_seconds(node, shape, Facts(1, {}), 0, ["float64"])
    unknown = timing.node_seconds(node, shape, Facts(1, {}))
    assert sorted_ < hashed == unknown
    assert sorted_ >= 10**7 * timing.DISTINCT_SORT_PASS_NS * 24 * 1e-9  # 24 passes of 10M rows


@pytest.mark.parametrize("fn", ["min", "max"])
def test_the_extremes_of_text_stay_within_their_padding(fn: str) -> None:
    """Text compares byte by byte: 60-byte values that differ only in their last byte, the slowest to order."""
    rows = ROWS
    text = pa.chunked_array([pa.array([("x" * 59) + chr(33 + int(i) % 90) for i in _distinct])])
    for keys in ((), ("g",)):
        table = pa.table({"u": text, "g": pa.array(np.arange(rows) % 6)})
        agg = ((fn, AggExpr(fn, Col("u"))),)
        node = Aggregate(Scan("t", ("u", "g")), keys, agg)
        columns = {"u": Value("string", 64), "g": Value("int64", 8)}
        padded = timing.node_seconds(node, [Facts(rows, columns)], Facts(6, {}), 0, ["string"])
        spent = []
        for _ in range(2):
            start = time.process_time()
            aggregates.aggregate(table, keys, agg)
            spent.append(time.process_time() - start)
        assert min(spent) <= padded, f"{fn} {keys}: {min(spent):.3f} s of CPU, padded {padded:.3f} s"
