"""Backup under load, restore, serve: a backup taken while jobs are being submitted and run restores into a state
that `state check` accepts, and a server on it verifies its log and serves every job acknowledged before the
backup began. A restored server refuses to start on a log shorter than an auditor's saved checkpoint."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferoom.audit.segments import SEGMENTS_DIR, segment_files
from saferoom.cli.main import cli
from saferoom.errors import AuditLogDamaged, InvalidRequest, StateDamaged
from saferoom.server import create_server
from tests.support import Deployment, approve_all, server_config


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_backup_under_load_restores_to_a_server_that_serves_every_acknowledged_job(
    catalog_dir: Path, algorithms_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = server_config(catalog_dir, state, deployment.pki, audit_segment_bytes=4096)
    srv, port = create_server(config)
    acknowledged: list[tuple[float, str]] = []
    stop = threading.Event()

    def submit() -> None:
        with deployment.client("alice", port) as alice:
            i = 0
            while not stop.is_set():
                job = alice.run_job("echo", {"n": i % 50})
                acknowledged.append((time.monotonic(), job.id))
                i += 1

    try:
        approve_all(deployment, port, algorithms_dir)
        submitter = threading.Thread(target=submit)
        submitter.start()
        try:
            while len(acknowledged) < 15:
                time.sleep(0.02)
            began = time.monotonic()
            code, out = invoke("state", "backup", str(tmp_path / "backup"), "--state", str(state))
            assert code == 0, out
            while len(acknowledged) < 40:  # the server goes on: these are after the backup
                time.sleep(0.02)
        finally:
            stop.set()
            submitter.join(30)
        before = [job for at, job in acknowledged if at < began]
        assert len(before) >= 15 and len(segment_files(state / "audit" / SEGMENTS_DIR)) >= 1
        with deployment.client("audrey", port) as audrey:
            later = audrey.get_checkpoint()  # an auditor saves a checkpoint after the backup
    finally:
        srv.stop(1.0)
    anchor = tmp_path / "later.json"
    anchor.write_text(later.to_json(), encoding="utf-8")

    restored = tmp_path / "restored"
    code, out = invoke("state", "restore", str(tmp_path / "backup"), "--state", str(restored))
    assert code == 0 and "agrees with its audit log" in out, out
    code, out = invoke("state", "check", "--state", str(restored))
    assert code == 0, out

    srv, port = create_server(server_config(catalog_dir, restored, deployment.pki))
    try:
        with deployment.client("alice", port) as alice, deployment.client("audrey", port) as audrey:
            for job_id in before:
                final = alice.wait(job_id, timeout=60)  # queued in the backup: run now; done: served
                assert final.state in ("succeeded", "failed"), final.state
                if final.state == "succeeded":
                    assert alice.get_result(job_id).output("stops").table.num_rows >= 0
                else:
                    assert final.error_code == "interrupted"  # running when the backup was taken
            assert sum(alice.get_job(j).state == "succeeded" for j in before) >= len(before) - 3
            assert audrey.verify_log().ok
    finally:
        srv.stop(1.0)

    # The auditor's later checkpoint covers records the backup never had: refused, offline and at start-up.
    again = tmp_path / "again"
    with pytest.raises(StateDamaged, match="checkpoint"):
        from saferoom.audit import Checkpoint
        from saferoom.audit.backup import restore_state

        restore_state(tmp_path / "backup", again, (Checkpoint.from_json(anchor.read_text(encoding="utf-8")),))
    code, out = invoke("state", "restore", str(tmp_path / "backup"), "--state", str(tmp_path / "plain"))
    assert code == 0, out
    with pytest.raises(AuditLogDamaged, match="checkpoint covers"):
        create_server(server_config(catalog_dir, tmp_path / "plain", deployment.pki, audit_anchor=str(anchor)))


def test_restore_refuses_a_changed_backup_and_a_used_target(
    catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    srv, _ = create_server(server_config(catalog_dir, state, deployment.pki))
    srv.stop(1.0)
    code, out = invoke("state", "backup", str(tmp_path / "backup"), "--state", str(state))
    assert code == 0, out
    with pytest.raises(InvalidRequest, match="not empty"):
        from saferoom.audit.backup import backup_state, restore_state

        backup_state(state, tmp_path / "backup")
    log = tmp_path / "backup" / "audit" / "audit.log"
    data = bytearray(log.read_bytes())
    data[-1] ^= 1
    log.write_bytes(bytes(data))
    with pytest.raises(StateDamaged, match="changed"):
        restore_state(tmp_path / "backup", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
