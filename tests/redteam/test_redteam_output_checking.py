"""Red team: with output_checking = "required", no exact personal result reaches a researcher unchecked, by any
way of fetching or observing a job; decisions cannot be forged, replayed onto another result, or made by someone
holding another person's certificate; and decisions verify offline from the audit log.

The attack package singles out one person with a masked aggregate (issue 12's first attack): the exact rules
may or may not catch it; the checker sees it first either way. Layer that must stop each: the job service
(held state, GetResult), the permission table (Checks, ReadLog), the Checks service (who may decide, what the
signature covers), offline verification (the log)."""

from __future__ import annotations

import json
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from click.testing import CliRunner

from saferoom._proto.saferoom.v1 import checks_pb2, checks_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from saferoom.audit import AuditFilter, AuditLog, EventType, VerifyReport, load_public_key, verify_log
from saferoom.checks import Decision, sign_decision
from saferoom.cli.main import cli
from saferoom.errors import JobNotFinished, PermissionDenied
from saferoom.identity import load_signing_key
from saferoom.server import SaferoomServer, create_server
from saferoom.store import Database
from tests.support import Deployment, server_config

TARGET = 4242  # the person the attack singles out
MARKER = "PRINTED-BY-THE-ATTACK-7c1e"
ATTACK = {
    "saferoom.toml": 'name = "single-out"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["population"]\n'
    "[parameters]\nshift = { type = 'int', default = 1000, min = 0, max = 10000 }\n",
    "main.py": "def run(ctx, shift=1000):\n"
    f"    print('{MARKER}')\n"
    "    people = ctx.table('population')\n"
    f"    masked = when(col('person_id') == {TARGET}, col('income')).otherwise(0) + shift\n"
    "    return {'leak': people.group_by('district').agg(n=count(), x=sum(masked)),\n"
    "            'total': people.agg(n=count()), 'shift': shift}\n",  # the shift: two runs, two results
}


def target_of(catalog_dir: Path) -> tuple[float, str]:
    """The singled-out person's exact income and district, read from the dataset itself."""
    table = pa.ipc.open_file(pa.memory_map(str(catalog_dir / "population.arrow"))).read_all()
    row = table.filter(pa.compute.equal(table["person_id"], TARGET)).to_pylist()[0]
    return float(row["income"]), str(row["district"])


def secrets_of(value: float) -> list[bytes]:
    """How the value (or the district sum it hides in) could appear in bytes the researcher receives."""
    forms = {repr(value), f"{value:.2f}", f"{value:.1f}", str(int(value))}
    return [f.encode() for f in forms if len(f) >= 4] + [struct.pack("<d", value)]


@pytest.fixture(scope="module")
def world(
    checked_catalog_dir: Path, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SaferoomServer, Path]]:
    data = tmp_path_factory.mktemp("redteam-checked") / "city"
    shutil.copytree(checked_catalog_dir, data)
    state = tmp_path_factory.mktemp("state")
    srv, port = create_server(server_config(data, state, deployment.pki))
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package({k: v.encode() for k, v in ATTACK.items()})
            olga.approve_package(summary.hash, days=30)
        with deployment.client("bob", port) as bob, deployment.client("olga", port) as olga:
            summary, _ = bob.submit_package({k: v.encode() for k, v in ATTACK.items()})
        yield srv, state
    finally:
        srv.stop(1.0)


def run_held(deployment: Deployment, port: int, who: str = "alice", shift: int = 1000) -> str:
    with deployment.client(who, port) as c:
        job = c.run_job("single-out", {"shift": shift})
        assert c.wait(job.id, timeout=120).state == "awaiting_check"
        return job.id


def cli_as(deployment: Deployment, name: str, port: int, *args: str) -> str:
    profile = deployment.pki / "identities" / name / "profile.toml"
    result = CliRunner().invoke(cli, ["--profile", str(profile), *args, "--server", f"127.0.0.1:{port}"])
    return result.output + (str(result.exception) if result.exception else "")


