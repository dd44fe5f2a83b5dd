"""Jobs and their results in the state database. State names are opaque here (see saferoom.jobs.state)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import astuple, dataclass, fields, replace
from typing import Any

from saferoom.errors import JobNotFound
from saferoom.store.budgets import Budget, Charge, Cost, charge_budgets
from saferoom.store.database import Database

__all__ = ["JobRecord", "JobStore", "StoredOutput", "StoredResult", "result_hash"]

# States that end the job's work (they set finished_at); awaiting_check ends the computing, a person decides next.
_FINAL = ("succeeded", "failed", "cancelled", "awaiting_check", "rejected", "changes_requested")


@dataclass(frozen=True)
class JobRecord:
    """One row of the jobs table."""

    id: str
    owner: str
    package_hash: str
    package_name: str
    package_version: str
    params_json: str
    datasets_json: str
    state: str
    error_code: str | None
    error_message: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    request_id: str | None = None  # the client's idempotency key, unique per owner
    # (dataset, version) the job read, once it started (job_dataset_versions; filled by get_job)
    dataset_versions: tuple[tuple[str, str], ...] = ()

    def audit_objects(self) -> dict[str, Any]:
        """What the job's audit records name: the job, its package and the datasets it reads."""
        return {
            "job": self.id,
            "package": self.package_hash,
            "name": self.package_name,
            "version": self.package_version,
            "datasets": json.loads(self.datasets_json),
        }


@dataclass(frozen=True)
class StoredOutput:
    """One released output: an Arrow IPC stream or a JSON value, and its release report."""

    name: str
    kind: str
    position: int
    arrow_ipc: bytes | None
    value_json: str | None
    report_json: str


@dataclass(frozen=True)
class StoredResult:
    job_id: str
    report: dict[str, Any]
    outputs: list[StoredOutput]


