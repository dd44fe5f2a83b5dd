"""Hostile privacy-budget inputs: every one is refused with the right status and a reason, the ledger is left as
it was, and the server keeps serving. Also the ways a researcher might try to spend without paying: a tiny
epsilon, someone else's budget, a run that leaves the private dataset out of its list but reads it anyway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from saferoom._proto.saferoom.v1 import budgets_pb2, budgets_pb2_grpc
from saferoom.errors import BudgetExhausted, InvalidPackage, JobFailed, PermissionDenied
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

COUNT = 'def run(ctx):\n    return {"n": ctx.table("population").agg(n=count())}\n'


def package(name: str, privacy: str, datasets: str = '["population"]', source: str = COUNT) -> dict[str, bytes]:
    manifest = f'name = "{name}"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = {datasets}\n{privacy}'
    return {"saferoom.toml": manifest.encode(), "main.py": source.encode()}


@pytest.fixture(scope="module")
def dp_server(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaferoomServer]:
    server, _ = create_server(server_config(dp_catalog_dir, tmp_path_factory.mktemp("redteam-budgets"), deployment.pki))
    try:
        yield server
    finally:
        server.stop(1.0)


def submit_approved(deployment: Deployment, port: int, who: str, files: dict[str, bytes]) -> str:
    with deployment.client(who, port) as researcher:
        summary, _ = researcher.submit_package(files)
    if summary.status != "approved":
        with deployment.client("olga", port) as olga:
            olga.approve_package(summary.hash, days=30)
    return summary.hash


NAN, INF = float("nan"), float("inf")
HOSTILE_SETS = {
    "negative epsilon": ("alice", "population", -1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "NaN epsilon": ("alice", "population", NAN, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "infinite epsilon": ("alice", "population", INF, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "negative infinite epsilon": ("alice", "population", -INF, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "huge epsilon": ("alice", "population", 1e308, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "epsilon just over the bound": ("alice", "population", 1000.000001, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "negative delta": ("alice", "population", 1.0, -1e-9, grpc.StatusCode.INVALID_ARGUMENT),
    "NaN delta": ("alice", "population", 1.0, NAN, grpc.StatusCode.INVALID_ARGUMENT),
    "delta of one": ("alice", "population", 1.0, 1.0, grpc.StatusCode.INVALID_ARGUMENT),
    "infinite delta": ("alice", "population", 1.0, INF, grpc.StatusCode.INVALID_ARGUMENT),
    "unknown dataset": ("alice", "tax_records", 1.0, 1e-6, grpc.StatusCode.NOT_FOUND),
    "empty dataset": ("alice", "", 1.0, 1e-6, grpc.StatusCode.NOT_FOUND),
    "dataset with a newline": ("alice", "population\n", 1.0, 1e-6, grpc.StatusCode.NOT_FOUND),
    "dataset without differential privacy": ("alice", "bus_stops", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "empty researcher": ("", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "upper-case twin": ("Alice", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "trailing newline twin": ("alice\n", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "padded twin": (" alice ", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "NUL twin": ("alice\x00", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "homoglyph twin": ("\u0430lice", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),  # Cyrillic a
    "path": ("../alice", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "SQL": ("alice'; DROP TABLE budgets; --", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "wildcard": ("%", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "two names": ("alice,bob", "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "too long": ("a" * 65, "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
    "megabyte name": ("a" * 2**20, "population", 1.0, 1e-6, grpc.StatusCode.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SETS))
def test_hostile_budgets_are_refused_and_nothing_changes(
    dp_server: SaferoomServer, deployment: Deployment, case: str
) -> None:
    researcher, dataset, epsilon, delta, status = HOSTILE_SETS[case]
    with deployment.channel("olga", dp_server.port) as channel:
        stub = budgets_pb2_grpc.BudgetsServiceStub(channel)
        before = stub.ListBudgets(budgets_pb2.ListBudgetsRequest(), timeout=10).budgets
        request = budgets_pb2.SetBudgetRequest(researcher=researcher, dataset=dataset, epsilon=epsilon, delta=delta)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SetBudget(request, timeout=10)
        assert caught.value.code() == status, caught.value.details()
        details = caught.value.details() or ""
        assert details and len(details) < 400 and "/tmp" not in details and "/work" not in details
        assert stub.ListBudgets(budgets_pb2.ListBudgetsRequest(), timeout=10).budgets == before


def test_only_operators_set_budgets_and_never_their_own(dp_server: SaferoomServer, deployment: Deployment) -> None:
    port = dp_server.port
    for who in ("alice", "audrey"):
        with deployment.client(who, port) as caller, pytest.raises(PermissionDenied):
            caller.set_budget(who, "population", 1000)
    with deployment.client("rex", port) as rex:  # a researcher who is also an operator
        with pytest.raises(PermissionDenied, match="their own"):
            rex.set_budget("rex", "population", 1000)
        assert rex.set_budget("bob", "population", 0.5).set_by == "rex"  # someone else's is ordinary
    with deployment.client("audrey", port) as audrey:
        refused = [r.summary["method"] for r in audrey.read_log(events=["call_refused"], actor="alice")]
        assert "saferoom.v1.BudgetsService/SetBudget" in refused
        assert not [b for b in audrey.list_budgets() if b.researcher == "rex"]


@pytest.mark.parametrize(
    ("researcher", "dataset", "status"),
    [
        ("bob", "", grpc.StatusCode.PERMISSION_DENIED),
        ("alice\n", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("%", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("", "tax_records", grpc.StatusCode.NOT_FOUND),
    ],
)
def test_a_researcher_cannot_read_anyone_elses_budget(
    dp_server: SaferoomServer, deployment: Deployment, researcher: str, dataset: str, status: grpc.StatusCode
) -> None:
    with deployment.channel("alice", dp_server.port) as channel:
        stub = budgets_pb2_grpc.BudgetsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListBudgets(budgets_pb2.ListBudgetsRequest(researcher=researcher, dataset=dataset), timeout=10)
        assert caught.value.code() == status


@pytest.mark.parametrize(
    ("privacy", "fragment"),
    [
        ("", "[privacy] epsilon"),
        ("[privacy]\nepsilon = { population = nan }\n", "must be a number in (0, 10]"),
        ("[privacy]\nepsilon = { population = inf }\n", "must be a number in (0, 10]"),
        ("[privacy]\nepsilon = { population = 0 }\n", "must be a number in (0, 10]"),
        ("[privacy]\nepsilon = { population = -0.5 }\n", "must be a number in (0, 10]"),
        ("[privacy]\nepsilon = { population = true }\n", "must be a number in (0, 10]"),
        ('[privacy]\nepsilon = { population = "0.5" }\n', "must be a number in (0, 10]"),
        ("[privacy]\nepsilon = { bus_stops = 0.5 }\n", "does not declare"),
        ("[privacy]\nepsilon = { housing_transactions = 0.5 }\n", "does not declare"),
        ("[privacy]\nepsilon = 0.5\n", "privacy.epsilon must be a table"),
        ("[privacy]\ndelta = { population = 1e-3 }\n", "one key, epsilon"),
    ],
)
def test_a_package_cannot_leave_out_or_fake_what_a_run_spends(
    dp_server: SaferoomServer, deployment: Deployment, privacy: str, fragment: str
) -> None:
    with deployment.client("alice", dp_server.port) as alice:
        with pytest.raises(InvalidPackage) as caught:
            alice.submit_package(package("sneaky", privacy))
        assert fragment in caught.value.message
        assert "sneaky" not in {p.name for p in alice.list_packages()}


def test_a_tiny_epsilon_still_costs_a_whole_unit(dp_server: SaferoomServer, deployment: Deployment) -> None:
    submit_approved(
        deployment, dp_server.port, "alice", package("tiny", "[privacy]\nepsilon = { population = 1e-300 }\n")
    )
    with deployment.client("olga", dp_server.port) as olga:
        olga.set_budget("alice", "population", 2e-6)
    with deployment.client("alice", dp_server.port) as alice:
        alice.run_job("tiny")
        alice.run_job("tiny")
        with pytest.raises(BudgetExhausted, match="needs epsilon 1e-06"):
            alice.run_job("tiny")


def test_nobody_spends_someone_elses_budget(dp_server: SaferoomServer, deployment: Deployment) -> None:
    files = package("shared", "[privacy]\nepsilon = { population = 0.5 }\n")
    submit_approved(deployment, dp_server.port, "alice", files)
    submit_approved(deployment, dp_server.port, "bob", files)  # the same package, bob a submitter too
    with deployment.client("olga", dp_server.port) as olga:
        olga.set_budget("alice", "population", 100)
        bobs = olga.list_budgets("bob", "population")
    with deployment.client("bob", dp_server.port) as bob:
        spendable = bobs[0].epsilon_remaining if bobs else 0.0
        for _ in range(int(spendable / 0.5)):
            bob.run_job("shared")
        with pytest.raises(BudgetExhausted):  # bob's certificate pays, never alice's budget
            bob.run_job("shared")


def test_leaving_the_private_dataset_out_of_the_run_does_not_let_it_be_read(
    dp_server: SaferoomServer, deployment: Deployment
) -> None:
    files = package("leave-out", "[privacy]\nepsilon = { population = 0.25 }\n", '["population", "bus_stops"]')
    submit_approved(deployment, dp_server.port, "bob", files)
    with deployment.client("bob", dp_server.port) as bob:
        job = bob.run_job("leave-out", datasets=["bus_stops"])  # nothing private in the run: nothing to charge
        final = bob.wait(job.id, timeout=60)
        assert final.state == "failed" and "population" in final.error_message
        with pytest.raises(JobFailed):
            bob.get_result(job.id)
    with deployment.client("audrey", dp_server.port) as audrey:
        assert list(audrey.read_log(events=["budget_charged"], job=job.id)) == []
