"""Models: ols through the real pipeline (sandbox worker, engine worker, release), checked against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saferoom.catalog import Catalog
from saferoom.jobs.local import run_local

PACKAGE = Path(__file__).resolve().parents[1] / "fixtures" / "packages" / "regression"


@pytest.fixture(scope="module")
def outcome(catalog_dir: Path):
    return {o.name: o for o in run_local(PACKAGE, catalog_dir, {}).outputs}


def test_ols_releases_coefficients_that_match_a_direct_fit(outcome, catalog_dir: Path) -> None:
    fit = outcome["fit"]
    assert fit.kind == "model" and fit.table is not None
    assert fit.table.column_names == ["term", "estimate", "std_error"]  # no residuals, no fitted values
    with Catalog.open(catalog_dir) as catalog:
        people = catalog.table("population")
        age = people.column("age").to_numpy().astype(float)
        mask = age >= 18
        x = np.column_stack([np.ones(mask.sum()), age[mask], people.column("household_size").to_numpy()[mask]])
        y = people.column("income").to_numpy()[mask]
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    released = dict(zip(fit.table.column("term").to_pylist(), fit.table.column("estimate").to_pylist(), strict=True))
    assert list(released) == ["intercept", "age", "household_size"]
    assert np.allclose([released[t] for t in released], beta, rtol=1e-6)
    residual = y - x @ beta
    expected_se = np.sqrt(np.diag(np.linalg.inv(x.T @ x)) * (residual @ residual) / (len(y) - 3))
    assert np.allclose(fit.table.column("std_error").to_numpy(), expected_se, rtol=1e-5)
    assert any(r["rule"] == "model" and "residual degrees of freedom" in r["explanation"] for r in fit.report["rules"])


def test_too_few_residual_degrees_of_freedom_withholds_the_model(outcome) -> None:
    tiny = outcome["tiny"]
    assert tiny.table is not None and tiny.table.num_rows == 0
    explanation = next(r["explanation"] for r in tiny.report["rules"] if r["rule"] == "model")
    assert "at least 10 residual degrees of freedom" in explanation and "9" not in explanation  # no exact count
    reasons = [w["explanation"] for w in tiny.check["withheld"] if w["rule"] == "model"]
    assert reasons and "9 residual degrees of freedom" in reasons[0]  # the checker sees why


def test_bad_models_are_refused_in_the_api_and_from_a_hostile_worker(catalog_dir: Path) -> None:
    from saferoom.api import Context
    from saferoom.catalog.manifest import Manifest
    from saferoom.errors import InvalidPlan, UserCodeError, WorkerCrashed
    from saferoom.jobs.pipeline import _model_spec

    people = Context(Manifest.load(catalog_dir), ["population"]).table("population")
    for y, x in (("district", ["age"]), ("income", []), ("income", ["income"]), ("income", ["age"] * 11),
                 ("income", "age"), ("income", ["_hidden"])):  # fmt: skip
        with pytest.raises(UserCodeError):
            people.ols(y, x)
    for hostile in ({"kind": "probit", "input": {}, "y": "a", "x": []}, {"kind": "ols", "input": {}, "y": 1, "x": []},
                    {"kind": "ols", "y": "a", "x": ["b"]}, "ols"):  # fmt: skip
        with pytest.raises(WorkerCrashed):
            _model_spec(hostile)
    from saferoom.disclosure.models import ModelSpec, ols_statistics

    with pytest.raises(InvalidPlan):  # names are checked against the plan by the server, not trusted
        ols_statistics(people._node, ModelSpec("district", ("age",)), Manifest.load(catalog_dir))


def test_logit_converges_to_the_direct_fit(outcome, catalog_dir: Path) -> None:
    fit = outcome["classify"]
    assert fit.kind == "model" and fit.table is not None and fit.table.num_rows == 3
    with Catalog.open(catalog_dir) as catalog:
        people = catalog.table("population")
        age = people.column("age").to_numpy().astype(float)
        mask = age >= 18
        x = np.column_stack([np.ones(mask.sum()), age[mask], people.column("household_size").to_numpy()[mask]])
        y = (people.column("income").to_numpy()[mask] > 100_000).astype(float)
    beta = np.zeros(3)
    for _ in range(50):  # plain Newton-Raphson, the textbook way
        prob = 1 / (1 + np.exp(-x @ beta))
        hessian = x.T @ (x * (prob * (1 - prob))[:, None])
        beta = beta + np.linalg.solve(hessian, x.T @ (y - prob))
    assert np.allclose(fit.table.column("estimate").to_numpy(), beta, rtol=1e-6, atol=1e-9)
    assert np.allclose(fit.table.column("std_error").to_numpy(), np.sqrt(np.diag(np.linalg.inv(hessian))), rtol=1e-5)
    assert "Newton steps" in next(r["explanation"] for r in fit.report["rules"] if r["rule"] == "model")


def test_logit_of_a_response_that_is_not_zero_or_one_is_withheld(outcome) -> None:
    bad = outcome["not_binary"]
    assert bad.table is not None and bad.table.num_rows == 0
    assert "must be 0 or 1" not in str(bad.report)  # whether the data's response is binary: checker only
    assert any("must be 0 or 1" in w["explanation"] for w in bad.check["withheld"])


def test_every_logit_takes_the_same_number_of_releases_whatever_the_data(
    catalog_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit that stopped when it converged, or at the step that found its response not 0/1, would show by the
    job's duration (each release is padded to its worst case) how many steps the data needed: one that
    converges and one withheld at its first step make the same releases."""
    from saferoom.catalog.manifest import Manifest
    from saferoom.config import WorkerLimits
    from saferoom.disclosure.models import NEWTON_STEPS
    from saferoom.jobs.pipeline import Pipeline
    from saferoom.packages import load_package

    limits = WorkerLimits(memory_mib=512, cpu_seconds=10, wall_seconds=10.0, output_mib=4)
    engine = WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16)
    pipeline = Pipeline(catalog_dir, Manifest.load(catalog_dir), limits, engine)
    releases: list[str] = []
    real = pipeline._release_one
    monkeypatch.setattr(pipeline, "_release_one", lambda *a, **k: releases.append("step") or real(*a, **k))
    try:
        outcome = {o.name: o for o in pipeline.run(load_package(PACKAGE), {}).outputs}
    finally:
        pipeline.close()
    assert outcome["classify"].table is not None and outcome["classify"].table.num_rows == 3  # converged
    assert outcome["not_binary"].table is not None and outcome["not_binary"].table.num_rows == 0  # withheld
    assert len(releases) == 2 * NEWTON_STEPS
