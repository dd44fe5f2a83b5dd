"""Red team, release soundness (issue 11), on the default (differentially private) city: one person's value
decides whether a computed value is NaN, or whether the engine fails. Neither may reach the researcher.

    NaN bit         a statistic that gets noised turns NaN where one person's condition holds (sqrt of -1,
                    0 * exp(1000), a negative base to a fractional power): a NaN sum stays NaN through any noise,
                    so whether the release is NaN would tell the condition. The exact statistic must stay finite
                    and move by at most its sensitivity; the job must succeed and release finite numbers.
    engine-failure bit   grid_cell of a huge latitude or a cast of a huge float to int where the condition holds:
                    a failing job (or one whose message quotes the value) would tell the condition. The job must
                    succeed, or fail identically, whether the condition holds or not, and no message may carry
                    the value.

Each attack is checked at the level of exact statistics (protect + engine over the real generated data, with the
condition true and false: the threshold ``t`` below and above the victim's value), through ``run_local`` (what
``saferoom dev run`` uses), and for the failure bit through the real server over mutual TLS.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.api.namespace import Context, namespace
from saferoom.catalog import Catalog
from saferoom.catalog.manifest import Manifest
from saferoom.disclosure import dp
from saferoom.disclosure.protect import protect
from saferoom.engine import ArrowEngine
from saferoom.errors import SaferoomError
from saferoom.jobs.local import run_local
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

VICTIM = 4242

# name -> (dataset, the body of run(ctx, victim, t): it returns the outputs). ``cond`` holds for the victim's rows
# whose value exceeds t, and for no other row.
NAN_ATTACKS = {
    "sqrt-of-minus-one": (
        "population",
        """
        cond = (col("person_id") == victim) & (col("income") > t)
        return {"x": ctx.table("population").agg(m=mean(sqrt(when(cond, -1.0).otherwise(0.0)).clip(0, 1)))}
        """,
    ),
    "zero-times-exp-1000": (
        "population",
        """
        cond = (col("person_id") == victim) & (col("income") > t)
        value = when(cond, 0.0).otherwise(1.0) * exp(when(cond, 1000.0).otherwise(0.0))
        return {"x": ctx.table("population").group_by("district").agg(s=sum(value.clip(0, 1)), m=mean(value.clip(0, 1)))}
        """,
    ),
    "negative-base-fractional-power": (
        "population",
        """
        cond = (col("person_id") == victim) & (col("income") > t)
        value = (when(cond, -8.0).otherwise(8.0) ** (1 / 3)).clip(0, 2)
        return {"x": ctx.table("population").agg(m=mean(value), q=median(value), s=sum(value))}
        """,
    ),
    "housing-k2": (
        "housing_transactions",
        """
        cond = (col("buyer_id") == victim) & (col("price") > t)
        value = sqrt(when(cond, -1.0).otherwise(0.0)).clip(0, 1)
        return {"x": ctx.table("housing_transactions").agg(m=mean(value), q=quantile(value, 0.9), s=sum(value))}
        """,
    ),
}

FAILURE_ATTACKS = {
    "grid-cell-of-1e300": (
        "population",
        """
        cond = (col("person_id") == victim) & (col("income") > t)
        cells = ctx.table("population").with_columns(cell=grid_cell(when(cond, 1e300).otherwise(24.5), col("lon")))
        return {"x": cells.group_by("cell").agg(n=count())}
        """,
    ),
    "grid-cell-of-a-huge-latitude": (
        "population",
        """
        cond = (col("person_id") == victim) & (col("income") > t)
        lat = col("lat") * when(cond, 1e306).otherwise(1.0)
        cells = ctx.table("population").with_columns(cell=grid_cell(lat, col("lon"), 10))
        return {"x": cells.group_by("cell").agg(n=count(), age=mean("age"))}
        """,
    ),
    "cast-1e300-to-int": (
        "population",
        """
        cond = (col("person_id") == victim) & (col("income") > t)
        big = when(cond, 1e300).otherwise(1.0).cast("int")
        people = ctx.table("population").with_columns(big=big)
        return {"x": people.group_by("big").agg(n=count()), "y": people.agg(s=sum(col("big").clip(0, 10)))}
        """,
    ),
    "housing-cast-and-grid": (
        "housing_transactions",
        """
        cond = (col("buyer_id") == victim) & (col("price") > t)
        rows = ctx.table("housing_transactions").with_columns(
            cell=grid_cell(when(cond, -1e300).otherwise(col("lat")), col("lon"), 500),
            big=(col("price") * when(cond, 1e300).otherwise(1.0)).cast("int"),
        )
        return {"x": rows.group_by("cell").agg(n=count()), "y": rows.agg(s=sum(col("big").clip(0, 1e9)))}
        """,
    ),
}
ATTACKS = {**NAN_ATTACKS, **FAILURE_ATTACKS}
# What a message must not contain: the huge values, in any spelling, or long runs of their digits.
LEAK = re.compile(r"e\+?30[0-9]|1e300|[0-9]{13,}|\binf(inity)?\b", re.IGNORECASE)


def _source(body: str) -> str:
    return f"def run(ctx, victim={VICTIM}, t=0.0):\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


def _write(root: Path, name: str, dataset: str, body: str) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "saferoom.toml").write_text(
        textwrap.dedent(
            f"""\
            name = "{name}"
            version = "1.0.0"
            entrypoint = "main.py:run"
            datasets = ["{dataset}"]
            [parameters]
            victim = {{ type = "int", default = {VICTIM} }}
            t = {{ type = "float", default = 0.0 }}
            [privacy]
            epsilon = {{ {dataset} = 0.5 }}
            """
        )
    )
    (directory / "main.py").write_text(_source(body))
    return directory


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soundness-packages")
    return {name: _write(root, name, dataset, body) for name, (dataset, body) in ATTACKS.items()}


@pytest.fixture(scope="module")
def victims(dp_catalog_dir: Path) -> dict[str, tuple[int, float, float]]:
    """Per dataset: the victim's unit id and a threshold t below (cond true) and above (cond false) its values."""
    with Catalog.open(dp_catalog_dir) as catalog:
        people = catalog.table("population")
        income = people.filter(pc.equal(people["person_id"], VICTIM))["income"][0].as_py()
        sales = catalog.table("housing_transactions")
        buyers, counts = np.unique(sales["buyer_id"].to_numpy(), return_counts=True)
        buyer = int(buyers[np.argmax(counts)])  # the buyer with the most rows (k = 2 bounds them)
        prices = sales.filter(pc.equal(sales["buyer_id"], buyer))["price"].to_numpy()
    assert income > 0 and counts.max() >= 2
    return {
        "population": (VICTIM, income / 2, income * 2 + 1),
        "housing_transactions": (buyer, float(prices.min()) / 2, float(prices.max()) * 2 + 1),
    }


