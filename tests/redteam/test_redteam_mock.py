"""Attacks on DP mock data (issue 15): publishing without being an operator, beyond the publication budget or
with hostile amounts; reading more than the noisy measurements as a researcher; relying on a mock that no
longer matches its dataset; and tampering with a publication behind the server's back. Each names the layer
that stops it. (On the code before this, mock data was declared-domain only: none of this existed.)"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from saferoom._proto.saferoom.v1 import mock_pb2 as _mock_pb2
from saferoom._proto.saferoom.v1 import mock_pb2_grpc as _mock_pb2_grpc
from saferoom.audit import AuditFilter, EventType
from saferoom.audit.crosscheck import check_state_dir
from saferoom.catalog import generate_catalog
from saferoom.catalog.catalog import Catalog
from saferoom.catalog.mock import mock_table
from saferoom.errors import BudgetExhausted, PermissionDenied
from saferoom.mock import MockKind, measure, sample, structure_of
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config
from tests.support_state import copy_state, execute, refusal


@pytest.fixture(scope="module")
def mock_server(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    server, _ = create_server(server_config(dp_catalog_dir, tmp_path_factory.mktemp("redteam-mock"), deployment.pki))
    try:
        yield server
    finally:
        server.stop(1.0)


def _published(server: SaferoomServer) -> list[dict[str, object]]:
    return [r.summary for r in server.audit.read(AuditFilter()) if r.event == EventType.MOCK_PUBLISHED]


@pytest.mark.parametrize("who", ["alice", "audrey", "quinn"])
def test_only_operators_set_publication_budgets_and_publish(  # layer: the permission table (auth interceptor)
    mock_server: SaferoomServer, deployment: Deployment, who: str
) -> None:
    before = len(_published(mock_server))
    with deployment.client(who, mock_server.port) as client:
        with pytest.raises(PermissionDenied):
            client.set_mock_budget("housing_transactions", 100.0)
        with pytest.raises(PermissionDenied):
            client.publish_mock("housing_transactions", 1.0)
    assert len(_published(mock_server)) == before
    refused = [r for r in mock_server.audit.read(AuditFilter()) if r.event == EventType.CALL_REFUSED and r.actor == who]
    assert any("MockService/PublishMock" in str(r.summary["method"]) for r in refused)


def test_publishing_beyond_the_publication_budget_is_refused_and_charges_nothing(  # layer: the ledger
    mock_server: SaferoomServer, deployment: Deployment
) -> None:
    with deployment.client("olga", mock_server.port) as olga:
        with pytest.raises(BudgetExhausted, match="no publication budget was set"):
            olga.publish_mock("housing_transactions", 0.5)
        olga.set_mock_budget("housing_transactions", 1.0)
        first = olga.publish_mock("housing_transactions", 0.6)
        records = len(_published(mock_server))
        with pytest.raises(BudgetExhausted, match=r"0\.4 left; nothing was charged"):
            olga.publish_mock("housing_transactions", 0.6)
        after = olga.mock_info("housing_transactions")
    assert len(_published(mock_server)) == records
    assert after.version == first.version and after.budget_epsilon_spent == 0.6
    # A researcher's budget on the same dataset is a separate ledger: untouched by publications.
    with deployment.client("olga", mock_server.port) as olga:
        assert not [b for b in olga.list_budgets(dataset="housing_transactions") if b.epsilon_spent]


@pytest.mark.parametrize("epsilon", [math.nan, math.inf, -1.0, 0.0, 1e9])
def test_hostile_amounts_are_invalid_argument_and_change_nothing(  # layer: the Mock servicer and service
    mock_server: SaferoomServer, deployment: Deployment, epsilon: float
) -> None:
    records = len(list(mock_server.audit.read(AuditFilter())))
    with deployment.channel("olga", mock_server.port) as channel:
        stub = _mock_pb2_grpc.MockServiceStub(channel)
        for call, request in (
            (stub.PublishMock, _mock_pb2.PublishMockRequest(dataset="population", epsilon=epsilon)),
            (stub.SetMockBudget, _mock_pb2.SetMockBudgetRequest(dataset="population", epsilon=epsilon)),
        ):
            if call is stub.SetMockBudget and epsilon == 0.0:
                continue  # a zero budget is a valid budget (publishing nothing)
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    changed = [r for r in list(mock_server.audit.read(AuditFilter()))[records:] if r.event != EventType.CALL_REFUSED]
    assert not [r for r in changed if r.event in (EventType.MOCK_PUBLISHED, EventType.MOCK_BUDGET_SET)]


@pytest.mark.parametrize(
    ("dataset", "code"),
    [("nope", grpc.StatusCode.NOT_FOUND), ("bus_stops", grpc.StatusCode.FAILED_PRECONDITION),
     ("", grpc.StatusCode.INVALID_ARGUMENT), ("x" * 5000, grpc.StatusCode.NOT_FOUND)],
)  # fmt: skip
def test_publishing_what_cannot_be_published_is_refused(
    mock_server: SaferoomServer, deployment: Deployment, dataset: str, code: grpc.StatusCode
) -> None:
    with deployment.channel("olga", mock_server.port) as channel:
        stub = _mock_pb2_grpc.MockServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.PublishMock(_mock_pb2.PublishMockRequest(dataset=dataset, epsilon=1.0), timeout=30)
        assert info.value.code() == code
        assert len(info.value.details() or "") < 300


def test_a_researcher_sees_nothing_computed_from_real_data_but_the_noisy_measurements(  # layer: MockService.info
    mock_server: SaferoomServer, deployment: Deployment
) -> None:
    with deployment.client("olga", mock_server.port) as olga:
        olga.set_mock_budget("population", 2.0)
        olga.publish_mock("population", 1.0)
    with deployment.channel("alice", mock_server.port) as channel:
        reply = _mock_pb2_grpc.MockServiceStub(channel).GetMockInfo(_mock_pb2.GetMockInfoRequest(dataset="population"))
    info = reply.info
    assert info.kind == _mock_pb2.MOCK_KIND_SYNTHETIC and info.estimated
    # Real-vs-mock fidelity, the file's hash, the budget and who published: absent from the wire.
    assert not info.measured and not info.dataset_hash and not info.published_by
    for name in ("mean_tvd_structure", "budget_epsilon_total", "budget_epsilon_spent"):
        assert not info.HasField(name), name


def test_mock_data_is_deterministic_per_version_and_a_new_publication_is_a_new_version(  # layer: sample
    mock_server: SaferoomServer, deployment: Deployment
) -> None:
    with deployment.client("olga", mock_server.port) as olga:
        olga.set_mock_budget("population", 5.0)
        with deployment.client("alice", mock_server.port) as alice:
            version = alice.mock_info("population").version
            first = alice.download_mock("population", rows=2000, seed=9)[1]
            assert alice.download_mock("population", rows=2000, seed=9)[1].equals(first)
            published = olga.publish_mock("population", 1.0)
            assert published.version == version + 1
            second = alice.download_mock("population", rows=2000, seed=9)[1]
            assert not second.equals(first)
            assert alice.download_mock("population", rows=2000, seed=9)[1].equals(second)


def _publish_and_stop(catalog: Path, state: Path, deployment: Deployment, dataset: str = "population") -> None:
    server, port = create_server(server_config(catalog, state, deployment.pki))
    try:
        with deployment.client("olga", port) as olga:
            olga.set_mock_budget(dataset, 1.0)
            olga.publish_mock(dataset, 1.0)
    finally:
        server.stop(1.0)


@pytest.fixture(scope="module")
def published_state(dp_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped server's state holding one publication (of the housing sales) and its budget."""
    state = tmp_path_factory.mktemp("published") / "state"
    _publish_and_stop(dp_catalog_dir, state, deployment, "housing_transactions")
    return state


