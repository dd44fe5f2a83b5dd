"""The worst-case analysis of plans (``engine.cost``): rows per node, uniqueness through joins, shared subtrees
counted once, and refusals that name the node and the numbers."""

from __future__ import annotations

import pytest

from saferoom.catalog.manifest import Column, DatasetInfo, Manifest
from saferoom.engine import cost
from saferoom.engine.plan import (
    AggExpr,
    Aggregate,
    Bound,
    Call,
    Col,
    Filter,
    Input,
    Join,
    Limit,
    Lit,
    Node,
    Project,
    Scan,
    Sort,
    Threshold,
    Union,
)
from saferoom.errors import LimitExceeded
from saferoom.sandbox import Limits

PEOPLE = 1_000
STOPS = 200
MANIFEST = Manifest(
    "test",
    {
        "people": DatasetInfo(
            "people",
            "persons",
            "people.arrow",
            PEOPLE,
            "personal",
            (
                Column("id", "int64"),
                Column("district", "string", categories=("north", "south")),
                Column("age", "int64"),
                Column("adult", "bool"),
                Column("income", "float64"),
            ),
            privacy_unit="id",
            one_row_per_unit=True,
        ),
        "stops": DatasetInfo(
            "stops",
            "bus stops",
            "stops.arrow",
            STOPS,
            "public",
            (Column("stop_id", "int64"), Column("name", "string"), Column("district", "string")),
        ),
    },
)
PEOPLE_SCAN = Scan("people", ("id", "district", "age", "adult", "income"))
STOPS_SCAN = Scan("stops", ("stop_id", "name", "district"))
COUNT = (("n", AggExpr("count")),)
CAPS = Limits(memory_bytes=2048 * 2**20, cpu_seconds=30, wall_seconds=30.0, output_bytes=16 * 2**20)


def rows(node: Node, inputs: dict[str, cost.Facts] | None = None) -> int:
    return cost.analyse({"out": node}, MANIFEST, inputs).roots["out"].rows


def with_key(node: Node, columns: tuple[str, ...]) -> Project:
    """``node``'s columns plus a constant key ``k``: what a cross join looks like in the plan language."""
    return Project(node, (*((c, Col(c)) for c in columns), ("k", Lit(1))))


def test_rows_of_each_row_preserving_node() -> None:
    adults = Filter(PEOPLE_SCAN, Call("ge", (Col("age"), Lit(18))))
    assert rows(PEOPLE_SCAN) == PEOPLE
    assert rows(adults) == PEOPLE  # a filter keeps at most all: the data decides how many
    assert rows(Project(adults, (("age", Col("age")),))) == PEOPLE
    assert rows(Sort(adults, (("age", True),))) == PEOPLE
    assert rows(Limit(adults, 10)) == 10
    assert rows(Limit(adults, 10**6)) == PEOPLE
    assert rows(Bound(PEOPLE_SCAN, "district", 3)) == PEOPLE
    assert rows(Union((PEOPLE_SCAN, PEOPLE_SCAN, PEOPLE_SCAN))) == 3 * PEOPLE


def test_rows_of_aggregates() -> None:
    assert rows(Aggregate(PEOPLE_SCAN, (), COUNT)) == 1
    assert rows(Aggregate(PEOPLE_SCAN, ("age",), COUNT)) == PEOPLE
    # Public sets of values bound the groups: 2 categories and null, times true / false / null.
    assert rows(Aggregate(PEOPLE_SCAN, ("district", "adult"), COUNT)) == 3 * 3
    banded = Project(PEOPLE_SCAN, (("band", Call("clamp", (Col("age"), Lit(0), Lit(9)))),))
    assert rows(Aggregate(banded, ("band",), COUNT)) == 11  # 0..9 and null


def test_threshold_over_a_count_bounds_its_groups() -> None:
    per_age = Aggregate(PEOPLE_SCAN, ("age",), (("c", AggExpr("count_distinct", Col("id"))),))
    assert rows(Threshold(per_age, "c", 10, "cells")) == PEOPLE // 10
    assert rows(Threshold(per_age, "c", 0, "cells")) == PEOPLE
    summed = Aggregate(PEOPLE_SCAN, ("age",), (("c", AggExpr("sum", Col("age"))),))
    assert rows(Threshold(summed, "c", 10, "cells")) == PEOPLE  # a sum counts nothing


