"""The seed's second use case end to end: synthetic enterprise registers as CSV, imported with the committed
declarations, and the vetted credit_profile package run on them over gRPC under differential privacy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from saferoom.catalog import Catalog
from saferoom.catalog.enterprises import DECLARATIONS, INDUSTRIES, generate_enterprises, revenue_band
from saferoom.importer import import_dataset, load_declaration
from saferoom.packages import default_algorithms_dir
from saferoom.server import create_server
from tests.support import Deployment, approve_all, server_config


def test_the_generated_files_match_their_committed_declarations(tmp_path: Path) -> None:
    paths = generate_enterprises(tmp_path / "csv", enterprises=1_000, seed=3)
    again = generate_enterprises(tmp_path / "again", enterprises=1_000, seed=3)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]  # deterministic
    for path in paths:
        declaration = DECLARATIONS / f"{path.stem}.toml"
        assert load_declaration(declaration).name == path.stem  # no FROM DATA marks: public values only
        result = import_dataset(str(path), declaration, tmp_path / "catalog")
        assert not result.report.problems
    with Catalog.open(tmp_path / "catalog") as catalog:
        assert catalog.info("enterprises").rows == 1_000
        assert catalog.info("enterprise_years").rows == 5_000
        assert set(catalog.table("enterprises").column("industry").to_pylist()) <= set(INDUSTRIES)
    years = pacsv.read_csv(paths[1])
    assert years.column("revenue_band").to_pylist()[:50] == list(revenue_band(years.column("revenue").to_numpy()[:50]))


@pytest.mark.slow
def test_credit_profile_runs_on_the_imported_enterprises(tmp_path: Path, deployment: Deployment) -> None:
    catalog = tmp_path / "catalog"
    for path in generate_enterprises(tmp_path / "csv", enterprises=3_000):
        import_dataset(str(path), DECLARATIONS / f"{path.stem}.toml", catalog)
    packages = tmp_path / "packages"
    shutil.copytree(default_algorithms_dir() / "credit_profile", packages / "credit_profile")
    srv, port = create_server(server_config(catalog, tmp_path / "state", deployment.pki, catalog_poll_seconds=0))
    try:
        approve_all(deployment, port, packages)
        with deployment.client("olga", port) as operator, deployment.client("alice", port) as alice:
            for dataset in ("enterprises", "enterprise_years"):
                operator.set_budget("alice", dataset, epsilon=5.0)
            job = alice.wait(alice.run_job("credit-profile", {"year": 2025}).id)
            assert job.state == "succeeded", job.error_message
            assert set(job.dataset_versions) == {"enterprises", "enterprise_years"}
            result = alice.get_result(job.id)
            risk = result.output("risk_by_industry_district")
            assert risk.table is not None
            assert {"industry", "district", "enterprises", "at_risk_share", "median_revenue_band"} <= set(
                risk.table.column_names
            )
            assert set(risk.table.column("industry").to_pylist()) <= set(INDUSTRIES)
            register = result.output("register_by_industry")
            assert register.table is not None and register.table.num_rows > 0
    finally:
        srv.stop(1.0)