def test_a_changed_dataset_invalidates_its_mock_until_an_operator_publishes_again(  # layer: the dataset hash
    dp_catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    catalog, state = tmp_path / "catalog", tmp_path / "state"
    shutil.copytree(dp_catalog_dir, catalog)
    _publish_and_stop(catalog, state, deployment)
    manifest = generate_catalog(tmp_path / "next", scale=20_000, seed=99)  # the same city, other people
    shutil.copy(tmp_path / "next" / "population.arrow", catalog / "population.arrow")
    server, port = create_server(server_config(catalog, state, deployment.pki))
    try:
        with deployment.client("alice", port) as alice:
            info = alice.mock_info("population")
            table = alice.download_mock("population", rows=300, seed=2)[1]
        assert info.kind is MockKind.DECLARED_DOMAIN and "earlier version of the dataset" in info.note
        assert table.equals(mock_table(manifest.dataset("population"), 300, 2))
        with deployment.client("olga", port) as olga:
            with pytest.raises(BudgetExhausted):  # re-measuring is charged again: the budget is spent
                olga.publish_mock("population", 1.0)
            olga.set_mock_budget("population", 2.0)
            assert olga.publish_mock("population", 1.0).version == 2
    finally:
        server.stop(1.0)


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("UPDATE mock_publications SET measurements = x'00'", "were changed"),
        ("DELETE FROM mock_publications", "has no publication in the database"),
        ("UPDATE mock_publications SET epsilon = 1", "differs from its mock_published record"),
        ("UPDATE mock_budgets SET epsilon_total = 1000000000", "is epsilon 1000 in the database"),
    ],
)
def test_tampering_with_a_publication_is_refused_at_start_up(  # layer: the start-up cross-check
    published_state: Path, dp_catalog_dir: Path, deployment: Deployment, tmp_path: Path, sql: str, fragment: str
) -> None:
    tampered = copy_state(published_state, tmp_path / "tampered")
    assert execute(tampered, sql) == 1
    assert fragment in "; ".join(check_state_dir(tampered))
    assert fragment in refusal(tampered, dp_catalog_dir, deployment)


def test_nan_infinities_and_out_of_bounds_values_cannot_break_a_publication(  # layer: Binning.index
    dp_catalog_dir: Path,
) -> None:
    """A column that may hold NaN (``may_be_nan``), or values beyond its declared bounds: NaN was cast to
    INT64_MIN as a bin, which crashed measuring (or, in a joint attribute, would have counted a wrong cell)."""
    with Catalog.open(dp_catalog_dir) as catalog:
        info, real = catalog.info("population"), catalog.table("population")
    hostile = [math.nan, math.inf, -math.inf, 1e300, -1e300, None]
    income = real.column("income").to_pylist()
    income[: len(hostile)] = hostile
    table = real.set_column(real.schema.get_field_index("income"), "income", pa.array(income, pa.float64()))
    structure = structure_of(info)
    binning = structure.attributes["income"].binnings[0]
    bins = binning.index(table.column("income"))
    assert bins.min() >= 0 and bins.max() <= binning.size
    assert list(bins[: len(hostile)]) == [binning.size, binning.size - 1, 0, binning.size - 1, 0, binning.size]
    measurements = measure(table, info, structure, 1.0)  # no exception, every cell count in range
    assert all(m.counts.min() >= 0 for m in measurements.marginals.values())
    assert sample(measurements, structure, info, 1000).num_rows == 1000