def test_no_way_of_fetching_shows_a_held_value(
    world: tuple[SaferoomServer, Path], deployment: Deployment, checked_catalog_dir: Path
) -> None:
    srv, _ = world
    job_id = run_held(deployment, srv.port)
    seen: list[bytes] = []
    with deployment.channel("alice", srv.port) as channel:
        jobs = jobs_pb2_grpc.JobsServiceStub(channel)
        seen.append(jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id)).SerializeToString())
        seen += [j.SerializeToString() for j in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id))]
        seen.append(jobs.ListJobs(jobs_pb2.ListJobsRequest()).SerializeToString())
        with pytest.raises(grpc.RpcError) as caught:
            jobs.GetResult(jobs_pb2.GetResultRequest(job_id=job_id))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        seen.append(str(caught.value.details()).encode())
        checks = checks_pb2_grpc.ChecksServiceStub(channel)
        for call, request in ((checks.GetHeld, checks_pb2.GetHeldRequest(job_id=job_id)),
                              (checks.ListHeld, checks_pb2.ListHeldRequest())):  # fmt: skip
            with pytest.raises(grpc.RpcError) as caught:
                call(request)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with deployment.client("alice", srv.port) as alice:
        job = alice.wait(job_id)
        assert (job.state, job.error_code, job.error_message) == ("awaiting_check", "", "")
        with pytest.raises(JobNotFinished):
            alice.get_result(job_id)
        with pytest.raises(PermissionDenied):
            list(alice.read_log(job=job_id))  # held counts are in the log: auditors only
    for args in (("jobs", "get", job_id), ("jobs", "list"), ("jobs", "watch", job_id), ("jobs", "result", job_id),
                 ("result", "show", job_id), ("jobs", "run", "single-out"), ("jobs", "run", "single-out", "--json"),
                 ("jobs", "result", job_id, "--json"), ("check", "show", job_id),
                 ("check", "list")):  # fmt: skip
        seen.append(cli_as(deployment, "alice", srv.port, *args).encode())
    blob = b"\n".join(seen)
    assert MARKER.encode() not in blob  # not even what the code printed
    assert b"awaiting_check" in blob
    income, district = target_of(checked_catalog_dir)
    for secret in secrets_of(income):
        assert secret not in blob
    # The checker, and only the checker, sees the outputs (and what the code printed) before anyone else.
    with deployment.client("quinn", srv.port) as quinn:
        held = quinn.get_held(job_id)
        assert MARKER in held.printed and {o.name for o in held.outputs} == {"leak", "total", "shift"}
        leak = next(o for o in held.outputs if o.name == "leak").table
        assert leak is not None
        cells = {r["district"]: r for r in leak.to_pylist()}
        cell = cells.get(district)
        if cell is not None and cell["x"] is not None:  # the rules let it through: the checker is all that stops it
            assert cell["x"] - 1000 * cell["n"] == pytest.approx(income)
            for secret in secrets_of(float(cell["x"])):
                assert secret not in blob  # nor the masked sum it hides in
        quinn.reject_result(job_id, "a masked sum singles out one person")
    with deployment.client("alice", srv.port) as alice:
        assert "singles out one person" in alice.get_job(job_id).error_message