def result_digest(outputs: Iterable[tuple[str, str, bytes, str]]) -> str:
    """SHA-256 of everything a result releases, in order: (name, kind, Arrow IPC or JSON value, report JSON).
    What the audit log pins a release to, what an output checker's decision is bound to, and what a client
    recomputes from the outputs it was shown: one definition for all of them."""
    digest = hashlib.sha256(b"saferoom-result-v1\n")
    for name, kind, payload, report_json in outputs:
        for part in (name.encode(), kind.encode(), payload, report_json.encode()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def result_hash(outputs: list[StoredOutput]) -> str:
    """``result_digest`` of stored outputs."""
    return result_digest(
        (o.name, o.kind, o.arrow_ipc if o.arrow_ipc is not None else (o.value_json or "").encode(), o.report_json)
        for o in outputs
    )


_STORED = [f.name for f in fields(JobRecord) if f.name != "dataset_versions"]  # the jobs table's columns
_JOB_COLUMNS = ", ".join(_STORED)


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(**{k: row[k] for k in row.keys()})  # noqa: SIM118 - sqlite3.Row is not a Mapping


def write_result(
    conn: sqlite3.Connection, job_id: str, outputs: list[StoredOutput], report: dict[str, Any], now: float
) -> None:
    """Insert a job's result rows (inside the caller's transaction)."""
    conn.execute("INSERT INTO results VALUES (?, ?, ?)", (job_id, json.dumps(report), now))
    conn.executemany(
        "INSERT INTO result_outputs VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(job_id, o.name, o.kind, o.position, o.arrow_ipc, o.value_json, o.report_json) for o in outputs],
    )


class JobStore:
    """Persistence of the job lifecycle, with compare-and-set transitions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def insert_job(self, job: JobRecord) -> JobRecord:
        """Insert ``job``; if its owner already used its ``request_id``, return that earlier job instead."""
        return self.insert_charged_job(job, ())[0]

    def insert_charged_job(
        self, job: JobRecord, costs: Sequence[Cost]
    ) -> tuple[JobRecord, list[tuple[Charge, Budget]]]:
        """Insert ``job`` and charge ``costs`` to its owner's privacy budgets in one transaction: both happen or,
        when a budget cannot pay (``BudgetExhausted``), neither. If the owner already used the job's
        ``request_id``, that earlier job is returned instead and nothing is charged (it was, the first time)."""
        with self._db.transaction() as conn:
            return self.insert_charged_job_in(conn, job, costs)

    @staticmethod
    def insert_charged_job_in(
        conn: sqlite3.Connection, job: JobRecord, costs: Sequence[Cost]
    ) -> tuple[JobRecord, list[tuple[Charge, Budget]]]:
        """``insert_charged_job`` inside the caller's transaction."""
        placeholders = ", ".join("?" for _ in _STORED)
        if job.request_id is not None:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND request_id = ?", (job.owner, job.request_id)
            ).fetchone()
            if row is not None:
                return _job(row), []
        conn.execute(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({placeholders})", astuple(job)[: len(_STORED)])
        charges = charge_budgets(conn, job.owner, job.id, costs, job.created_at) if costs else []
        return job, charges

    @staticmethod
    def get_job_in(conn: sqlite3.Connection, job_id: str) -> JobRecord:
        row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id[:64]!r}")
        versions = conn.execute(
            "SELECT dataset, version FROM job_dataset_versions WHERE job_id = ? ORDER BY dataset", (job_id,)
        ).fetchall()
        return replace(_job(row), dataset_versions=tuple((str(d), str(v)) for d, v in versions))

    def record_versions(self, job_id: str, versions: dict[str, str]) -> None:
        """The dataset versions a job runs on (a resumed job records those of its new run).

        Not waited to disk: the job's end is committed durably after this, in the same write-ahead log, which makes
        this durable too; a power cut before then loses only the versions of a job that released nothing."""
        with self._db.transaction(durable=False) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO job_dataset_versions (job_id, dataset, version) VALUES (?, ?, ?)",
                [(job_id, d, v) for d, v in sorted(versions.items())],
            )

    def versions_read(self, states: Collection[str]) -> dict[tuple[str, str], list[str]]:
        """Each (dataset, version) that jobs in ``states`` recorded, with those jobs' ids (what a collection of old
        dataset versions must keep)."""
        marks = ", ".join("?" for _ in states)
        with self._db.reading() as conn:
            rows = conn.execute(
                f"""SELECT v.dataset, v.version, v.job_id FROM job_dataset_versions v JOIN jobs j ON j.id = v.job_id
                WHERE j.state IN ({marks}) ORDER BY v.job_id""",
                tuple(states),
            ).fetchall()
        read: dict[tuple[str, str], list[str]] = {}
        for dataset, version, job_id in rows:
            read.setdefault((str(dataset), str(version)), []).append(str(job_id))
        return read

    def get_job(self, job_id: str) -> JobRecord:
        with self._db.reading() as conn:
            return self.get_job_in(conn, job_id)

    def list_jobs(
        self,
        owner: str | None = None,
        limit: int = 20,
        after: str | None = None,
        states: Collection[str] = (),
        package: str | None = None,
        since: float | None = None,
    ) -> list[JobRecord]:
        """Newest first; ``after`` is the id of the last job of the previous page. Filters: ``states``;
        ``package``, a hash, hash prefix (lowercase hex, at least 6) or package name; created at or after
        ``since``."""
        where: list[str] = []
        args: list[object] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args += list(states)
        if package:
            hexadecimal = len(package) >= 6 and all(c in "0123456789abcdef" for c in package)
            if hexadecimal:
                where.append("((package_hash >= ? AND package_hash < ?) OR package_name = ?)")
                args += [package, package + "g", package]
            else:
                where.append("package_name = ?")
                args.append(package)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if after is not None:
            cursor = self.get_job(after)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [cursor.created_at, cursor.created_at, cursor.id]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [_job(r) for r in rows]

    def find_ids(self, prefix: str, owner: str | None = None, limit: int = 11) -> list[str]:
        """Ids of jobs (of ``owner``, if given) that start with ``prefix`` (lowercase hex), at most ``limit``."""
        if not all(c in "0123456789abcdef" for c in prefix):
            return []
        where, args = "id >= ? AND id < ?", [prefix, prefix + "g"]  # a range on the primary key: no LIKE
        if owner is not None:
            where += " AND owner = ?"
            args.append(owner)
        with self._db.reading() as conn:
            rows = conn.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [r[0] for r in rows]

    def jobs_in_states(self, states: Collection[str]) -> list[JobRecord]:
        marks = ", ".join("?" for _ in states)
        with self._db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at", tuple(states)
            ).fetchall()
        return [_job(r) for r in rows]

    def update_state(
        self,
        job_id: str,
        new_state: str,
        *,
        expected: Collection[str],
        error_code: str | None = None,
        error_message: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Move the job to ``new_state`` only if it is in one of ``expected``; True if it moved."""
        with self._db.transaction() as conn:
            return self.update_state_in(conn, job_id, new_state, expected, error_code, error_message, now)

    @staticmethod
    def update_state_in(
        conn: sqlite3.Connection,
        job_id: str,
        new_state: str,
        expected: Collection[str],
        error_code: str | None,
        error_message: str | None,
        now: float | None,
    ) -> bool:
        now = time.time() if now is None else now
        marks = ", ".join("?" for _ in expected)
        started = now if new_state == "running" else None
        finished = now if new_state in _FINAL else None
        cursor = conn.execute(
            f"""UPDATE jobs SET state = ?, error_code = ?, error_message = ?, updated_at = ?,
                   started_at = COALESCE(started_at, ?), finished_at = COALESCE(finished_at, ?)
                WHERE id = ? AND state IN ({marks})""",
            (new_state, error_code, error_message, now, started, finished, job_id, *expected),
        )
        return cursor.rowcount == 1

    def move_unrecorded(self, job_id: str, new_state: str, expected: Collection[str]) -> bool:
        """Compare-and-set a state that has no audit record and acknowledges nothing (a phase of a running job),
        without waiting for the disk: a crash of the process loses nothing, a power cut may lose it, and then the
        job is recovered as from the state before (the same way). False if the job was not in ``expected``."""
        with self._db.transaction(durable=False) as conn:
            return self.update_state_in(conn, job_id, new_state, expected, None, None, None)

    def finish_with_result(
        self, job_id: str, outputs: list[StoredOutput], report: dict[str, Any], now: float | None = None
    ) -> bool:
        """Store the result and mark the job succeeded, in one transaction (only from running)."""
        with self._db.transaction() as conn:
            return self.finish_with_result_in(conn, job_id, outputs, report, now)

    @classmethod
    def finish_with_result_in(
        cls,
        conn: sqlite3.Connection,
        job_id: str,
        outputs: list[StoredOutput],
        report: dict[str, Any],
        now: float | None = None,
        staged: bool = False,
    ) -> bool:
        """``finish_with_result`` inside the caller's transaction; ``staged``: its rows are written already
        (``stage_result``), only the state changes."""
        now = time.time() if now is None else now
        if not cls.update_state_in(conn, job_id, "succeeded", ["running", "releasing"], None, None, now):
            return False
        if not staged:
            write_result(conn, job_id, outputs, report, now)
        return True

    def stage_result(self, job_id: str, outputs: list[StoredOutput], report: dict[str, Any]) -> bool:
        """Write a running job's result rows ahead of its end, durably, while it stays running or releasing: the
        end, published at its boundary, then only changes its state, in a time that does not follow the result's
        size (README "Timing"). Nobody reads them before (results are served by state). False, writing nothing,
        if the job is not running any more; a job that ends otherwise drops them (``discard_staged_in``)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in ("running", "releasing"):
                return False
            if conn.execute("SELECT 1 FROM results WHERE job_id = ?", (job_id,)).fetchone() is None:  # a retry
                write_result(conn, job_id, outputs, report, time.time())
            return True

    @staticmethod
    def discard_staged_in(conn: sqlite3.Connection, job_id: str) -> None:
        """Drop the result rows a job staged (``stage_result``) when it ends without them: failed, cancelled."""
        conn.execute("DELETE FROM result_outputs WHERE job_id = ?", (job_id,))
        conn.execute("DELETE FROM results WHERE job_id = ?", (job_id,))

    def get_result(self, job_id: str) -> StoredResult:
        with self._db.reading() as conn:
            row = conn.execute("SELECT report_json FROM results WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(f"no result for job {job_id[:64]!r}")
            outputs = conn.execute(
                "SELECT name, kind, position, arrow_ipc, value_json, report_json FROM result_outputs "
                "WHERE job_id = ? ORDER BY position",
                (job_id,),
            ).fetchall()
        return StoredResult(
            job_id,
            json.loads(row["report_json"]),
            [StoredOutput(o[0], o[1], o[2], None if o[3] is None else bytes(o[3]), o[4], o[5]) for o in outputs],
        )
