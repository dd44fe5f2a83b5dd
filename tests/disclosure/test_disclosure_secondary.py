"""Secondary suppression: with row and column totals released beside a table, a suppressed cell must not be
recoverable by subtraction."""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from saferoom.api import Context, namespace
from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import secondary
from tests.disclosure.test_disclosure_dominance import people
from tests.support import checked, release_outputs

NS: dict[str, Any] = namespace()  # the sandbox's names, called as the algorithms call them
count, sum_ = NS["count"], NS["sum"]


@pytest.fixture(scope="module")
def manifest(catalog_dir: Path) -> Manifest:
    m = Manifest.load(catalog_dir)
    return dataclasses.replace(m, datasets={"population": m.dataset("population")})


def crosstab(manifest: Manifest, groups: dict[tuple[str, str], int], with_total: bool = True):
    """A population with ``groups[(district, sex)]`` people each, and a table with its margins released."""
    rows: dict[Any, Any] = {}
    for (district, sex), n in groups.items():
        rows.setdefault(district, []).extend([(sex, 30_000.0)] * n)
    table = people({d: [income for _, income in r] for d, r in rows.items()})
    sexes = [s for (d, s), n in groups.items() for _ in range(n)]
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("sex"), "sex", pa.array(sexes).dictionary_encode())
    ctx = Context(manifest, ["population"])
    population = ctx.table("population")
    outputs = {
        "table": population.group_by("district", "sex").agg(n=count()),
        "by_district": population.group_by("district").agg(n=count()),
        "by_sex": population.group_by("sex").agg(n=count()),
    }
    if with_total:
        outputs["total"] = population.agg(n=count())
    info = manifest.dataset("population")
    columns = [c.name for c in info.columns]
    return release_outputs(manifest, {"population": table.select(columns)}.__getitem__, outputs)


def shown(released) -> list[dict]:
    """The rows whose values were released (suppressed and empty cells may be listed, marked, without values)."""
    return [r for r in released.table.to_pylist() if r.get("cell_status", "released") == "released"]


def recoverable(out) -> list[str]:
    """Margin cells that cover exactly one suppressed cell of the table (what an attacker could subtract)."""
    released = {(r["district"], r["sex"]) for r in shown(out["table"])}
    all_cells = {(d, s) for d in ("Siming", "Huli", "Jimei") for s in ("female", "male")}
    hidden = all_cells - released
    found = []
    for margin, index in (("by_district", 0), ("by_sex", 1)):
        column = "district" if index == 0 else "sex"
        for row in shown(out[margin]):
            if sum(1 for cell in hidden if cell[index] == row[column]) == 1:
                found.append(f"{margin}:{row[column]}")
    if "total" in out and out["total"].table.num_rows and len(hidden) == 1:
        found.append("total")
    return found


def test_one_small_cell_beside_its_row_and_column_totals(manifest: Manifest) -> None:
    groups = {
        ("Siming", "female"): 5,
        ("Siming", "male"): 20,
        ("Huli", "female"): 20,
        ("Huli", "male"): 20,
        ("Jimei", "female"): 20,
        ("Jimei", "male"): 20,
    }
    out = crosstab(manifest, groups)
    assert ("Siming", "female") not in {(r["district"], r["sex"]) for r in shown(out["table"])}
    assert recoverable(out) == []
    secondary = [r for r in checked(out["table"]).rules if r.rule == "secondary"]
    assert secondary and secondary[0].cells_suppressed >= 1
    assert checked(out["table"]).suppressed_cells == 1 + secondary[0].cells_suppressed


def test_nothing_extra_is_suppressed_when_no_margin_is_released(manifest: Manifest) -> None:
    groups = {("Siming", "female"): 5, ("Siming", "male"): 20, ("Huli", "female"): 20, ("Huli", "male"): 20}
    rows: dict[Any, Any] = {}
    for (district, _sex), n in groups.items():
        rows.setdefault(district, []).extend([30_000.0] * n)
    ctx = Context(manifest, ["population"])
    alone = release_outputs(
        manifest,
        {"population": people(rows).select([c.name for c in manifest.dataset("population").columns])}.__getitem__,
        {"table": ctx.table("population").group_by("district", "sex").agg(n=count())},
    )
    assert all(r.rule != "secondary" for r in alone["table"].report.rules)