def test_input_rows_are_those_of_the_aggregate_that_produced_it() -> None:
    node = Input("dp1", (("district", "string"), ("n", "int64")))
    facts = cost.Facts(7, {}, frozenset({frozenset({"district"})}))
    assert rows(node, {"dp1": facts}) == 7
    # unique on its keys: joining it to a table on them does not multiply
    joined = Join(STOPS_SCAN, node, ("district",), "left")
    assert rows(joined, {"dp1": facts}) == STOPS


def test_many_to_many_join_multiplies() -> None:
    pairs = Join(with_key(PEOPLE_SCAN, ("id",)), with_key(STOPS_SCAN, ("stop_id",)), ("k",))
    assert rows(pairs) == PEOPLE * STOPS
    outer = Join(with_key(PEOPLE_SCAN, ("id",)), with_key(STOPS_SCAN, ("stop_id",)), ("k",), "full")
    assert rows(outer) == PEOPLE * STOPS + PEOPLE + STOPS


def test_a_side_unique_on_the_join_keys_does_not_multiply() -> None:
    per_district = Aggregate(PEOPLE_SCAN, ("district",), COUNT)
    assert rows(Join(STOPS_SCAN, per_district, ("district",), "inner")) == STOPS
    assert rows(Join(STOPS_SCAN, per_district, ("district",), "left")) == STOPS
    assert rows(Join(per_district, STOPS_SCAN, ("district",), "right")) == STOPS
    # the unmatched rows of the unique side come on top when the join keeps them
    assert rows(Join(STOPS_SCAN, per_district, ("district",), "full")) == STOPS + 3
    # a one-row table (a global aggregate) is unique on anything, even a constant key
    total = with_key(Aggregate(PEOPLE_SCAN, (), COUNT), ("n",))
    assert rows(Join(with_key(STOPS_SCAN, ("stop_id",)), total, ("k",))) == STOPS


def test_uniqueness_from_the_catalog_and_through_nodes() -> None:
    per_person = Aggregate(STOPS_SCAN, ("stop_id",), COUNT)
    people = Filter(PEOPLE_SCAN, Call("ge", (Col("age"), Lit(18))))
    renamed = Project(Sort(Limit(people, 500), (("age", False),)), (("person", Col("id")), ("age", Col("age"))))
    keyed = Project(per_person, (("person", Col("stop_id")), ("n", Col("n"))))
    # one_row_per_unit: people is unique on id, kept through filter, head, sort and a renaming projection
    assert rows(Join(keyed, renamed, ("person",))) == STOPS
    # a computed column is not the key any more
    computed = Project(people, (("person", Call("add", (Col("id"), Lit(0)))), ("age", Col("age"))))
    assert rows(Join(keyed, computed, ("person",))) == PEOPLE  # keyed is still unique on person
    assert rows(Join(computed, computed, ("person",))) == PEOPLE * PEOPLE
    # Bound(column, 1) leaves one row per value; a union is unique on nothing
    bounded = Bound(STOPS_SCAN, "stop_id", 1)
    assert rows(Join(bounded, STOPS_SCAN, ("stop_id",))) == STOPS
    doubled = Union((STOPS_SCAN, STOPS_SCAN))
    assert rows(Join(doubled, doubled, ("stop_id",))) == 4 * STOPS * STOPS


def test_uniqueness_through_joins() -> None:
    per_district = Aggregate(PEOPLE_SCAN, ("district",), COUNT)
    other = Aggregate(PEOPLE_SCAN, ("district",), (("m", AggExpr("max", Col("age"))),))
    both = Join(per_district, other, ("district",))  # unique on district: both sides are
    assert rows(Join(STOPS_SCAN, both, ("district",), "left")) == STOPS
    stops = Join(STOPS_SCAN, per_district, ("district",))  # not unique on district: STOPS rows share one
    assert rows(Join(stops, stops, ("district",))) == STOPS * STOPS