def _outputs(manifest: Manifest, dataset: str, body: str, victim: int, t: float) -> dict[str, Any]:
    """The attack's plans, built by running its code (ours, trusted) against the real API."""
    scope: dict[str, Any] = dict(namespace())
    exec(compile(_source(body), "<attack>", "exec"), scope)  # the test's own attack code, not sandboxed
    returned = scope["run"](Context(manifest, [dataset]), victim=victim, t=t)
    return {name: table._node for name, table in returned.items()}


def _statistics(agg: dp.NoisyAggregate, tables: dict[str, pa.Table]) -> dict[str, Any]:
    """What gets noised: column -> {cell: value}, or {cell: quantile scores}."""
    engine = ArrowEngine(source=lambda name: tables[name])
    exact = engine.execute(agg.exact).table
    cells = list(zip(*(exact.column(k).to_pylist() for k in agg.keys), strict=True)) if agg.keys else [()]
    out: dict[str, Any] = {"(cells)": dict(zip(cells, exact.column(agg.count).to_pylist(), strict=True))}
    for column in agg.columns:
        if column.kind in ("count_values", "sum", "mean"):
            out[column.name] = dict(zip(cells, exact.column(column.source).to_pylist(), strict=True))
        elif column.kind == "quantile":
            histogram = engine.execute(agg.histograms[column.source]).table
            keys = zip(*(histogram.column(k).to_pylist() for k in agg.keys), strict=True) if agg.keys else None
            bins: dict[tuple[Any, ...], np.ndarray] = {}
            for key, b, n in zip(keys or [()] * histogram.num_rows, histogram["__bin"].to_pylist(),
                                 histogram["__n"].to_pylist(), strict=True):  # fmt: skip
                bins.setdefault(tuple(key), np.zeros(dp.QUANTILE_BINS, dtype=np.int64))[b] += n
            scores = {key: dp._quantile_scores(c, column.q) for key, c in bins.items()}
            out[column.name] = scores
            # the first stage's scores: each group's best candidate (``dp._draws``), calibrated the same
            out[f"{column.name} (groups)"] = {key: dp._group_minima(s[np.newaxis, :])[0] for key, s in scores.items()}
    return out