def test_a_table_without_small_cells_keeps_every_cell(manifest: Manifest) -> None:
    groups = {(d, s): 15 for d in ("Siming", "Huli", "Jimei") for s in ("female", "male")}
    out = crosstab(manifest, groups)
    assert len(shown(out["table"])) == 6 and len(shown(out["by_district"])) == 3
    # The researcher reads that the rule ran whether or not it took a cell (that would be one more bit); the
    # checker sees it took none.
    assert any(r.rule == "secondary" for r in out["table"].report.rules)
    assert all(r.cells_suppressed == 0 for r in checked(out["table"]).rules if r.rule == "secondary")


def test_through_the_real_pipeline_no_margin_gives_a_suppressed_cell_away(catalog_dir: Path) -> None:
    from saferoom.jobs.local import run_local

    package = Path(__file__).resolve().parents[1] / "fixtures" / "packages" / "margins"
    outs = {o.name: o for o in run_local(package, catalog_dir, {}).outputs}
    table = outs["table"].table
    assert table is not None
    released = {(r["district"], r["household_size"]) for r in table.to_pylist()}
    districts = {r["district"] for r in outs["by_district"].table.to_pylist()}
    sizes = {r["household_size"] for r in outs["by_size"].table.to_pylist()}
    every = {(d, s) for d in districts for s in sizes}
    hidden = every - released  # cells that exist but were suppressed (a cell with no people at all counts too)
    for d in districts:
        assert sum(1 for cell in hidden if cell[0] == d) != 1
    for s in sizes:
        assert sum(1 for cell in hidden if cell[1] == s) != 1


def _reference(
    kept: set[Any], hidden: set[Any], positions: dict[str, list[int]], margin_kept: dict[str, set[Any]]
) -> tuple[set[Any], dict[str, set[Any]]]:
    """The rule as first written: rescan every hidden cell and margin cell each pass (quadratic, same result)."""
    project = secondary._project
    extra: set[Any] = set()
    removed: dict[str, set[Any]] = {m: set() for m in positions}
    changed = bool(hidden)
    while changed:
        changed = False
        for m in positions:
            groups: dict[Any, list[Any]] = {}
            for key in hidden:
                groups.setdefault(project(key, positions[m]), []).append(key)
            for group, members in sorted(groups.items(), key=lambda item: repr(item[0])):
                if len(members) != 1 or group not in margin_kept[m]:
                    continue
                candidates = sorted((k for k in kept if project(k, positions[m]) == group), key=repr)
                if candidates:
                    kept.discard(candidates[0])
                    hidden.add(candidates[0])
                    extra.add(candidates[0])
                else:
                    margin_kept[m].discard(group)
                    removed[m].add(group)
                changed = True
    return extra, removed


@pytest.mark.parametrize("seed", range(40))
def test_the_linear_rule_suppresses_what_the_straightforward_one_does(seed: int) -> None:
    rng = random.Random(seed)
    dims = [rng.randint(1, 6) for _ in range(rng.randint(1, 3))]
    cells = list(itertools.product(*(range(d) for d in dims)))
    hidden = {c for c in cells if rng.random() < rng.choice([0.05, 0.2, 0.5])}
    subsets = [s for r in range(len(dims)) for s in itertools.combinations(range(len(dims)), r)]
    positions = {f"m{i}": list(s) for i, s in enumerate(rng.sample(subsets, rng.randint(1, len(subsets))))}
    margin_kept = {
        m: {g for g in {tuple(c[i] for i in pos) for c in cells} if rng.random() < 0.8} for m, pos in positions.items()
    }
    kept = set(cells) - hidden
    expected = _reference(set(kept), set(hidden), positions, {m: set(v) for m, v in margin_kept.items()})
    assert secondary._complements(set(kept), set(hidden), positions, {m: set(v) for m, v in margin_kept.items()}) == (
        expected
    )
