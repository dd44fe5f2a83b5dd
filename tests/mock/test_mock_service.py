"""DP mock data over the real server: publication budget, publication, its audit record, what each role sees,
determinism per version, and the restart cross-check."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from saferoom.audit import AuditFilter, EventType
from saferoom.audit.crosscheck import check_state_dir
from saferoom.catalog.catalog import Catalog
from saferoom.errors import InvalidRequest
from saferoom.mock import Measurements, MockKind, estimated_fidelity
from saferoom.mock import service as mock_service
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mock-state")


@pytest.fixture(scope="module")
def mock_server(dp_catalog_dir: Path, deployment: Deployment, state_dir: Path) -> Iterator[SaferoomServer]:
    server, _ = create_server(server_config(dp_catalog_dir, state_dir, deployment.pki))
    try:
        with deployment.client("olga", server.port) as olga:
            olga.set_mock_budget("population", 3.0)
            olga.set_mock_budget("housing_transactions", 1.0)
            olga.publish_mock("population", 1.0)
            olga.publish_mock("housing_transactions", 1.0)
        yield server
    finally:
        server.stop(1.0)


def test_a_researcher_sees_synthetic_dp_mock_with_structure_epsilon_and_estimated_fidelity(
    mock_server: SaferoomServer, deployment: Deployment
) -> None:
    with deployment.client("alice", mock_server.port) as alice:
        info = alice.mock_info("population")
        assert info.kind is MockKind.SYNTHETIC
        assert info.label == "synthetic (DP, ε=1)"
        assert info.version == 1 and info.epsilon == 1.0
        assert "district -> lat+lon" in info.structure and "age -> education" in info.structure
        assert 19_000 < info.rows < 21_000  # the noisy count of 20,000 persons
        assert info.estimated and all(0 <= v <= 1 for v in info.estimated.values())
        assert info.measured is None and info.budget_epsilon_total is None and info.dataset_hash == ""
        assert alice.mock_info("bus_stops").kind is MockKind.PUBLIC_ROWS
        assert alice.mock_info("schools").label == "public: the real rows"


def test_an_operator_also_sees_real_vs_mock_fidelity_and_the_budget(
    mock_server: SaferoomServer, deployment: Deployment
) -> None:
    with deployment.client("olga", mock_server.port) as olga:
        info = olga.mock_info("population")
    assert info.measured and "lat+lon,district" in info.measured and "sex" in info.measured
    assert len(info.measured) == 7 + 21  # every 1-way and every 2-way marginal of the 7 attributes
    assert info.mean_tvd_structure is not None and 0 < info.mean_tvd_structure < 1  # 20,000 persons: coarse
    assert info.budget_epsilon_total == 3.0 and info.budget_epsilon_spent == 1.0
    assert len(info.dataset_hash) == 64 and info.published_by == "olga"


def test_mock_rows_are_synthetic_deterministic_per_seed_and_any_size(
    mock_server: SaferoomServer, deployment: Deployment, dp_catalog_dir: Path
) -> None:
    with deployment.client("alice", mock_server.port) as alice:
        table = alice.download_mock("population", rows=5000, seed=3)[1]
        again = alice.download_mock("population", rows=5000, seed=3)[1]
        other = alice.download_mock("population", rows=5000, seed=4)[1]
        default = alice.download_mock("population")[1]
        big = alice.download_mock("population", rows=150_000, seed=3)[1]
        housing = alice.download_mock("housing_transactions", rows=2000)[1]
    assert table.equals(again) and not table.equals(other)
    assert abs(default.num_rows - 20_000) < 1000 and big.num_rows == 150_000
    with Catalog.open(dp_catalog_dir) as real:
        assert table.schema.equals(real.table("population").schema)
        # Values are drawn within bins: no real income (rounded to the fen) recurs, apart from zero.
        real_incomes = set(real.table("population").column("income").to_pylist())
    mock_incomes = set(table.column("income").to_pylist()) - {0.0}
    assert len(mock_incomes & real_incomes) < 5
    # Derived columns are recomputed: price_per_m2 is price / area_m2 (rounded, within its bounds).
    rows = housing.to_pylist()
    present = [r for r in rows if r["price"] is not None and r["area_m2"] is not None]
    consistent = [r for r in present if 5_000 < r["price"] / r["area_m2"] < 250_000]
    assert consistent and all(abs(r["price_per_m2"] - r["price"] / r["area_m2"]) <= 0.5 for r in consistent)
    buyers = [r["buyer_id"] for r in rows]  # synthetic units, rows per unit from the noisy histogram
    assert min(buyers) >= 1 and max(buyers) <= len(rows)


def test_a_download_is_sampled_and_streamed_chunk_by_chunk_with_identifiers_continuing(
    mock_server: SaferoomServer, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large mock is made and sent a chunk at a time (never whole in the server's memory): the chunks form one
    table, deterministic per seed, whose first chunk is what a download of one chunk gives, and whose unit and
    row identifiers do not repeat across chunks."""
    monkeypatch.setattr(mock_service, "SAMPLE_CHUNK_ROWS", 1000)
    with deployment.client("alice", mock_server.port) as alice:
        table = alice.download_mock("population", rows=3500, seed=3)[1]
        again = alice.download_mock("population", rows=3500, seed=3)[1]
        first = alice.download_mock("population", rows=1000, seed=3)[1]
        housing = alice.download_mock("housing_transactions", rows=2500, seed=1)[1]
    assert table.num_rows == 3500 and table.equals(again)
    assert table.slice(0, 1000).equals(first)
    assert len(set(table.column("person_id").to_pylist())) == 3500  # one row per person, across chunks
    buyers = housing.column("buyer_id").to_pylist()
    chunk_of = {b: i for i in range(3) for b in buyers[i * 1000 : (i + 1) * 1000]}
    assert all(chunk_of[b] == i for i in range(3) for b in buyers[i * 1000 : (i + 1) * 1000])  # units stay apart
    assert min(buyers) >= 1 and max(buyers) <= len(buyers)


