"""Held results and checkers' decisions in real SQLite: holding and deciding are each one transaction with the
job's state change; a refused decision records nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from saferoom.errors import CheckConflict, JobNotFound
from saferoom.jobs.checking import next_state
from saferoom.store import CheckStore, Database, DecisionRow, JobStore, StoredOutput
from tests.store.test_store_jobs import job

OUTPUTS = [StoredOutput("t", "aggregate", 0, b"ipc", None, "{}")]


@pytest.fixture
def stores(tmp_path: Path):
    db = Database.open(tmp_path / "state.db")
    yield JobStore(db), CheckStore(db)
    db.close()


def decision(job_id: str, checker: str, kind: str = "approve") -> DecisionRow:
    return DecisionRow(job_id, checker, kind, "why", "r" * 64, 1, b"s" * 64, b"pem")


def test_only_a_running_job_is_held_and_its_result_is_stored(stores: tuple[JobStore, CheckStore]) -> None:
    jobs, checks = stores
    queued = jobs.insert_job(job(1))
    assert not checks.hold(queued.id, OUTPUTS, {"result_hash": "r" * 64}, "r" * 64, 1, [])
    with pytest.raises(JobNotFound):
        checks.get(queued.id)  # nothing half-written
    jobs.update_state(queued.id, "running", expected=["queued"])
    assert checks.hold(queued.id, OUTPUTS, {"result_hash": "r" * 64}, "r" * 64, 2, [{"output": "t", "flags": []}])
    assert jobs.get_job(queued.id).state == "awaiting_check" and jobs.get_job(queued.id).finished_at is not None
    assert jobs.get_result(queued.id).outputs == OUTPUTS
    assert checks.awaiting() == [queued.id] and checks.get(queued.id).checkers_required == 2


def test_decisions_move_the_job_once_and_a_refused_one_records_nothing(stores: tuple[JobStore, CheckStore]) -> None:
    jobs, checks = stores
    held = jobs.insert_job(job(2))
    jobs.update_state(held.id, "running", expected=["queued"])
    checks.hold(held.id, OUTPUTS, {}, "r" * 64, 2, [])
    assert checks.decide(decision(held.id, "quinn"), next_state)[0] == "awaiting_check"  # one of two approvals
    with pytest.raises(CheckConflict):
        checks.decide(decision(held.id, "quinn"), next_state)  # the same checker again
    assert len(checks.get(held.id).decisions) == 1
    state, decisions = checks.decide(decision(held.id, "quincy"), next_state)
    assert state == "succeeded" and [d.checker for d in decisions] == ["quinn", "quincy"]
    assert jobs.get_job(held.id).state == "succeeded" and checks.awaiting() == []
    with pytest.raises(CheckConflict):
        checks.decide(decision(held.id, "third", "reject"), next_state)  # decided: no more decisions
    assert len(checks.get(held.id).decisions) == 2
    with pytest.raises(JobNotFound):
        checks.decide(decision(job(3).id, "quinn"), next_state)


def test_any_refusal_ends_the_review(stores: tuple[JobStore, CheckStore]) -> None:
    jobs, checks = stores
    for i, kind, state in ((4, "reject", "rejected"), (5, "request_changes", "changes_requested")):
        held = jobs.insert_job(job(i))
        jobs.update_state(held.id, "running", expected=["queued"])
        checks.hold(held.id, OUTPUTS, {}, "r" * 64, 2, [])
        checks.decide(decision(held.id, "quinn"), next_state)
        assert checks.decide(decision(held.id, "quincy", kind), next_state)[0] == state
        record = jobs.get_job(held.id)
        assert record.state == state and record.error_message is not None and "quincy" in record.error_message
