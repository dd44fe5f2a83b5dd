"""A fixed-seed, time-boxed search for sensitivity violations (issue 11, item 6): random plans over every registry
function, their DP exact statistics on a small dataset and on its neighbours (one person removed, added with
extreme values, or changed), against ``DPColumn.sensitivity``. The longer search is ``bench/fuzz_sensitivity.py``.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from bench.fuzz_sensitivity import Fuzzer, World, function_arities, known_attacks, make_world
from saferoom.disclosure import dp
from saferoom.engine import plan
from saferoom.errors import SaferoomError

SEED = 20261201
SECONDS = 15.0  # the search itself; building the world and protect's imports take a few more


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("fuzz-city") / "city")


def test_the_fuzzer_covers_every_registry_function(world: World) -> None:
    maker = Fuzzer(world, SEED).maker
    used: set[str] = set()
    for _ in range(400):
        try:
            _, table = maker.table()
        except SaferoomError:  # refused while building: fine, what counts here is which functions it reaches
            continue
        text = plan.to_json(table._node)
        used |= {name for name in function_arities() if f'"fn":"{name}"' in text}
    assert set(function_arities()) - used == set()


def test_no_plan_moves_a_noised_statistic_beyond_its_sensitivity(world: World) -> None:
    report = Fuzzer(world, SEED, known_attacks()).run(SECONDS)
    print(report.summary())
    print(f"refused: {report.refused}")
    assert report.accepted >= 20, f"too few plans were accepted by protect to mean anything: {report.summary()}"
    assert report.neighbours >= 500
    assert not report.findings, report.summary()


def test_the_checker_reports_a_statistic_that_moves_too_far(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: with every column's sensitivity claimed to be zero, a sum of ages must be reported."""
    monkeypatch.setattr(dp.DPColumn, "sensitivity", lambda self, k: 0.0)
    fuzzer = Fuzzer(world, SEED)
    ctx, ns = fuzzer.maker.ctx, cast(dict[str, Any], fuzzer.maker.ns)
    fuzzer.check("population", ctx.table("population").agg(x=ns["sum"]("age"))._node)
    findings = list(fuzzer.report.findings.values())
    assert [f.kind for f in findings] == ["sensitivity"]
    assert findings[0].column == "x" and '"node":"aggregate"' in findings[0].plan_json
    assert "allowed" not in findings[0].observed and findings[0].allowed == "sensitivity 0 (k = 1)"