def _moved(a: dict[Any, Any], b: dict[Any, Any]) -> float:
    """L1 over cells (a missing cell counts as zeros); for scores, the per-cell L-inf summed over cells."""
    total = 0.0
    for cell in set(a) | set(b):
        x, y = a.get(cell), b.get(cell)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            zero = dp._quantile_scores(np.zeros(dp.QUANTILE_BINS, dtype=np.int64), 0.5)
            present = np.asarray(x if isinstance(x, np.ndarray) else y)
            if len(present) != len(zero):  # a quantile's group minima
                zero = dp._group_minima(zero[np.newaxis, :])[0]
            total += float(np.max(np.abs((x if x is not None else zero) - (y if y is not None else zero))))
        else:
            total += abs(float(x or 0.0) - float(y or 0.0))
    return total


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_noised_statistics_stay_finite_and_within_the_sensitivity(
    name: str, dp_catalog_dir: Path, victims: dict[str, tuple[int, float, float]]
) -> None:
    """Exact statistics with the condition true and false, each against the data without the victim (a change
    is a removal and an addition): finite, and moved by at most the sensitivity the noise is calibrated to."""
    dataset, body = ATTACKS[name]
    victim, below, above = victims[dataset]
    manifest = Manifest.load(dp_catalog_dir)
    unit = manifest.dataset(dataset).privacy_unit
    with Catalog.open(dp_catalog_dir) as catalog:
        full = {dataset: catalog.table(dataset)}
        without = {dataset: full[dataset].filter(pc.not_equal(full[dataset][unit], victim))}
        for t in (below, above):
            protected = protect(_outputs(manifest, dataset, body, victim, t), manifest)
            aggregates = [agg for p in protected.values() for agg in p.noisy.values()]
            assert aggregates, "the attack must reach a DP aggregate"
            for agg in aggregates:
                k = agg.contributions
                with_victim = _statistics(agg, full)  # must not raise: the engine is total
                reference = _statistics(agg, without)
                sensitivity = {c.name: c.sensitivity(k) for c in agg.columns} | {"(cells)": float(k)}
                sensitivity |= {f"{c.name} (groups)": c.sensitivity(k) for c in agg.columns if c.kind == "quantile"}
                for column, cells in with_victim.items():
                    for cell, value in cells.items():
                        finite = np.isfinite(value).all() if isinstance(value, np.ndarray) else (
                            value is None or math.isfinite(value))  # fmt: skip
                        assert finite, f"{name} (t={t:g}): {column} is {value} in cell {cell}: NaN/inf gets noised"
                    moved = _moved(cells, reference[column])
                    assert moved <= sensitivity[column] * (1 + 1e-9), (
                        f"{name} (t={t:g}): one person moved {column} by {moved:g}, more than its sensitivity "
                        f"{sensitivity[column]:g} (k = {k})"
                    )


def _run(package: Path, data: Path, victim: int, t: float, reports: dict[str, Any] | None = None) -> tuple[str, Any]:
    """What ``saferoom dev run`` gives the researcher: ("ok", released tables) or ("failed", the error)."""
    try:
        outcome = run_local(package, data, {"victim": str(victim), "t": repr(t)})
    except SaferoomError as exc:
        return "failed", f"{type(exc).__name__}: {exc.message}"
    if reports is not None:
        reports.update({o.name: o.report for o in outcome.outputs})
    return "ok", {o.name: o.table for o in outcome.outputs}


def _noise(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["column"]: n for rule in report.get("rules", []) for n in rule.get("noise", [])}


def _far_apart(name: str, a: pa.Table, b: pa.Table, report: dict[str, Any]) -> list[str]:
    """Released values that differ between the two runs by far more than the noise and one person's change allow
    (a NaN that became a bound, or a clamp that pinned the value, shows here while staying finite)."""
    noise = _noise(report)
    keys = [c for c in a.column_names if c not in noise]
    rows_b = {tuple(r[k] for k in keys): r for r in b.to_pylist()}
    problems = []
    for row in a.to_pylist():
        other = rows_b.get(tuple(row[k] for k in keys))
        if other is None:
            continue
        for column, entry in noise.items():
            if column not in row or "ci95" not in entry:
                continue  # a selection (a quantile's report noisy min) has no additive noise to bound it by
            if "mean" in entry.get("mechanism", "") or "centred" in entry.get("mechanism", ""):
                # 40% of the bounds' width (sensitivity = k (hi - lo) / 2): one person moves a mean over cells
                # of thousands by far less, its noise too; a NaN that became the midpoint moves it by half
                k = float(noise.get("(cells)", noise.get("(count)", {})).get("sensitivity", 1))
                allowed = 0.4 * 2 * entry["sensitivity"] / k
            else:
                allowed = 10 * entry["ci95"] + 2 * entry["sensitivity"]
            if abs(float(row[column]) - float(other[column])) > allowed:
                problems.append(f"{name}: {column} = {row[column]} when the condition holds, {other[column]} when "
                                f"not (allowed {allowed:g}) in {dict((k, row[k]) for k in keys)}")  # fmt: skip
    return problems


