"""Output checking through the real server with real certificates: exact personal results are held, an output
checker (never the researcher who ran the job) reviews them in full and signs a decision bound to the result's
hash; the researcher fetches only what was released, and sees a rejection's reason."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from saferoom._proto.saferoom.v1 import checks_pb2, checks_pb2_grpc
from saferoom.audit import EventType, load_public_key, verify_log
from saferoom.checks import Decision, sign_decision
from saferoom.client import Client, HeldResult
from saferoom.errors import (
    AuthenticationFailed,
    FailedPrecondition,
    InvalidRequest,
    JobFailed,
    JobNotFinished,
    NotFound,
    PermissionDenied,
)
from saferoom.identity import issue_identity, load_signing_key, revoke_identity
from saferoom.server import SaferoomServer, create_server
from tests.support import Deployment, server_config

REPO = Path(__file__).resolve().parents[2]
PACKAGES = REPO / "tests" / "fixtures" / "packages"

SALES = {
    "saferoom.toml": 'name = "sales-by-district"\nversion = "1.0.0"\nentrypoint = "main.py:run"\n'
    'datasets = ["housing_transactions"]\n',
    "main.py": "def run(ctx):\n"
    "    sales = ctx.table('housing_transactions')\n"
    "    print('counting sales')\n"
    "    return {'sales': sales.group_by('district').agg(n=count(), price=mean('price'))}\n",
}


def checked_catalog(source: Path, target: Path) -> Path:
    """The exact-rules city with checking required, housing transactions needing two checkers."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "catalog.json").read_text())
    assert manifest["datasets"]["population"]["policy"]["output_checking"] == "required"
    assert manifest["datasets"]["bus_stops"]["policy"]["output_checking"] == "none"
    manifest["datasets"]["housing_transactions"]["policy"]["output_checkers"] = 2
    (target / "catalog.json").write_text(json.dumps(manifest))
    return target


def submit_and_approve(deployment: Deployment, port: int, files: dict[str, bytes] | Path, who: str = "alice") -> str:
    with deployment.client(who, port) as researcher, deployment.client("olga", port) as operator:
        summary, _ = researcher.submit_package(files)
        if summary.status != "approved":
            operator.approve_package(summary.hash, days=30)
        return summary.hash


@dataclass
class World:
    server: SaferoomServer
    deployment: Deployment
    state: Path

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, name: str) -> Client:
        return self.deployment.client(name, self.port)

    def run(self, name: str, package: str, params: dict[str, object] | None = None) -> str:
        with self.client(name) as c:
            job = c.run_job(package, params or {})
            assert c.wait(job.id, timeout=120).state != "running"
            return job.id


