"""State and log are one source of truth (issue 13): the outbox, the start-up reconciliation and cross-check,
``saferoom state check``, damaged files refused naming what is wrong, and the lock order under concurrent
checkpoints."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from saferoom.audit import AuditFilter, AuditLog, EventType, verify_log
from saferoom.audit.crosscheck import check_state_dir
from saferoom.cli.main import cli
from saferoom.errors import SaferoomError
from saferoom.server import create_server
from saferoom.store import Database
from tests.support import Deployment, server_config
from tests.support_state import DP_COUNT, States, copy_state, execute, frame_ends, populate, refusal


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory, dp_catalog_dir: Path, deployment: Deployment) -> States:
    return populate(tmp_path_factory.mktemp("truth"), dp_catalog_dir, deployment)


# ---------------------------------------------------------------------------------------------- the outbox


def _open(tmp_path: Path) -> tuple[Database, AuditLog]:
    db = Database.open(tmp_path / "saferoom.db")
    return db, AuditLog(tmp_path / "audit", db)


def _crash_image(tmp_path: Path, name: str) -> Path:
    """The files as a crash would leave them: the database and the log, copied with the writer still open."""
    return copy_state(tmp_path / "live", tmp_path / name)


def test_a_record_appended_before_a_crash_is_not_appended_again(tmp_path: Path) -> None:
    db, log = _open(tmp_path)
    log.append(EventType.SERVER_STARTED, "saferoom", "server")
    head_before = (log.last_seq, log.verify().head)
    log.append(EventType.BUDGET_SET, "olga", "operator", {"identity": "alice"}, {"epsilon_total": 1.0})
    log.close()
    last = log.last_seq  # with the closing checkpoint
    db.close()
    # The crash between appending and settling: the row is still in the outbox, the head is the older one.
    with closing(sqlite3.connect(tmp_path / "saferoom.db")) as conn, conn:
        conn.execute(
            "INSERT INTO audit_outbox (event, actor, role, objects_json, summary_json) VALUES (?, ?, ?, ?, ?)",
            ("budget_set", "olga", "operator", '{"identity":"alice"}', '{"epsilon_total":1.0}'),
        )
        conn.execute("UPDATE audit_head SET seq = ?, hash = ?", head_before)
    db, log = _open(tmp_path)
    try:
        assert log.last_seq == last  # the checkpoint is skipped when matching, and nothing is appended twice
        assert [r.event for r in log.read(AuditFilter(events=frozenset({"budget_set"})))] == ["budget_set"]
        with db.reading() as conn:
            assert conn.execute("SELECT count(*) FROM audit_outbox").fetchone()[0] == 0
            assert tuple(conn.execute("SELECT seq, hash FROM audit_head").fetchone()) == (
                log.last_seq,
                log.verify().head,
            )
    finally:
        log.close()
        db.close()


def test_a_result_record_committed_but_not_yet_appended_is_seen_by_whoever_saw_its_change(tmp_path: Path) -> None:
    """The window between a change's commit and its records' append (another thread holds the log): a reader
    that saw the job succeed must find its result_released record, not call the state damaged (DATA_LOSS)."""
    db, log = _open(tmp_path)
    try:
        log.append(EventType.SERVER_STARTED, "saferoom", "server")
        with db.transaction() as conn:  # what AuditLog.commit writes before it takes the log's lock
            conn.execute(
                "INSERT INTO audit_outbox (event, actor, role, objects_json, summary_json) VALUES (?, ?, ?, ?, ?)",
                ("result_released", "saferoom", "server", '{"job":"j1"}', '{"result_hash":"abc"}'),
            )
        assert log.released_hash("j1") == "abc"
        assert log.held_hash("j2") is None  # nothing pending: a plain miss
        with db.reading() as conn:
            assert conn.execute("SELECT count(*) FROM audit_outbox").fetchone()[0] == 0
        assert [r.objects for r in log.read(AuditFilter(events=frozenset({"result_released"})))] == [{"job": "j1"}]
    finally:
        log.close()
        db.close()


def test_a_record_committed_but_not_appended_is_appended_once_at_start_up(tmp_path: Path) -> None:
    db, log = _open(tmp_path)
    log.append(EventType.SERVER_STARTED, "saferoom", "server")
    log.close()
    db.close()
    with (
        closing(sqlite3.connect(tmp_path / "saferoom.db")) as conn,
        conn,
    ):  # committed with its change; the crash came next
        conn.execute(
            "INSERT INTO audit_outbox (event, actor, role, objects_json, summary_json) VALUES (?, ?, ?, ?, ?)",
            ("budget_set", "olga", "operator", '{"identity":"alice"}', '{"epsilon_total":1.0}'),
        )
    for _ in range(2):  # and a second start changes nothing more
        db, log = _open(tmp_path)
        log.close()
        db.close()
    data = (tmp_path / "audit" / "audit.log").read_bytes()
    db, log = _open(tmp_path)
    try:
        assert verify_log(data, log.public_key).ok
        assert [r.summary for r in log.read(AuditFilter(events=frozenset({"budget_set"})))] == [{"epsilon_total": 1.0}]
    finally:
        log.close()
        db.close()


def test_appending_inside_a_transaction_is_refused_by_the_lock_order(tmp_path: Path) -> None:
    db, log = _open(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="lock order"), db.transaction():
            log.append(EventType.SERVER_STARTED, "saferoom", "server")
        with pytest.raises(RuntimeError, match="lock order"), db.transaction():
            log.checkpoint()
        assert log.last_seq == 0
    finally:
        log.close()
        db.close()


# ---------------------------------------------------------------------------------------------- damage


def _damaged(states: States, tmp_path: Path, crashed: bool = False) -> Path:
    return copy_state(states.crashed if crashed else states.stopped, tmp_path / "state")


def _refused_both_ways(state: Path, catalog: Path, deployment: Deployment, *fragments: str) -> str:
    """Start-up refuses ``state`` and ``saferoom state check`` says the same, each naming what is wrong."""
    offline = "; ".join(check_state_dir(state))
    for fragment in fragments:
        assert fragment in offline, offline
    reason = refusal(state, catalog, deployment)
    for fragment in fragments:
        assert fragment in reason, reason
    return reason


def test_an_intact_state_passes_the_check_and_starts(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                                     deployment: Deployment) -> None:  # fmt: skip
    for source in (states.stopped, states.crashed):
        state = copy_state(source, tmp_path / source.name)
        assert check_state_dir(state) == []
        srv, _ = create_server(server_config(dp_catalog_dir, state, deployment.pki))
        srv.stop(1.0)
        assert check_state_dir(state) == []


def test_a_deleted_database_beside_a_log_is_refused(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                                    deployment: Deployment) -> None:  # fmt: skip
    state = _damaged(states, tmp_path)
    for path in state.glob("saferoom.db*"):
        path.unlink()
    assert "saferoom.db is missing" in "; ".join(check_state_dir(state))
    reason = refusal(state, dp_catalog_dir, deployment)
    assert "deleted or replaced" in reason and str(state / "saferoom.db") in reason, reason
    # The empty database that refused start left behind is refused just the same, the next time.
    _refused_both_ways(state, dp_catalog_dir, deployment, "deleted or replaced")


def test_a_truncated_database_is_refused_with_its_path(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                                       deployment: Deployment) -> None:  # fmt: skip
    state = _damaged(states, tmp_path)
    path = state / "saferoom.db"
    os.truncate(path, path.stat().st_size // 2)
    _refused_both_ways(state, dp_catalog_dir, deployment, str(path), "damaged")


def test_a_deleted_wal_after_a_crash_is_refused(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                                deployment: Deployment) -> None:  # fmt: skip
    state = _damaged(states, tmp_path, crashed=True)
    (state / "saferoom.db-wal").unlink()  # the jobs committed since the last WAL checkpoint are gone
    (state / "saferoom.db-shm").unlink(missing_ok=True)
    _refused_both_ways(state, dp_catalog_dir, deployment, "was never committed", "lost changes")


def test_a_log_cut_at_a_record_boundary_after_the_last_checkpoint_is_refused(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = _damaged(states, tmp_path, crashed=True)
    log = state / "audit" / "audit.log"
    ends = frame_ends(log)
    os.truncate(log, ends[-3])  # the last two records: whole records, after the last stored checkpoint
    assert verify_log(log.read_bytes(), AuditLog_public_key(state)).ok  # on its own the cut log verifies
    _refused_both_ways(state, dp_catalog_dir, deployment, f"ends at record {len(ends) - 2}", "the log was cut")


def AuditLog_public_key(state: Path):  # type: ignore[no-untyped-def]
    from saferoom.audit import load_public_key

    return load_public_key((state / "audit" / "audit.pub").read_bytes())


def test_damage_to_a_record_before_the_stored_checkpoint_is_reported_at_that_record(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = _damaged(states, tmp_path)
    log = state / "audit" / "audit.log"
    data = bytearray(log.read_bytes())
    ends = frame_ends(log)
    start, end = ends[2], ends[3]  # record 4, long before the last checkpoint
    at = data.index(b'"actor":"', start) + len(b'"actor":"')
    assert at < end
    data[at] ^= 0x01  # still a readable record, with another actor
    log.write_bytes(bytes(data))
    reason = _refused_both_ways(state, dp_catalog_dir, deployment, "record 4")
    assert "record 5" not in reason


@pytest.mark.parametrize(
    ("sql", "fragments"),
    [
        ("DELETE FROM package_decisions WHERE kind = 'rejected'", ("'rejected' decisions by olga", "package_rejected")),
        ("UPDATE jobs SET params_json = '{\"n\": 99}'", ("runs another package, parameters or datasets",)),
        ("DELETE FROM jobs WHERE id NOT IN (SELECT job_id FROM budget_charges)", ("not in the database",)),
        ("DELETE FROM audit_head", ("no audit_head row",)),
        ("UPDATE jobs SET state = 'cancelled' WHERE state = 'succeeded'", ("no job_cancelled record",)),
    ],
)
def test_rows_removed_or_changed_behind_the_servers_back_are_refused(
    sql: str, fragments: tuple[str, ...], states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = _damaged(states, tmp_path)
    with closing(sqlite3.connect(state / "saferoom.db")) as conn, conn:
        conn.execute("PRAGMA foreign_keys=OFF")
        assert conn.execute(sql).rowcount >= 1
    _refused_both_ways(state, dp_catalog_dir, deployment, *fragments)


def test_state_check_cli_exits_non_zero_naming_the_problem(states: States, tmp_path: Path) -> None:
    good = copy_state(states.stopped, tmp_path / "good")
    result = CliRunner().invoke(cli, ["state", "check", "--state-dir", str(good)])
    assert result.exit_code == 0, result.output
    assert "agrees with its audit log" in result.output
    bad = copy_state(states.stopped, tmp_path / "bad")
    assert execute(bad, "DELETE FROM budget_charges") == 1
    result = CliRunner().invoke(cli, ["state", "check", "--state", str(bad)])
    assert result.exit_code == 1
    assert "NOT consistent" in result.output and "has no row in budget_charges" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------- lock order


def test_every_mutating_rpc_beside_checkpoints_and_verifications_finishes(
    dp_catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    """SetBudget used to hold SQLite's lock while waiting for the log's, which a checkpoint takes first."""
    srv, port = create_server(
        server_config(dp_catalog_dir, tmp_path / "state", deployment.pki, audit_checkpoint_every=2)
    )
    errors: list[BaseException] = []
    try:
        with deployment.client("alice", port) as alice, deployment.client("olga", port) as olga:
            summary, _ = alice.submit_package(DP_COUNT)
            olga.approve_package(summary.hash, days=30)
            olga.set_budget("alice", "population", 1000.0, 1e-4)

        def loop(who: str, action) -> None:  # type: ignore[no-untyped-def]
            try:
                with deployment.client(who, port, timeout=60) as c:
                    for i in range(12):
                        action(c, i)
            except BaseException as exc:
                errors.append(exc)

        def submit_and_decide(c, i):  # type: ignore[no-untyped-def]
            files = dict(DP_COUNT)
            files["main.py"] = files["main.py"] + f"# {i}\n".encode()
            s, _ = c.submit_package(files)
            with deployment.client("oscar", port) as oscar:
                if i % 2:
                    oscar.reject_package(s.hash, "no")
                else:
                    oscar.approve_package(s.hash, days=1)
                    oscar.revoke_approval(s.hash, "enough")

        def run_and_cancel(c, i):  # type: ignore[no-untyped-def]
            job = c.run_job(summary.hash, request_id=f"r{i}")
            if i % 3 == 0:
                c.cancel_job(job.id)

        actions = [
            ("olga", lambda c, i: c.set_budget("alice", "population", 500.0 + i, 1e-4)),
            ("olga", lambda c, i: c.set_budget("bob", "population", 1.0 + i, 1e-6)),
            ("alice", run_and_cancel),
            ("alice", submit_and_decide),
            ("audrey", lambda c, i: c.get_checkpoint()),
            ("audrey", lambda c, i: c.verify_log()),
        ]
        threads = [threading.Thread(target=loop, args=a, daemon=True) for a in actions]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 240
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "deadlock: calls still blocked after 240 s"
        assert not errors, errors
        with deployment.client("audrey", port) as audrey:
            assert audrey.verify_log().ok
    finally:
        srv.stop(1.0)
    assert check_state_dir(tmp_path / "state") == []


# ---------------------------------------------------------------------------------------------- served results


def test_a_result_that_no_longer_matches_its_release_record_is_not_served(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    state = copy_state(states.stopped, tmp_path / "state")
    srv, port = create_server(server_config(dp_catalog_dir, state, deployment.pki))
    try:
        with deployment.client("alice", port) as alice:
            assert alice.get_result(states.exact_job).output("n").table is not None
            with (
                closing(sqlite3.connect(state / "saferoom.db", timeout=30)) as conn,
                conn,
            ):  # the live file, behind its back
                blob = conn.execute(
                    "SELECT arrow_ipc FROM result_outputs WHERE job_id = ?", (states.exact_job,)
                ).fetchone()[0]
                changed = bytearray(blob)
                changed[-20] ^= 0x01
                conn.execute(
                    "UPDATE result_outputs SET arrow_ipc = ? WHERE job_id = ?", (bytes(changed), states.exact_job)
                )
            with pytest.raises(SaferoomError) as refused:
                alice.get_result(states.exact_job)
            assert refused.value.code == "state_damaged"
            assert "does not match" in refused.value.message
        assert any("NOT served" in r.getMessage() for r in caplog.records)
    finally:
        srv.stop(1.0)


def test_data_loss_is_the_status_of_a_damaged_result(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    from saferoom._proto.saferoom.v1 import jobs_pb2, jobs_pb2_grpc

    state = copy_state(states.stopped, tmp_path / "state")
    execute(state, 'UPDATE results SET report_json = \'{"result_hash": "00"}\' WHERE job_id = ?', (states.dp_job,))
    with closing(sqlite3.connect(state / "saferoom.db")) as conn, conn:
        assert conn.execute("SELECT count(*) FROM results").fetchone()[0] == 2
    # Start-up refuses it already; the check at serving time is for damage that comes while running.
    assert "does not match its result_released" in refusal(state, dp_catalog_dir, deployment)
    state = copy_state(states.stopped, tmp_path / "state2")
    srv, port = create_server(server_config(dp_catalog_dir, state, deployment.pki))
    try:
        execute(state, 'UPDATE results SET report_json = \'{"result_hash": "00"}\' WHERE job_id = ?', (states.dp_job,))
        with deployment.channel("alice", port) as channel:
            stub = jobs_pb2_grpc.JobsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as failed:
                stub.GetResult(jobs_pb2.GetResultRequest(job_id=states.dp_job), timeout=30)
            assert failed.value.code() == grpc.StatusCode.DATA_LOSS
    finally:
        srv.stop(1.0)


def test_serve_refuses_a_damaged_state_in_one_line_without_a_traceback(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    import subprocess
    import sys

    state = _damaged(states, tmp_path)
    execute(state, "DELETE FROM budget_charges")
    command = [sys.executable, "-m", "saferoom.cli.main", "serve", "--data", str(dp_catalog_dir), "--state",
               str(state), "--pki", str(deployment.pki), "--listen", "127.0.0.1:0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error (state_damaged):" in done.stderr and "has no row in budget_charges" in done.stderr, done.stderr
    assert "listening" not in done.stdout