def _numbers(table: pa.Table | None) -> list[float]:
    if table is None:
        return []
    return [float(v) for c in table.columns if pa.types.is_floating(c.type) or pa.types.is_integer(c.type)
            for v in c.to_pylist() if v is not None]  # fmt: skip


@pytest.mark.parametrize("name", sorted(NAN_ATTACKS))
def test_a_nan_bit_job_succeeds_and_releases_finite_values(
    name: str, packages: dict[str, Path], dp_catalog_dir: Path, victims: dict[str, tuple[int, float, float]]
) -> None:
    dataset, _ = NAN_ATTACKS[name]
    victim, below, above = victims[dataset]
    runs = []
    for t in (below, above):
        reports: dict[str, Any] = {}
        state, released = _run(packages[name], dp_catalog_dir, victim, t, reports)
        assert state == "ok", f"{name} (t={t:g}): {released}"
        for output, table in released.items():
            values = _numbers(table)
            assert all(math.isfinite(v) for v in values), f"{name} (t={t:g}): {output} released {values}"
        runs.append((released, reports))
    (holds, reports), (not_holds, _) = runs
    problems = [p for o in holds for p in _far_apart(name, holds[o], not_holds[o], reports[o])]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(FAILURE_ATTACKS))
def test_an_engine_failure_bit_job_ends_the_same_either_way(
    name: str, packages: dict[str, Path], dp_catalog_dir: Path, victims: dict[str, tuple[int, float, float]]
) -> None:
    dataset, _ = FAILURE_ATTACKS[name]
    victim, below, above = victims[dataset]
    (state_true, true), (state_false, false) = (_run(packages[name], dp_catalog_dir, victim, t) for t in (below, above))
    assert state_true == state_false, f"{name}: {state_true} when the condition holds, {state_false} when not: " \
        f"{true if state_true == 'failed' else false}"  # fmt: skip
    if state_true == "failed":
        assert true == false
        assert not LEAK.search(true), f"{name}: the message carries the value: {true}"
    else:
        for released in (true, false):
            assert all(math.isfinite(v) for t in released.values() for v in _numbers(t))


@pytest.fixture(scope="module")
def soundness_server(
    dp_catalog_dir: Path, packages: dict[str, Path], deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, dict[str, str]]]:
    srv, port = create_server(server_config(dp_catalog_dir, tmp_path_factory.mktemp("soundness"), deployment.pki))
    hashes = {}
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            for name in FAILURE_ATTACKS:
                summary, _ = alice.submit_package(packages[name])
                olga.approve_package(summary.hash, days=1)
                hashes[name] = summary.hash
            for dataset in ("population", "housing_transactions"):
                olga.set_budget("alice", dataset, epsilon=50.0, delta=1e-4)
        yield srv, hashes
    finally:
        srv.stop(1.0)


@pytest.mark.parametrize("name", sorted(FAILURE_ATTACKS))
def test_through_the_server_the_failure_bit_reaches_nobody(
    name: str,
    soundness_server: tuple[SaferoomServer, dict[str, str]],
    deployment: Deployment,
    victims: dict[str, tuple[int, float, float]],
) -> None:
    srv, hashes = soundness_server
    dataset, _ = FAILURE_ATTACKS[name]
    victim, below, above = victims[dataset]
    seen = []
    with deployment.client("alice", srv.port) as alice:
        for t in (below, above):
            job = alice.run_job(hashes[name], params={"victim": victim, "t": t})
            final = alice.wait(job.id, timeout=120)
            seen.append((final.state, final.error_code, final.error_message))
            assert not LEAK.search(final.error_message), f"{name}: the message carries the value: {final}"
            if final.state == "succeeded":
                for output in alice.get_result(job.id).outputs:
                    assert all(math.isfinite(v) for v in _numbers(output.table)), f"{name}: {output}"
    assert seen[0] == seen[1], f"{name}: the condition shows in how the job ended: {seen}"
