"""The SQLite state store: migrations, WAL, compare-and-set transitions, results, concurrency."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from saferoom.errors import JobNotFound
from saferoom.store import MIGRATIONS, Database, JobRecord, JobStore, StoredOutput


def job(i: int, owner: str = "alice", created: float | None = None) -> JobRecord:
    now = created if created is not None else time.time()
    return JobRecord(
        f"{i:032x}", owner, "h" * 64, "pkg", "1.0.0", "{}", "[]", "queued", None, None, now, None, None, now
    )


@pytest.fixture
def store(tmp_path: Path):
    db = Database.open(tmp_path / "state.db")
    yield JobStore(db)
    db.close()


def test_migrations_are_applied_once_and_wal_is_on(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "s.db")
    JobStore(db).insert_job(job(1))
    db.close()
    db.close()  # idempotent
    again = Database.open(tmp_path / "s.db")
    with again.reading() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        numbers = [r[0] for r in conn.execute("SELECT number FROM schema_migrations")]
    assert numbers == [n for n, _ in MIGRATIONS]
    assert JobStore(again).get_job(job(1).id).owner == "alice"
    again.close()


def test_transitions_are_compare_and_set(store: JobStore) -> None:
    store.insert_job(job(1))
    assert store.update_state(job(1).id, "running", expected=["queued"])
    assert not store.update_state(job(1).id, "running", expected=["queued"])  # repeated: no effect
    assert store.update_state(job(1).id, "failed", expected=["running"], error_code="timeout", error_message="slow")
    final = store.get_job(job(1).id)
    assert (final.state, final.error_code) == ("failed", "timeout")
    assert final.started_at is not None and final.finished_at is not None
    assert not store.update_state(job(1).id, "succeeded", expected=["running"])


def test_result_round_trip_in_one_transaction(store: JobStore) -> None:
    store.insert_job(job(2))
    outputs = [
        StoredOutput("t", "aggregate", 0, b"\x00arrow", None, '{"rows": 1}'),
        StoredOutput("v", "value", 1, None, "3", "{}"),
    ]
    assert not store.finish_with_result(job(2).id, outputs, {"printed": ""})  # not running yet
    store.update_state(job(2).id, "running", expected=["queued"])
    assert store.finish_with_result(job(2).id, outputs, {"printed": "hi"})
    result = store.get_result(job(2).id)
    assert result.outputs == outputs and result.report == {"printed": "hi"}
    assert store.get_job(job(2).id).state == "succeeded"


def test_list_pages_newest_first(store: JobStore) -> None:
    for i in range(5):
        store.insert_job(job(i, owner="bob" if i % 2 else "alice", created=1000.0 + i))
    first = store.list_jobs(limit=2)
    assert [j.id for j in first] == [job(4).id, job(3).id]
    rest = store.list_jobs(limit=10, after=first[-1].id)
    assert [j.id for j in rest] == [job(2).id, job(1).id, job(0).id]
    assert {j.owner for j in store.list_jobs(owner="bob", limit=10)} == {"bob"}
    assert next(j.id for j in store.jobs_in_states(["queued"])) == job(0).id


def test_unknown_job(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        store.get_job("f" * 32)
    with pytest.raises(JobNotFound):
        store.get_result("f" * 32)


def test_concurrent_writers_race_safely(store: JobStore) -> None:
    store.insert_job(job(7))
    wins = []

    def claim() -> None:
        wins.append(store.update_state(job(7).id, "running", expected=["queued"]))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    inserts = [threading.Thread(target=store.insert_job, args=(job(100 + i),)) for i in range(20)]
    for t in inserts:
        t.start()
    for t in inserts:
        t.join()
    assert len(store.list_jobs(limit=100)) == 21