def test_a_shared_subtree_is_counted_once() -> None:
    heavy = Sort(Filter(PEOPLE_SCAN, Call("ge", (Col("age"), Lit(18)))), (("income", True),))
    once = cost.analyse({"a": heavy}, MANIFEST)
    twice = cost.analyse({"a": heavy, "b": Limit(heavy, 5)}, MANIFEST)
    copied = Sort(Filter(PEOPLE_SCAN, Call("ge", (Col("age"), Lit(18)))), (("income", True),))
    structural = cost.analyse({"a": heavy, "b": Limit(copied, 5)}, MANIFEST)
    assert twice.cells == structural.cells  # the engine shares structurally equal subtrees too
    assert twice.cells - once.cells < once.cells / 10


def test_memory_counts_copies_not_memory_mapped_scans() -> None:
    scan = cost.analyse({"a": PEOPLE_SCAN}, MANIFEST)
    passed = cost.analyse({"a": Project(PEOPLE_SCAN, (("id", Col("id")),))}, MANIFEST)
    computed = cost.analyse({"a": Project(PEOPLE_SCAN, (("x", Call("mul", (Col("age"), Lit(2)))),))}, MANIFEST)
    # outputs are counted once more as IPC streams; a computed column costs its values and its temporary
    assert passed.memory_bytes - scan.memory_bytes < 2 * (cost.NODE_BYTES + PEOPLE * 8 * 2)
    assert computed.memory_bytes > passed.memory_bytes


def test_widths_follow_the_column_types() -> None:
    facts = cost.analyse({"a": PEOPLE_SCAN}, MANIFEST).roots["a"]
    widths = {name: value.width for name, value in facts.columns.items()}
    assert widths == {"id": 8, "district": 4 + len("north"), "age": 8, "adult": 1, "income": 8}
    stops = cost.analyse({"a": STOPS_SCAN}, MANIFEST).roots["a"]
    assert stops.columns["name"].width == cost.STRING_BYTES


def test_cross_joins_beyond_the_limits_are_refused_naming_the_node() -> None:
    one_person = Filter(PEOPLE_SCAN, Call("eq", (Col("id"), Lit(42))))
    amplified = Join(
        Join(with_key(one_person, ("id",)), with_key(STOPS_SCAN, ("stop_id",)), ("k",)),
        Project(with_key(STOPS_SCAN, ("name",)), (("k", Col("k")), ("other", Col("name")))),
        ("k",),
    )
    # Counting a column passes over the joined rows (a bare count() is the join's row count: its rows hold only k).
    counted = (("n", AggExpr("count", Col("other"))),)
    with pytest.raises(LimitExceeded) as caught:
        cost.admit(cost.analyse({"pairs": Aggregate(amplified, (), counted)}, MANIFEST), CAPS)
    message = caught.value.message
    assert message.startswith("refused before running")
    assert "an inner join on k (reading people, stops) in output 'pairs'" in message
    assert f"up to {PEOPLE * STOPS * STOPS:,} rows" in message
    assert "1.5 GiB admitted (75% of the worker's 2.0 GiB limit)" in message


def test_time_and_output_limits() -> None:
    big = Join(with_key(PEOPLE_SCAN, ("id",)), with_key(STOPS_SCAN, ("stop_id",)), ("k",))
    fits = cost.analyse({"a": Aggregate(big, (), COUNT)}, MANIFEST)
    cost.admit(fits, CAPS)  # 200,000 rows: fine
    slow = Limits(memory_bytes=2**40, cpu_seconds=1, wall_seconds=0.2, output_bytes=2**30)
    with pytest.raises(LimitExceeded, match="values in about"):
        cost.admit(fits, slow)
    small_reply = Limits(memory_bytes=2**40, cpu_seconds=300, wall_seconds=300.0, output_bytes=2**20)
    with pytest.raises(LimitExceeded, match="reply limit"):
        cost.admit(cost.analyse({"a": Aggregate(big, ("id", "stop_id"), COUNT)}, MANIFEST), small_reply)