def test_a_researcher_holding_a_checkers_certificate_cannot_decide(
    world: tuple[SaferoomServer, Path], deployment: Deployment
) -> None:
    srv, _ = world
    job_id = run_held(deployment, srv.port)
    quinn, alice = deployment.profile("quinn"), deployment.profile("alice")
    # quinn's certificate (public) with alice's key: refused in the TLS handshake, never reaching a method.
    stolen = grpc.ssl_channel_credentials(
        root_certificates=quinn.ca.read_bytes(),
        private_key=alice.key.read_bytes(),
        certificate_chain=quinn.cert.read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{srv.port}", stolen) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            checks_pb2_grpc.ChecksServiceStub(channel).ListHeld(checks_pb2.ListHeldRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # rita, a researcher who is also a checker, signs a decision in quinn's name with her own key: not quinn's.
    with deployment.client("rita", srv.port) as rita:
        held = rita.get_held(job_id)
        signature = sign_decision(load_signing_key(rita.profile.signing_key), job_id, held.result_hash,  # type: ignore[arg-type,union-attr]
                                  Decision.APPROVE, "", "quinn", int(time.time()))  # fmt: skip
    with deployment.channel("rita", srv.port) as channel:
        request = checks_pb2.DecideRequest(job_id=job_id, decision=checks_pb2.CHECK_DECISION_APPROVE,
                                           result_hash=held.result_hash, decided_at=int(time.time()),
                                           signature=signature)  # fmt: skip
        with pytest.raises(grpc.RpcError) as caught:
            checks_pb2_grpc.ChecksServiceStub(channel).Decide(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A researcher's own certificate cannot reach Decide at all.
    with deployment.channel("alice", srv.port) as channel:
        request.signature = b"\0" * 64
        with pytest.raises(grpc.RpcError) as caught:
            checks_pb2_grpc.ChecksServiceStub(channel).Decide(request)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with deployment.client("alice", srv.port) as researcher:
        assert researcher.get_job(job_id).state == "awaiting_check"


def test_a_decision_for_another_result_is_refused(world: tuple[SaferoomServer, Path], deployment: Deployment) -> None:
    srv, _ = world
    first, second = run_held(deployment, srv.port), run_held(deployment, srv.port, who="bob", shift=2000)
    key = load_signing_key(deployment.profile("quinn").signing_key)  # type: ignore[arg-type]
    with deployment.client("quinn", srv.port) as quinn:
        one, two = quinn.get_held(first), quinn.get_held(second)
    assert one.result_hash != two.result_hash
    now = int(time.time())
    cases = {
        # a valid signature over the first result, replayed onto the second job
        "replayed": (second, two.result_hash, sign_decision(key, first, one.result_hash, Decision.APPROVE, "", "quinn", now)),
        # the second job, but signed over the first result's hash
        "other hash": (second, two.result_hash, sign_decision(key, second, one.result_hash, Decision.APPROVE, "", "quinn", now)),
        # claiming to have reviewed another result than the one held
        "claimed hash": (second, one.result_hash, sign_decision(key, second, one.result_hash, Decision.APPROVE, "", "quinn", now)),
        # a signed rejection presented as an approval
        "other decision": (second, two.result_hash, sign_decision(key, second, two.result_hash, Decision.REJECT, "", "quinn", now)),
    }  # fmt: skip
    with deployment.channel("quinn", srv.port) as channel:
        stub = checks_pb2_grpc.ChecksServiceStub(channel)
        for name, (job_id, claimed, signature) in cases.items():
            request = checks_pb2.DecideRequest(job_id=job_id, decision=checks_pb2.CHECK_DECISION_APPROVE,
                                               result_hash=claimed, decided_at=now, signature=signature)  # fmt: skip
            with pytest.raises(grpc.RpcError) as caught:
                stub.Decide(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert len(stub.GetHeld(checks_pb2.GetHeldRequest(job_id=second)).held.decisions) == 0
    with deployment.client("bob", srv.port) as bob:
        assert bob.get_job(second).state == "awaiting_check"


def test_decisions_verify_offline_and_a_forged_one_is_caught(
    world: tuple[SaferoomServer, Path], deployment: Deployment, tmp_path: Path
) -> None:
    srv, state = world
    job_id = run_held(deployment, srv.port)
    with deployment.client("quinn", srv.port) as quinn:
        quinn.approve_result(job_id, "district totals, checked")
    ca = (deployment.pki / "ca.crt").read_bytes()
    log = (state / "audit" / "audit.log").read_bytes()
    key = load_public_key((state / "audit" / "audit.pub").read_bytes())
    report = verify_log(log, key, ca_pem=ca)
    assert report.ok and report.decisions >= 1

    # Someone holding the audit key (the server, if subverted) writes a decision nobody signed: the log's own
    # signatures verify, the decision's does not.
    def forge(name: str, actor: str, role: str, change: dict[str, str]) -> tuple[VerifyReport, Path]:
        copy = tmp_path / name
        (copy / "audit").mkdir(parents=True)
        for file in ("audit.log", "audit.key", "audit.pub"):
            shutil.copy2(state / "audit" / file, copy / "audit" / file)
        for file in ("saferoom.db", "saferoom.db-wal"):  # the state as a crash would leave it (the log's head)
            if (state / file).exists():
                shutil.copy2(state / file, copy / file)
        database = Database.open(copy / "saferoom.db")
        forged_log = AuditLog(copy / "audit", database, 1000)
        wanted = AuditFilter(events=frozenset({EventType.RESULT_CHECKED.value}), job=job_id)
        real = next(iter(forged_log.read(wanted)))
        forged_log.append(EventType.RESULT_CHECKED, actor, role, real.objects, {**real.summary, **change})
        forged_log.close()
        database.close()
        path = copy / "audit" / "audit.log"
        return verify_log(path.read_bytes(), key, ca_pem=ca), path

    words, path = forge("words", "quinn", "output_checker", {"reason": "never said this"})
    assert not words.ok and "does not verify" in words.reason
    assert words.first_bad_seq == words.records + 1
    alice_cert = (deployment.pki / "identities" / "alice" / "cert.pem").read_text()
    researcher, _ = forge("researcher", "alice", "researcher", {"checker": "alice", "certificate": alice_cert})
    assert not researcher.ok and "certificate" in researcher.reason
    outsider, _ = forge("outsider", "quinn", "output_checker", {"certificate": "-----BEGIN CERTIFICATE-----"})
    assert not outsider.ok
    result = CliRunner().invoke(
        cli, ["audit", "verify", "--file", str(path), "--key", str(state / "audit" / "audit.pub"),
              "--ca", str(deployment.pki / "ca.crt")],
    )  # fmt: skip
    assert result.exit_code == 2 and "does not verify" in result.output


def test_policy_values_are_strict(checked_catalog_dir: Path, tmp_path: Path) -> None:
    from saferoom.catalog.manifest import Manifest
    from saferoom.errors import InvalidRequest

    manifest = json.loads((checked_catalog_dir / "catalog.json").read_text())
    for change in ({"output_checking": "maybe"}, {"output_checking": True}, {"output_checkers": 3},
                   {"output_checkers": 0}, {"output_checkers": 1.0}, {"output_checkers": True}):  # fmt: skip
        broken = json.loads(json.dumps(manifest))
        broken["datasets"]["population"]["policy"].update(change)
        with pytest.raises(InvalidRequest):
            Manifest.from_data(broken)