@pytest.fixture(scope="module")
def world(
    checked_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    data = checked_catalog(checked_catalog_dir, tmp_path_factory.mktemp("data") / "city")
    state = tmp_path_factory.mktemp("state")
    srv, port = create_server(server_config(data, state, deployment.pki))
    try:
        submit_and_approve(deployment, port, PACKAGES / "small_cells")
        submit_and_approve(deployment, port, PACKAGES / "echo")
        submit_and_approve(deployment, port, {k: v.encode() for k, v in SALES.items()})
        yield World(srv, deployment, state)
    finally:
        srv.stop(1.0)


def held_job(world: World, package: str = "small-cells", who: str = "alice") -> str:
    job_id = world.run(who, package)
    with world.client(who) as c:
        assert c.get_job(job_id).state == "awaiting_check"
    return job_id


def test_exact_personal_result_is_held_until_a_checker_approves(world: World) -> None:
    job_id = held_job(world)
    with world.client("alice") as alice:
        job = alice.wait(job_id)  # the researcher's wait returns: nothing more happens without a person
        assert (job.state, job.error_code, job.error_message) == ("awaiting_check", "", "")
        with pytest.raises(JobNotFinished, match="awaiting_check"):
            alice.get_result(job_id)
    with world.client("quinn") as quinn:
        assert job_id in [h.job.id for h in quinn.list_held()]
        held = quinn.get_held(job_id)
        assert (held.job.owner, held.job.package_name, held.job.datasets) == ("alice", "small-cells", ["population"])
        assert held.submitters == ["alice"] and held.checkers_required == 1 and held.decisions == []
        assert held.submitted_at <= held.started_at <= held.held_at <= time.time()  # who ran it, and when
        source = (PACKAGES / "small_cells" / "main.py").read_bytes()
        assert held.files["main.py"] == source  # the code that made it, in full
        coarse = next(o for o in held.outputs if o.name == "coarse").table
        assert coarse is not None and sum(coarse.column("n").to_pylist()) == 20_000  # the values, in full
        by_person = next(o for o in held.outputs if o.name == "by_person")
        assert any("suppressed" in f for f in by_person.flags)
        assert held.computed_hash() == held.result_hash
        after = quinn.approve_result(job_id, reviewed=held)
        assert after.job.state == "succeeded"
        assert [(d.checker, d.decision) for d in after.decisions] == [("quinn", "approve")]
        assert job_id not in [h.job.id for h in quinn.list_held()]
    with world.client("alice") as alice:
        released = alice.get_result(job_id)
        table = released.output("coarse").table
        assert table is not None and table.equals(coarse)


def test_public_only_results_are_not_held(world: World) -> None:
    job_id = world.run("alice", "echo")
    with world.client("alice") as alice:
        assert alice.get_job(job_id).state == "succeeded"
        assert alice.get_result(job_id).output("n").value == 6


def test_rejection_and_request_for_changes_reach_the_researcher_with_the_reason(world: World) -> None:
    rejected, changed = held_job(world), held_job(world)
    with world.client("quinn") as quinn:
        quinn.reject_result(rejected, "the fine table singles out people by age and sex")
        quinn.request_changes(changed, "coarsen the age bands to 10 years")
    with world.client("alice") as alice:
        job = alice.get_job(rejected)
        assert job.state == "rejected" and job.error_code == "output_rejected"
        assert "singles out people by age and sex" in job.error_message
        with pytest.raises(JobFailed, match="singles out"):
            alice.get_result(rejected)
        job = alice.get_job(changed)
        assert job.state == "changes_requested" and "10 years" in job.error_message
        with pytest.raises(JobFailed, match="10 years"):
            alice.get_result(changed)


def test_two_checkers_are_needed_where_the_policy_says_so(world: World) -> None:
    job_id = held_job(world, "sales-by-district")
    with world.client("quinn") as quinn:
        assert quinn.approve_result(job_id).job.state == "awaiting_check"
        with pytest.raises(FailedPrecondition, match="already decided") as caught:
            quinn.approve_result(job_id)  # the same checker twice is not two checkers
        assert caught.value.grpc_code == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    with world.client("alice") as alice, pytest.raises(JobNotFinished):
        alice.get_result(job_id)
    with world.client("quincy") as quincy:
        held = quincy.get_held(job_id)
        assert held.checkers_required == 2 and held.printed == "counting sales\n"
        assert quincy.approve_result(job_id, reviewed=held).job.state == "succeeded"
    with world.client("alice") as alice:
        assert alice.get_result(job_id).output("sales").table is not None


def test_any_rejection_ends_a_two_checker_review(world: World) -> None:
    job_id = held_job(world, "sales-by-district")
    with world.client("quinn") as quinn:
        quinn.approve_result(job_id)
    with world.client("quincy") as quincy:
        assert quincy.reject_result(job_id, "too few sales in Xiang'an").job.state == "rejected"
    with world.client("alice") as alice, pytest.raises(JobFailed, match="Xiang'an"):
        alice.get_result(job_id)


def test_errors_have_the_right_status_and_lose_nothing(world: World) -> None:
    finished = world.run("alice", "echo")
    held = held_job(world)
    with world.client("quinn") as quinn:
        with pytest.raises(NotFound):
            quinn.get_held(secrets.token_hex(16))
        with pytest.raises(NotFound):
            quinn.approve_result(secrets.token_hex(16))
        with pytest.raises(FailedPrecondition):
            quinn.get_held(finished)
        with pytest.raises(InvalidRequest, match="reason"):
            quinn.reject_result(held, "   ")
        with pytest.raises(InvalidRequest, match="reason"):
            quinn.request_changes(held, "x" * 2001)
        assert quinn.get_held(held).decisions == []  # nothing recorded by the refusals
        assert quinn.approve_result(held).job.state == "succeeded"
        with pytest.raises(FailedPrecondition, match="not awaiting"):
            quinn.reject_result(held, "too late")


def test_malformed_decisions_are_invalid_argument(world: World) -> None:
    job_id = held_job(world)
    with world.deployment.channel("quinn", world.port) as channel:
        stub = checks_pb2_grpc.ChecksServiceStub(channel)
        held = stub.GetHeld(checks_pb2.GetHeldRequest(job_id=job_id)).held
        good = {"job_id": job_id, "decision": checks_pb2.CHECK_DECISION_APPROVE, "result_hash": held.result_hash,
                "decided_at": int(time.time()), "signature": b"\0" * 64}  # fmt: skip
        for change in (
            {"job_id": "../../etc"},
            {"decision": checks_pb2.CHECK_DECISION_UNSPECIFIED},
            {"decision": 99},
            {"result_hash": "zz"},
            {"signature": b"short"},
            {"signature": b"\0" * 64},  # well-formed, but no signature of quinn's
            {"decided_at": 0},
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Decide(checks_pb2.DecideRequest(**{**good, **change}))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, change
        assert len(stub.GetHeld(checks_pb2.GetHeldRequest(job_id=job_id)).held.decisions) == 0


def test_a_checker_may_not_check_a_job_they_ran_or_a_package_they_submitted(world: World) -> None:
    submit_and_approve(world.deployment, world.port, PACKAGES / "small_cells", who="rita")  # rita submits it too
    own = held_job(world, who="rita")
    others = held_job(world)
    with world.client("rita") as rita:
        for job_id in (own, others):
            with pytest.raises(PermissionDenied):
                rita.get_held(job_id)  # seeing it would be fetching it unchecked
            with pytest.raises(PermissionDenied):
                rita.approve_result(job_id)
        assert {own, others}.isdisjoint(h.job.id for h in rita.list_held())
        with pytest.raises(JobNotFinished):
            rita.get_result(own)
    with world.client("quinn") as quinn:
        assert quinn.approve_result(own).job.state == "succeeded"


def test_roles_other_than_checker_cannot_reach_the_checks_service(world: World) -> None:
    job_id = held_job(world)
    for name in ("alice", "olga", "audrey"):
        with world.client(name) as other:
            with pytest.raises(PermissionDenied):
                other.list_held()
            with pytest.raises(PermissionDenied):
                other.get_held(job_id)
    with world.client("quinn") as quinn:
        with pytest.raises(PermissionDenied):
            quinn.get_result(job_id)  # a checker reads held results only, never fetches as a researcher
        with pytest.raises(PermissionDenied):
            quinn.run_job("small-cells")


def test_a_revoked_checker_is_refused(world: World) -> None:
    issue_identity(world.deployment.pki, "cleo", "output_checker")
    job_id = held_job(world)
    with world.client("cleo") as cleo:
        held = cleo.get_held(job_id)
        revoke_identity(world.deployment.pki, "cleo")
        with pytest.raises(AuthenticationFailed):
            cleo.approve_result(job_id, reviewed=held)
    with world.client("quinn") as quinn:
        assert quinn.get_held(job_id).decisions == []


def test_every_step_is_audited_and_decisions_verify_offline(world: World) -> None:
    job_id = held_job(world)
    with world.client("quinn") as quinn:
        quinn.approve_result(job_id, "fine: district totals only")
    with world.client("alice") as alice:
        alice.get_result(job_id)
        with pytest.raises(PermissionDenied):
            list(alice.read_log(limit=5))  # researchers never read the log
    with world.client("audrey") as audrey:
        records = [r for r in audrey.read_log() if r.objects.get("job") == job_id]
        events = [r.event for r in records]
        report = audrey.verify_log()
    (held,) = [r.summary for r in records if r.event == "result_held"]
    # No count of the held result reaches the log (auditors are not cleared for exact data either).
    assert set(held) == {"result_hash", "outputs", "budget_charged", "checkers_required"}
    assert all(set(o) == {"name", "kind"} for o in held["outputs"])
    assert events == [
        "job_queued", "job_started", "result_held", "job_finished", "result_checked", "result_released",
        "job_finished", "result_downloaded",
    ]  # fmt: skip
    assert report.ok
    log = (world.state / "audit" / "audit.log").read_bytes()
    key = load_public_key((world.state / "audit" / "audit.pub").read_bytes())
    offline = verify_log(log, key, ca_pem=(world.deployment.pki / "ca.crt").read_bytes())
    assert offline.ok, offline.reason
    assert offline.decisions >= 1
    assert EventType.RESULT_CHECKED.value in events


def test_a_held_result_stays_held_across_a_restart(
    checked_catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    from tests.server.test_server_restart import kill_hard, start_server

    data = checked_catalog(checked_catalog_dir, tmp_path / "city")
    state = tmp_path / "state"
    proc, port = start_server(data, state, deployment.pki)
    try:
        submit_and_approve(deployment, port, PACKAGES / "small_cells")
        with deployment.client("alice", port) as alice:
            job_id = alice.run_job("small-cells").id
            assert alice.wait(job_id, timeout=120).state == "awaiting_check"
    finally:
        kill_hard(proc)
    proc, port = start_server(data, state, deployment.pki)
    try:
        with deployment.client("alice", port) as alice:
            assert alice.get_job(job_id).state == "awaiting_check"
            with pytest.raises(JobNotFinished):
                alice.get_result(job_id)
        with deployment.client("quinn", port) as quinn:
            held: HeldResult = quinn.get_held(job_id)
            assert held.computed_hash() == held.result_hash
            assert quinn.approve_result(job_id, reviewed=held).job.state == "succeeded"
        with deployment.client("alice", port) as alice:
            assert alice.get_result(job_id).output("coarse").table is not None
    finally:
        kill_hard(proc)
    proc, port = start_server(data, state, deployment.pki)  # start-up re-verifies the log, decisions included
    try:
        with deployment.client("alice", port) as alice:
            assert alice.get_job(job_id).state == "succeeded"
        with deployment.client("audrey", port) as audrey:
            report = audrey.verify_log()
            assert report.ok and report.decisions == 1
    finally:
        kill_hard(proc)


def test_a_signature_by_another_checkers_key_is_refused(world: World) -> None:
    job_id = held_job(world)
    with world.client("quinn") as quinn:
        held = quinn.get_held(job_id)
        forged = sign_decision(
            load_signing_key(world.deployment.profile("quincy").signing_key),  # type: ignore[arg-type]
            job_id, held.result_hash, Decision.APPROVE, "", "quinn", int(time.time()),
        )  # fmt: skip
    with world.deployment.channel("quinn", world.port) as channel:
        request = checks_pb2.DecideRequest(
            job_id=job_id, decision=checks_pb2.CHECK_DECISION_APPROVE, result_hash=held.result_hash,
            decided_at=int(time.time()), signature=forged,
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            checks_pb2_grpc.ChecksServiceStub(channel).Decide(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_check_commands(world: World) -> None:
    from click.testing import CliRunner

    from saferoom.cli.main import cli

    def as_user(name: str, *args: str) -> tuple[int, str]:
        profile = world.deployment.pki / "identities" / name / "profile.toml"
        result = CliRunner().invoke(cli, ["--profile", str(profile), *args, "--server", f"127.0.0.1:{world.port}"])
        return result.exit_code, result.output

    code, out = as_user("alice", "datasets", "describe", "housing_transactions")
    assert code == 0 and "held until 2 output checkers sign" in " ".join(out.split())
    code, out = as_user("alice", "jobs", "run", "small-cells")
    assert code == 0 and "awaiting_check" in out and "held for an output checker" in out, out
    job_id = out.split()[1]
    code, out = as_user("quinn", "check", "list")
    assert code == 0 and job_id in out
    code, out = as_user("quinn", "check", "show", job_id)
    assert code == 0 and "alice" in out and "risk flags" in out
    assert 'fine = people.group_by("district", "age", "sex")' in out  # the source, lines uncut
    assert "more rows not shown" not in out  # every row of every output
    code, out = as_user("quinn", "check", "request-changes", job_id, "--reason", "use 10-year age bands")
    assert code == 0 and "changes_requested" in out, out
    code, out = as_user("quinn", "check", "approve", job_id)
    assert code == 1 and "not awaiting" in out
    code, out = as_user("alice", "jobs", "get", job_id)
    assert code == 0 and "changes_requested" in out and "10-year age bands" in " ".join(out.split())
    code, out = as_user("alice", "check", "list")
    assert code == 1 and "permission_denied" in out


def _copy_state(world: World, to: Path) -> Path:
    """The running server's state as a crash would leave it (database, its WAL, the audit directory)."""
    to.mkdir()
    for file in ("saferoom.db", "saferoom.db-wal"):
        if (world.state / file).exists():
            shutil.copy2(world.state / file, to / file)
    shutil.copytree(world.state / "audit", to / "audit")
    return to


def test_held_results_and_decisions_are_cross_checked_against_the_log(world: World, tmp_path: Path) -> None:
    """The state database and the log are one truth for output checking too: a held result changed on disk,
    a decision deleted or forged into the database is refused at start-up (and by `saferoom state check`)."""
    import sqlite3

    from saferoom.audit.crosscheck import check_state_dir

    held = held_job(world)
    decided = held_job(world)
    with world.client("quinn") as quinn:
        quinn.reject_result(decided, "a cell too small")
    assert not [p for p in check_state_dir(_copy_state(world, tmp_path / "intact")) if held in p or decided in p]
    for name, sql, expected in (
        ("bytes", "UPDATE result_outputs SET report_json = report_json || ' ' WHERE job_id = ?", "result_held"),
        ("decision", "DELETE FROM check_decisions WHERE job_id = ?", "result_checked"),
    ):
        copy = _copy_state(world, tmp_path / name)
        job = held if name == "bytes" else decided
        with sqlite3.connect(copy / "saferoom.db") as conn:
            conn.execute(sql, (job,))
        problems = check_state_dir(copy)
        assert any(job in p and expected in p for p in problems), (name, problems)