def _heavy(threshold: int) -> Aggregate:
    """A group-by over a computed column of every person: large temporaries, a small output."""
    rich = Filter(PEOPLE_SCAN, Call("ge", (Col("age"), Lit(threshold))))
    keyed = Project(rich, (("id", Col("id")), ("x", Call("mul", (Col("income"), Lit(2.0))))))
    return Aggregate(keyed, ("id",), (("s", AggExpr("sum", Col("x"))),))


def test_memory_of_independent_outputs_is_their_largest_not_their_sum() -> None:
    """The Arrow engine frees an output's inputs once it is computed: outputs over different rows are alive one
    at a time (their small results stay), where summing every node would count all of them at once."""
    one = cost.analyse({"a": _heavy(1)}, MANIFEST)
    four = cost.analyse({f"o{t}": _heavy(t) for t in range(1, 5)}, MANIFEST)
    summed = cost.analyse({f"o{t}": _heavy(t) for t in range(1, 5)}, MANIFEST, engine="duckdb")
    assert four.memory_bytes < 1.5 * one.memory_bytes
    assert summed.memory_bytes > 3 * (one.memory_bytes - cost.RUN_BYTES)


def test_what_outlives_its_node_stays_counted() -> None:
    """A shared subtree is kept for the whole run, and an output that passes its input's columns through (a
    Project of plain columns, a Limit) keeps that input alive: neither is freed in the model."""
    wide = Project(PEOPLE_SCAN, (("id", Col("id")), ("x", Call("mul", (Col("income"), Lit(2.0))))))
    alone = cost.analyse({"a": Aggregate(wide, (), COUNT)}, MANIFEST)
    kept = cost.analyse({"a": Aggregate(wide, (), COUNT), "b": Limit(wide, 5)}, MANIFEST)
    assert kept.memory_bytes - alone.memory_bytes >= PEOPLE * 8  # b's slice holds every computed value


def test_the_live_model_never_exceeds_the_sum_of_every_node() -> None:
    plans: dict[str, Node] = {
        "join": Join(Aggregate(PEOPLE_SCAN, ("district",), COUNT), STOPS_SCAN, ("district",), "left"),
        "union": Union((Project(PEOPLE_SCAN, (("v", Col("age")),)), Project(STOPS_SCAN, (("v", Col("stop_id")),)))),
        "sorted": Sort(Bound(PEOPLE_SCAN, "district", 3), (("age", False),)),
        "threshold": Threshold(Aggregate(PEOPLE_SCAN, ("district",), COUNT), "n", 10, "t"),
    }
    for name, node in plans.items():
        live = cost.analyse({"out": node}, MANIFEST)
        summed = cost.analyse({"out": node}, MANIFEST, engine="duckdb")
        assert live.memory_bytes <= summed.memory_bytes, name
    assert cost.analyse(plans, MANIFEST).memory_bytes <= cost.analyse(plans, MANIFEST, engine="duckdb").memory_bytes


def test_a_distinct_count_is_padded_by_how_its_engine_computes_it() -> None:
    """The Arrow engine sorts a distinct count of integers without keys; another engine's count (DuckDB's hash)
    is padded as hashed, for every value distinct; keys or a float argument are hashed on both."""

    def engine_seconds(node: Node, engine: str) -> float:
        return cost.analyse({"out": node}, MANIFEST, engine=engine).engine_seconds

    ids = Aggregate(PEOPLE_SCAN, (), (("n", AggExpr("count_distinct", Col("id"))),))
    incomes = Aggregate(PEOPLE_SCAN, (), (("n", AggExpr("count_distinct", Col("income"))),))
    by_district = Aggregate(PEOPLE_SCAN, ("district",), (("n", AggExpr("count_distinct", Col("id"))),))
    assert engine_seconds(ids, "arrow") < engine_seconds(incomes, "arrow")
    assert engine_seconds(ids, "arrow") < engine_seconds(ids, "duckdb")
    assert engine_seconds(incomes, "duckdb") <= engine_seconds(ids, "duckdb") * 1.01
    assert engine_seconds(by_district, "arrow") > engine_seconds(ids, "arrow")
