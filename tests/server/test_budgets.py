"""Privacy budgets against a real server on the differentially private catalog: who may set and see them, runs
charged up front and refused before any work when the budget cannot pay, never overspent under concurrency,
kept across a restart, and every change in the audit log.

These tests assert on charging, refusal and the audit log, never on released numbers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from saferoom.audit import AuditRecord
from saferoom.cli.main import cli
from saferoom.client import Budget, Client
from saferoom.errors import BudgetExhausted, FailedPrecondition, InvalidPackage, PermissionDenied
from saferoom.identity import issue_identity
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, make_deployment, server_config

# One researcher per test that spends, so that each starts from an untouched ledger.
RESEARCHERS = ("carol", "dave", "erin", "frank", "gina", "hank", "ivan", "jack")

COUNT = 'def run(ctx):\n    return {"n": ctx.table("population").agg(n=count())}\n'
FAILS = 'def run(ctx):\n    ctx.table("population")\n    return {"n": 1 // 0}\n'
BOTH = (
    "def run(ctx):\n"
    '    return {"people": ctx.table("population").agg(n=count()),\n'
    '            "sales": ctx.table("housing_transactions").agg(n=count())}\n'
)


def package(name: str, source: str, datasets: list[str], epsilon: dict[str, float] | None) -> dict[str, bytes]:
    """A package as files: ``epsilon`` is what one run declares it spends per dataset (None: no [privacy])."""
    manifest = f'name = "{name}"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = {datasets!r}\n'.replace(
        "'", '"'
    )
    if epsilon is not None:
        manifest += "[privacy]\nepsilon = { " + ", ".join(f"{d} = {e!r}" for d, e in epsilon.items()) + " }\n"
    return {"saferoom.toml": manifest.encode(), "main.py": source.encode()}


DP_COUNT = package("dp-count", COUNT, ["population"], {"population": 0.25})
DP_FAILS = package("dp-fails", FAILS, ["population"], {"population": 0.25})
DP_BOTH = package("dp-both", BOTH, ["population", "housing_transactions"],
                  {"population": 0.25, "housing_transactions": 0.5})  # fmt: skip
UNDECLARED = package("undeclared", COUNT, ["population"], None)


def submit_approved(deployment: Deployment, port: int, who: str, files: dict[str, bytes]) -> str:
    """``files`` submitted by ``who`` and approved by olga (once per content); its hash."""
    with deployment.client(who, port) as researcher:
        summary, _ = researcher.submit_package(files)
    if summary.status != "approved":
        with deployment.client("olga", port) as olga:
            olga.approve_package(summary.hash, days=30)
    return summary.hash


@dataclass(frozen=True)
class Room:
    server: SaferoomServer
    deployment: Deployment

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, name: str) -> Client:
        return self.deployment.client(name, self.port)

    def give(self, who: str, dataset: str, epsilon: float, delta: float = 1e-6) -> Budget:
        with self.client("olga") as olga:
            return olga.set_budget(who, dataset, epsilon, delta)

    def budget(self, who: str, dataset: str = "population") -> Budget:
        with self.client("olga") as olga:
            (found,) = olga.list_budgets(who, dataset)
            return found

    def audit(self, **filters: Any) -> list[AuditRecord]:
        with self.client("audrey") as audrey:
            return list(audrey.read_log(**filters))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    deployment = make_deployment(tmp_path_factory.mktemp("budget-pki"))
    for name in RESEARCHERS:
        issue_identity(deployment.pki, name, "researcher")
    return deployment


@pytest.fixture(scope="module")
def room(dp_catalog_dir: Path, pki: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    """A server on the differentially private catalog; dp-count submitted by every researcher, approved."""
    server, port = create_server(server_config(dp_catalog_dir, tmp_path_factory.mktemp("budget-state"), pki.pki))
    try:
        for who in ("alice", *RESEARCHERS):
            submit_approved(pki, port, who, DP_COUNT)
        yield Room(server, pki)
    finally:
        server.stop(1.0)


def test_operators_set_budgets_and_each_role_sees_what_it_may(room: Room) -> None:
    budget = room.give("alice", "population", 2.5, 1e-6)
    assert (budget.researcher, budget.dataset, budget.set_by) == ("alice", "population", "olga")
    assert (budget.epsilon_total, budget.delta_total, budget.epsilon_remaining) == (2.5, 1e-6, 2.5)
    assert budget.jobs_charged == 0
    room.give("bob", "housing_transactions", 1.0)
    with room.client("alice") as alice, room.client("bob") as bob, room.client("audrey") as audrey:
        assert [(b.researcher, b.dataset) for b in alice.list_budgets()] == [("alice", "population")]
        assert alice.list_budgets(researcher="alice") == alice.list_budgets()
        with pytest.raises(PermissionDenied):
            alice.list_budgets(researcher="bob")  # refused, whether or not bob has one
        assert {b.researcher for b in bob.list_budgets()} == {"bob"}
        seen = {(b.researcher, b.dataset) for b in audrey.list_budgets()}
        assert {("alice", "population"), ("bob", "housing_transactions")} <= seen
        assert [b.researcher for b in audrey.list_budgets(dataset="housing_transactions")] == ["bob"]
        for who, attempt in (("alice", alice), ("audrey", audrey)):
            with pytest.raises(PermissionDenied) as caught:
                attempt.set_budget("alice", "population", 100)
            assert caught.value.grpc_code == grpc.StatusCode.PERMISSION_DENIED, who  # type: ignore[attr-defined]
    assert room.budget("alice").epsilon_total == 2.5  # untouched by the refused attempts
    bobs = {"identity": "bob", "dataset": "housing_transactions"}
    (record,) = [r for r in room.audit(events=["budget_set"]) if r.objects == bobs]
    assert (record.actor, record.summary["epsilon_total"], record.summary["delta_total"]) == ("olga", 1.0, 1e-6)
    assert record.summary["epsilon_remaining"] == 1.0


def test_no_budget_is_refused_before_any_work(room: Room) -> None:
    with room.client("carol") as carol:
        with pytest.raises(BudgetExhausted) as caught:
            carol.run_job("dp-count")
        assert caught.value.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "population needs epsilon 0.25 and delta 1e-07" in caught.value.message
        assert "epsilon 0 and delta 0 remain (no budget was set)" in caught.value.message
        assert carol.list_jobs()[0] == []  # no job was made, so nothing ran
        assert carol.list_budgets() == []
    assert not room.audit(events=["job_queued", "budget_charged"], actor="carol")


def test_a_budget_of_one_pays_for_exactly_four_runs_of_a_quarter(room: Room) -> None:
    room.give("dave", "population", 1.0)
    with room.client("dave") as dave:
        accepted = [dave.run_job("dp-count") for _ in range(4)]
        with pytest.raises(BudgetExhausted) as caught:
            dave.run_job("dp-count")
        assert len(dave.list_jobs()[0]) == 4
    assert "population needs epsilon 0.25 and delta 1e-07, epsilon 0 and delta 6e-07 remain" in caught.value.message
    assert "nothing was charged" in caught.value.message
    budget = room.budget("dave")
    assert (budget.epsilon_spent, budget.epsilon_remaining, budget.jobs_charged) == (1.0, 0.0, 4)
    assert budget.delta_spent == pytest.approx(4e-7) and budget.delta_remaining == pytest.approx(6e-7)
    # One budget_charged record per charge, written with the job's job_queued, with the numbers.
    for n, job in enumerate(accepted, start=1):
        queued, charged = room.audit(job=job.id, events=["job_queued", "budget_charged"])
        assert (queued.event, charged.event, charged.seq) == ("job_queued", "budget_charged", queued.seq + 1)
        assert charged.objects == {"job": job.id, "package": job.package_hash, "identity": "dave",
                                   "dataset": "population"}  # fmt: skip
        assert (charged.summary["epsilon"], charged.summary["delta"]) == (0.25, 1e-7)
        assert charged.summary["epsilon_remaining"] == 1.0 - 0.25 * n
        assert charged.summary["epsilon_total"] == 1.0


def test_a_failed_job_stays_charged(room: Room) -> None:
    submit_approved(room.deployment, room.port, "frank", DP_FAILS)
    room.give("frank", "population", 0.5)
    with room.client("frank") as frank:
        job = frank.run_job("dp-fails")
        final = frank.wait(job.id, timeout=60)
        assert final.state == "failed"
        assert room.budget("frank").epsilon_remaining == 0.25
        frank.run_job("dp-fails")
        with pytest.raises(BudgetExhausted):
            frank.run_job("dp-count")
    assert room.budget("frank").jobs_charged == 2


def test_a_retry_with_the_same_request_id_is_not_charged_again(room: Room) -> None:
    room.give("gina", "population", 0.5)
    with room.client("gina") as gina:
        first = gina.run_job("dp-count", request_id="survey-1")
        again = gina.run_job("dp-count", request_id="survey-1")
        assert again.id == first.id
        assert room.budget("gina").epsilon_spent == 0.25
        gina.run_job("dp-count", request_id="survey-2")  # spends the rest
        assert gina.run_job("dp-count", request_id="survey-1").id == first.id  # still the same job, not refused
        with pytest.raises(BudgetExhausted):
            gina.run_job("dp-count", request_id="survey-3")
    assert room.budget("gina").jobs_charged == 2
    assert len(room.audit(events=["budget_charged"], job=first.id)) == 1


def test_concurrent_runs_never_overspend(room: Room) -> None:
    room.give("erin", "population", 0.75)
    start = threading.Barrier(8)

    def run(client: Client) -> str:
        start.wait()
        try:
            return client.run_job("dp-count").id
        except BudgetExhausted:
            return "refused"

    with room.client("erin") as erin, ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(run, [erin] * 8))
    assert sum(o != "refused" for o in outcomes) == 3
    budget = room.budget("erin")
    assert (budget.epsilon_spent, budget.epsilon_remaining, budget.jobs_charged) == (0.75, 0.0, 3)
    charged_jobs = {r.objects["job"] for r in room.audit(events=["budget_charged"]) if r.objects["identity"] == "erin"}
    assert charged_jobs == {o for o in outcomes if o != "refused"}


def test_each_dataset_of_a_run_is_charged_and_the_refusal_names_each(room: Room) -> None:
    submit_approved(room.deployment, room.port, "hank", DP_BOTH)
    room.give("hank", "population", 1.0)
    with room.client("hank") as hank:
        with pytest.raises(BudgetExhausted) as caught:
            hank.run_job("dp-both")  # no budget on housing_transactions
        message = caught.value.message
        assert "population needs epsilon 0.25 and delta 1e-07, epsilon 1 and delta 1e-06 remain" in message
        assert "housing_transactions needs epsilon 0.5 and delta 1e-07, epsilon 0 and delta 0 remain" in message
        assert room.budget("hank").epsilon_spent == 0  # nothing charged on the dataset that could have paid
        room.give("hank", "housing_transactions", 0.5)
        job = hank.run_job("dp-both")
        job_on_one = hank.run_job("dp-both", datasets=["population"])  # a run over a subset pays for that subset
    charged = {r.objects["dataset"]: r.summary for r in room.audit(events=["budget_charged"], job=job.id)}
    assert charged["population"]["epsilon"] == 0.25 and charged["housing_transactions"]["epsilon"] == 0.5
    assert charged["housing_transactions"]["epsilon_remaining"] == 0.0
    assert [r.objects["dataset"] for r in room.audit(events=["budget_charged"], job=job_on_one.id)] == ["population"]
    assert room.budget("hank").epsilon_spent == 0.5


def test_a_package_reading_private_data_without_its_epsilon_is_refused_at_submission(room: Room) -> None:
    with room.client("alice") as alice:
        with pytest.raises(InvalidPackage) as caught:
            alice.submit_package(UNDECLARED)
        assert caught.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "population" in caught.value.message and "[privacy] epsilon" in caught.value.message
        assert "undeclared" not in {p.name for p in alice.list_packages()}


def test_the_command_line_sets_shows_and_refuses_in_one_line(room: Room) -> None:
    def as_user(name: str, *args: str) -> tuple[int, str]:
        profile = room.deployment.pki / "identities" / name / "profile.toml"
        result = CliRunner().invoke(cli, ["--profile", str(profile), *args, "--server", f"127.0.0.1:{room.port}"])
        return result.exit_code, result.output

    code, out = as_user("olga", "budget", "set", "ivan", "population", "--epsilon", "0.25")
    assert code == 0 and "ivan" in out, out
    code, out = as_user("ivan", "budget", "show", "--json")
    assert code == 0, out
    (shown,) = json.loads(out)
    # No --delta: the delta of the one run 0.25 pays for (dp-count's 0.25 at the policy's 1e-7 a run).
    assert (shown["epsilon_total"], shown["delta_total"], shown["set_by"]) == (0.25, 1e-7, "olga")
    code, out = as_user("ivan", "jobs", "run", "dp-count", "--no-wait")
    assert code == 0, out
    code, out = as_user("ivan", "jobs", "run", "dp-count")
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, out
    assert lines[0].startswith("error (budget_exhausted): ") and "epsilon 0 and delta 0 remain" in lines[0]
    code, out = as_user("ivan", "budget", "set", "ivan", "population", "--epsilon", "9")
    assert code == 1 and "permission_denied" in out


def test_budget_set_states_each_runs_cost_and_epsilon_not_delta_limits(room: Room) -> None:
    """`budget set --epsilon 10` without --delta used to keep a delta of 1e-6: ten runs of 1e-7 each, whatever
    the epsilon paid for. Now the delta follows the policy (the runs the epsilon pays for x the per-run delta),
    and the command says what a run costs and how many runs each amount allows."""

    def as_olga(*args: str) -> tuple[int, str]:
        profile = room.deployment.pki / "identities" / "olga" / "profile.toml"
        result = CliRunner().invoke(cli, ["--profile", str(profile), *args, "--server", f"127.0.0.1:{room.port}"])
        return result.exit_code, result.stdout

    def runs_of(data: dict[str, Any], package: str) -> dict[str, Any]:
        (found,) = [r for r in data["runs"] if r["package"] == package]
        return found

    code, out = as_olga("budget", "set", "jack", "population", "--epsilon", "10", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["delta_defaulted"] and data["budget"]["delta_total"] == pytest.approx(4e-6, abs=1e-18)
    count = runs_of(data, "dp-count@1.0.0")
    assert (count["epsilon"], count["delta"]) == (0.25, 1e-7)
    assert (count["runs_by_epsilon"], count["runs_by_delta"], count["runs"], count["limited_by"]) == (
        40, 40, 40, "epsilon")  # fmt: skip

    code, out = as_olga("budget", "set", "jack", "population", "--epsilon", "10")
    assert code == 0 and "delta defaulted to 4e-06" in out, out
    assert (
        "dp-count@1.0.0: one run costs epsilon 0.25 and delta 1e-07; the budget pays for 40 more "
        "(epsilon allows 40, delta 40): epsilon limits"
    ) in out

    code, out = as_olga("budget", "set", "jack", "population", "--epsilon", "10", "--delta", "1e-6", "--json")
    data = json.loads(out)  # an explicit delta is kept, and the command says that it is what limits
    assert not data["delta_defaulted"] and data["budget"]["delta_total"] == 1e-6
    count = runs_of(data, "dp-count@1.0.0")
    assert (count["runs_by_epsilon"], count["runs_by_delta"], count["runs"], count["limited_by"]) == (
        40, 10, 10, "delta")  # fmt: skip

    with room.client("jack") as jack:  # one run spent: the default counts what was spent too
        jack.wait(jack.run_job("dp-count", {}).id, timeout=120)
    data = json.loads(as_olga("budget", "set", "jack", "population", "--epsilon", "10", "--json")[1])
    assert data["budget"]["delta_total"] == pytest.approx(4e-6, abs=1e-18)
    count = runs_of(data, "dp-count@1.0.0")
    assert (count["runs_by_epsilon"], count["runs_by_delta"], count["limited_by"]) == (39, 39, "epsilon")


def test_the_ledger_survives_a_restart(dp_catalog_dir: Path, pki: Deployment, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server, port = create_server(server_config(dp_catalog_dir, state, pki.pki))
    try:
        submit_approved(pki, port, "alice", DP_COUNT)
        with pki.client("olga", port) as olga:
            olga.set_budget("alice", "population", 0.5)
        with pki.client("alice", port) as alice:
            alice.run_job("dp-count")
    finally:
        server.stop(1.0)
    server, port = create_server(server_config(dp_catalog_dir, state, pki.pki))
    try:
        with pki.client("alice", port) as alice:
            (budget,) = alice.list_budgets()
            assert (budget.epsilon_spent, budget.epsilon_remaining, budget.jobs_charged) == (0.25, 0.25, 1)
            alice.run_job("dp-count")
            with pytest.raises(BudgetExhausted):
                alice.run_job("dp-count")
    finally:
        server.stop(1.0)


def test_a_catalog_turning_private_under_an_approved_package_refuses_its_runs(
    catalog_dir: Path, dp_catalog_dir: Path, pki: Deployment, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server, port = create_server(server_config(catalog_dir, state, pki.pki))  # no differential privacy yet
    try:
        submit_approved(pki, port, "alice", UNDECLARED)
    finally:
        server.stop(1.0)
    server, port = create_server(server_config(dp_catalog_dir, state, pki.pki))
    try:
        with pki.client("olga", port) as olga:
            olga.set_budget("alice", "population", 10)
        with pki.client("alice", port) as alice:
            with pytest.raises(FailedPrecondition) as caught:
                alice.run_job("undeclared")
            assert caught.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
            assert "population" in caught.value.message and "[privacy] epsilon" in caught.value.message
            assert alice.list_jobs()[0] == [] and alice.list_budgets()[0].epsilon_spent == 0
    finally:
        server.stop(1.0)


def test_the_budget_gauges_are_what_everyone_was_charged(dp_catalog_dir: Path, pki: Deployment, tmp_path: Path) -> None:
    """/metrics' spent epsilon and delta per dataset: the charges of every researcher together, as the ledger
    holds them (a dashboard's view of budgets running out), read from a real scrape."""
    from tests.server.test_metrics import samples, value

    config = server_config(dp_catalog_dir, tmp_path / "state", pki.pki, metrics_listen="127.0.0.1:0")
    server, port = create_server(config)
    try:
        room = Room(server, pki)
        for who in ("erin", "frank"):
            submit_approved(pki, port, who, DP_COUNT)
            room.give(who, "population", 1.0)
        with room.client("erin") as erin, room.client("frank") as frank:
            jobs = [(erin, erin.run_job("dp-count")) for _ in range(3)] + [(frank, frank.run_job("dp-count"))]
            assert all(client.wait(job.id, timeout=120).state == "succeeded" for client, job in jobs)
        assert server.metrics_port is not None
        found = samples(server.metrics_port)
        spent = [room.budget(who) for who in ("erin", "frank")]
        assert value(found, "saferoom_budget_spent_epsilon", dataset="population") == pytest.approx(1.0)
        assert value(found, "saferoom_budget_spent_epsilon", dataset="population") == pytest.approx(
            sum(b.epsilon_spent for b in spent)
        )
        assert value(found, "saferoom_budget_spent_delta", dataset="population") == pytest.approx(4e-7)
        assert value(found, "saferoom_budget_spent_epsilon", dataset="housing_transactions") == 0
    finally:
        server.stop(1.0)