def test_a_download_may_ask_for_the_datasets_own_row_count_and_no_more(
    mock_server: SaferoomServer, deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap is the dataset's noisy row count (at least 1M in production; lowered here): the default download is
    the whole noisy count, whatever its size, and a request above the cap is refused, saying the cap."""
    monkeypatch.setattr(mock_service, "MIN_DOWNLOAD_CAP", 1000)
    with deployment.client("alice", mock_server.port) as alice:
        noisy = alice.mock_info("population").rows
        assert alice.download_mock("population")[1].num_rows == noisy  # beyond the lowered minimum: all of it
        with pytest.raises(InvalidRequest, match=f"between 0 and {noisy:,} for population") as refused:
            alice.download_mock("population", rows=noisy + 1)
        assert refused.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_publication_is_recorded_with_epsilon_structure_version_and_dataset_hash(
    mock_server: SaferoomServer,
) -> None:
    records = [r for r in mock_server.audit.read(AuditFilter()) if r.event == EventType.MOCK_PUBLISHED]
    population = next(r for r in records if r.objects["dataset"] == "population")
    assert population.actor == "olga"
    assert population.summary["epsilon"] == 1.0 and population.summary["delta"] == 0.0
    assert population.summary["version"] == 1
    assert "age -> income" in population.summary["structure"]
    assert len(population.summary["dataset_hash"]) == 64 and len(population.summary["measurements_hash"]) == 64
    assert population.summary["epsilon_remaining"] == 2.0
    budgets = [r for r in mock_server.audit.read(AuditFilter()) if r.event == EventType.MOCK_BUDGET_SET]
    assert {r.objects["dataset"] for r in budgets} == {"population", "housing_transactions"}


def test_the_estimated_fidelity_is_computed_from_the_stored_noisy_measurements_only(
    mock_server: SaferoomServer, deployment: Deployment, state_dir: Path
) -> None:
    with sqlite3.connect(state_dir / "saferoom.db") as conn:
        blob, fidelity = conn.execute(
            "SELECT measurements, fidelity_json FROM mock_publications WHERE dataset = 'population'"
        ).fetchone()
    with deployment.client("alice", mock_server.port) as alice:
        info = alice.mock_info("population")
    measurements = Measurements.from_bytes(blob)
    assert info.estimated == estimated_fidelity(measurements)
    assert info.rows == measurements.total
    assert json.loads(fidelity)  # the real-vs-mock figures exist, for operators only


def test_a_dataset_without_a_declared_graph_gets_a_privately_selected_tree_recorded_and_shown(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    catalog, state = tmp_path / "catalog", tmp_path / "state"
    shutil.copytree(dp_catalog_dir, catalog)
    manifest = json.loads((catalog / "catalog.json").read_text())
    manifest["datasets"]["population"]["mock"]["structure"] = "auto"
    (catalog / "catalog.json").write_text(json.dumps(manifest))
    server, port = create_server(server_config(catalog, state, deployment.pki))
    try:
        with deployment.client("olga", port) as olga:
            olga.set_mock_budget("population", 1.0)
            olga.publish_mock("population", 1.0)
        with deployment.client("alice", port) as alice:
            seen = alice.mock_info("population")
            table = alice.download_mock("population", rows=2000, seed=5)[1]
        record = next(r for r in server.audit.read(AuditFilter()) if r.event == EventType.MOCK_PUBLISHED)
    finally:
        server.stop(1.0)
    # A spanning tree over the 7 attributes, selected inside the one charge, recorded and shown to researchers.
    assert len(seen.structure) == 6 and all(" -> " in edge for edge in seen.structure), seen.structure
    assert "selected privately" in seen.note and seen.epsilon == 1.0
    assert record.summary["structure"] == list(seen.structure)
    measured = record.summary["measurements"]
    assert "tree selection, MST (eps=0.1)" in measured
    assert sum("," in m for m in measured if not m.startswith("tree")) == 6  # the tree's 2-way marginals
    assert record.summary["epsilon"] == 1.0 and record.summary["epsilon_remaining"] == 0.0
    assert table.num_rows == 2000
    assert check_state_dir(state) == []  # the start-up cross-check agrees with the record
