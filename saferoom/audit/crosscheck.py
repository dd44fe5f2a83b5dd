"""The start-up cross-check: does the state database hold exactly what the audit log recorded?

Run by the server before it serves (after the outbox is drained) and by ``saferoom state check`` offline. Each
check compares one kind of row with its records, both ways, so a row without its record (a change nobody can
audit) and a record without its row (a lost or deleted change: a deleted ``saferoom.db``, a lost WAL,
``DELETE FROM budget_charges``) are both found:

* every job has its ``job_queued`` record, and every ``job_queued`` record its job; a job's final state has
  its record (``job_finished``, ``job_failed``, ``job_cancelled``);
* every charge has its ``budget_charged`` record with the same amounts, and vice versa; each researcher's
  spend per dataset equals the sum of their charged records;
* every budget's totals are those of its last ``budget_set`` record;
* every review decision has its record (same count per package and kind);
* every stored result has its ``result_released`` record, whose hash is that of the stored outputs;
* every mock data publication has its ``mock_published`` record (same version, epsilon, dataset hash and
  measurements hash, the stored measurements still hashing to it), and vice versa; every publication budget the
  total of its last ``mock_budget_set`` record.

Amounts are compared in the ledger's integer units, so the comparison is exact.
"""

from __future__ import annotations

import collections
import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from saferoom.audit.log import LOG_FILE, PUBLIC_KEY_FILE, AuditFilter, AuditLog
from saferoom.audit.outbox import plan_reconcile, read_head, read_outbox
from saferoom.audit.record import AuditRecord, EventType
from saferoom.audit.segments import log_pieces, read_log
from saferoom.audit.verify import Checkpoint, iter_frames, load_public_key, verify_log
from saferoom.errors import SaferoomError
from saferoom.store.budgets import delta_units, epsilon_units
from saferoom.store.database import Database
from saferoom.store.jobs import StoredOutput, result_hash

__all__ = ["MAX_PROBLEMS", "check_server_state", "check_state_dir", "cross_check"]

MAX_PROBLEMS = 20
_FINAL_EVENT = {
    "succeeded": EventType.JOB_FINISHED,
    "failed": EventType.JOB_FAILED,
    "cancelled": EventType.JOB_CANCELLED,
    # Output checking (saferoom.jobs.checking): held, then released or refused, each ended by job_finished.
    "awaiting_check": EventType.JOB_FINISHED,
    "rejected": EventType.JOB_FINISHED,
    "changes_requested": EventType.JOB_FINISHED,
}
_DECISION_EVENT = {
    "approved": EventType.PACKAGE_APPROVED,
    "rejected": EventType.PACKAGE_REJECTED,
    "revoked": EventType.PACKAGE_REVOKED,
}


def _units(summary: dict[str, object]) -> tuple[int, int]:
    epsilon, delta = summary.get("epsilon", 0), summary.get("delta", 0)
    if not isinstance(epsilon, int | float) or not isinstance(delta, int | float):
        return (-1, -1)
    return epsilon_units(float(epsilon), round_up=True), delta_units(float(delta), round_up=True)


def cross_check(conn: sqlite3.Connection, records: Iterable[AuditRecord]) -> list[str]:
    """What is wrong (empty: the database and the log agree). ``records``: the log, then any outbox rows."""
    by_event: dict[str, list[AuditRecord]] = collections.defaultdict(list)
    for record in records:
        by_event[record.event].append(record)
    problems: list[str] = []
    _jobs(conn, by_event, problems)
    _charges(conn, by_event, problems)
    _budgets(conn, by_event, problems)
    _decisions(conn, by_event, problems)
    _checks(conn, by_event, problems)
    _results(conn, by_event, problems)
    _mock(conn, by_event, problems)
    if len(problems) > MAX_PROBLEMS:
        problems = [*problems[:MAX_PROBLEMS], f"... and {len(problems) - MAX_PROBLEMS} more"]
    return problems


def _job_of(record: AuditRecord) -> str:
    return str(record.objects.get("job", ""))


def _jobs(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    rows = conn.execute("SELECT id, state, package_hash, params_json, datasets_json FROM jobs").fetchall()
    jobs = {r["id"]: r["state"] for r in rows}
    queued = {_job_of(r): r for r in by_event[EventType.JOB_QUEUED]}
    ended = {event: {_job_of(r) for r in by_event[event]} for event in _FINAL_EVENT.values()}
    for row in rows:  # what runs is what was recorded: package, parameters, datasets
        record = queued.get(row["id"])
        if record is not None and not _same_run(row, record):
            problems.append(
                f"job {row['id']} runs another package, parameters or datasets than its job_queued record "
                f"{record.seq} says"
            )
    for job_id, state in sorted(jobs.items()):
        if job_id not in queued:
            problems.append(f"job {job_id} ({state}) is in the database but has no job_queued record in the log")
        event = _FINAL_EVENT.get(state)
        if event is not None and job_id not in ended[event]:
            problems.append(f"job {job_id} is {state} in the database but the log has no {event.value} record of it")
    for job_id, record in sorted(queued.items()):
        if job_id not in jobs:
            problems.append(
                f"record {record.seq} (job_queued) names job {job_id}, which is not in the database (lost or deleted)"
            )


def _same_run(row: sqlite3.Row, record: AuditRecord) -> bool:
    try:
        params, datasets = json.loads(row["params_json"]), json.loads(row["datasets_json"])
    except ValueError:
        return False
    return bool(
        row["package_hash"] == record.objects.get("package")
        and params == record.summary.get("params")
        and datasets == record.objects.get("datasets")
    )


def _charges(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    rows = collections.Counter(
        (r["job_id"], r["dataset"], r["researcher"], int(r["epsilon"]), int(r["delta"]))
        for r in conn.execute("SELECT job_id, dataset, researcher, epsilon, delta FROM budget_charges")
    )
    logged: collections.Counter[tuple[str, str, str, int, int]] = collections.Counter()
    for record in by_event[EventType.BUDGET_CHARGED]:
        epsilon, delta = _units(record.summary)
        o = record.objects
        logged[(str(o.get("job", "")), str(o.get("dataset", "")), str(o.get("identity", "")), epsilon, delta)] += 1
    for key in sorted((rows - logged).elements()):
        problems.append(
            f"the charge of job {key[0]} on {key[1]} to {key[2]} is in budget_charges but has no matching "
            "budget_charged record"
        )
    for key in sorted((logged - rows).elements()):
        problems.append(
            f"the budget_charged record of job {key[0]} on {key[1]} to {key[2]} has no row in budget_charges "
            "(charges deleted or changed: the spend shown would be too low)"
        )
    spent: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    for (_, dataset, researcher, epsilon, delta), n in rows.items():
        spent[(researcher, dataset)][0] += epsilon * n
        spent[(researcher, dataset)][1] += delta * n
    for (_, dataset, researcher, epsilon, delta), n in logged.items():
        spent[(researcher, dataset)][2] += epsilon * n
        spent[(researcher, dataset)][3] += delta * n
    for (researcher, dataset), (e_db, d_db, e_log, d_log) in sorted(spent.items()):
        if (e_db, d_db) != (e_log, d_log):
            problems.append(
                f"{researcher} has spent epsilon {e_db / 1e6:g} on {dataset} by the database but "
                f"{e_log / 1e6:g} by the log's budget_charged records"
            )


def _budgets(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    last: dict[tuple[str, str], AuditRecord] = {}
    for record in by_event[EventType.BUDGET_SET]:
        last[(str(record.objects.get("identity", "")), str(record.objects.get("dataset", "")))] = record
    rows = {
        (r["researcher"], r["dataset"]): (int(r["epsilon_total"]), int(r["delta_total"]))
        for r in conn.execute("SELECT researcher, dataset, epsilon_total, delta_total FROM budgets")
    }
    for key, totals in sorted(rows.items()):
        found = last.get(key)
        if found is None:
            problems.append(f"the budget of {key[0]} on {key[1]} has no budget_set record in the log")
            continue
        record = found
        epsilon, delta = record.summary.get("epsilon_total"), record.summary.get("delta_total")
        if not isinstance(epsilon, int | float) or not isinstance(delta, int | float):
            problems.append(f"record {record.seq} (budget_set) has no totals")
            continue
        logged = (epsilon_units(float(epsilon), round_up=False), delta_units(float(delta), round_up=False))
        if logged != totals:
            problems.append(
                f"the budget of {key[0]} on {key[1]} is epsilon {totals[0] / 1e6:g} in the database but "
                f"{logged[0] / 1e6:g} by its last budget_set record ({record.seq})"
            )
    for key, record in sorted(last.items()):
        if key not in rows:
            problems.append(
                f"record {record.seq} (budget_set) sets a budget of {key[0]} on {key[1]} not in the database"
            )


def _decisions(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    rows = collections.Counter(
        (r["package_hash"], r["kind"], r["actor"])
        for r in conn.execute("SELECT package_hash, kind, actor FROM package_decisions")
    )
    logged: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for kind, event in _DECISION_EVENT.items():
        for record in by_event[event]:
            logged[(str(record.objects.get("package", "")), kind, record.actor)] += 1
    for package, kind, actor in sorted(set(rows) | set(logged)):
        key = (package, kind, actor)
        if rows[key] != logged[key]:
            problems.append(
                f"package {package[:16]}... has {rows[key]} '{kind}' decisions by {actor} in the database but "
                f"{logged[key]} package_{kind} records by {actor} in the log"
            )
    packages = {r[0] for r in conn.execute("SELECT hash FROM packages")}
    submitted = {str(r.objects.get("package", "")) for r in by_event[EventType.PACKAGE_SUBMITTED]}
    for package in sorted(packages - submitted):
        problems.append(f"package {package[:16]}... is in the database but has no package_submitted record")
    for record in by_event[EventType.PACKAGE_SUBMITTED]:
        package = str(record.objects.get("package", ""))
        if package not in packages:
            problems.append(
                f"record {record.seq} (package_submitted) names package {package[:16]}..., not in the database"
            )
            packages.add(package)


def _checks(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    """Every held result has its ``result_held`` record (same hash), every checker's decision its
    ``result_checked`` record (same checker, decision, hash), and the other way round."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'held_results'").fetchone() is None:
        return  # a database from before output checking: nothing can be held
    held = {r["job_id"]: r["result_hash"] for r in conn.execute("SELECT job_id, result_hash FROM held_results")}
    logged = {_job_of(r): r for r in by_event[EventType.RESULT_HELD]}
    for job_id in sorted(set(held) | set(logged)):
        record = logged.get(job_id)
        if job_id not in held:
            problems.append(f"record {record.seq if record else '?'} (result_held) names job {job_id}, not held")
        elif record is None:
            problems.append(f"job {job_id} holds a result for checking but the log has no result_held record of it")
        elif record.summary.get("result_hash") != held[job_id]:
            problems.append(f"the held result of job {job_id} does not match its result_held record {record.seq}")
    rows = collections.Counter(
        (r["job_id"], r["checker"], r["decision"], r["result_hash"])
        for r in conn.execute("SELECT job_id, checker, decision, result_hash FROM check_decisions")
    )
    records: collections.Counter[tuple[str, str, str, str]] = collections.Counter(
        (_job_of(r), r.actor, str(r.summary.get("decision", "")), str(r.summary.get("result_hash", "")))
        for r in by_event[EventType.RESULT_CHECKED]
    )
    for key in sorted(set(rows) | set(records)):
        if rows[key] != records[key]:
            job_id, checker, decision, _ = key
            problems.append(
                f"job {job_id} has {rows[key]} '{decision}' decisions by {checker} in the database but "
                f"{records[key]} result_checked records of them in the log"
            )


def _results(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    released = {_job_of(r): r for r in by_event[EventType.RESULT_RELEASED]}
    for held in by_event[EventType.RESULT_HELD]:  # a held result is stored too, pinned by its result_held
        released.setdefault(_job_of(held), held)
    stored: set[str] = set()
    # A running job's rows are staged ahead of its end (``JobStore.stage_result``): recorded when it publishes.
    staged = {r[0] for r in conn.execute("SELECT id FROM jobs WHERE state IN ('running', 'releasing')")}
    for row in conn.execute("SELECT job_id, report_json FROM results ORDER BY job_id").fetchall():
        job_id = row["job_id"]
        if job_id in staged:
            continue
        stored.add(job_id)
        outputs = [
            StoredOutput(o[0], o[1], o[2], None if o[3] is None else bytes(o[3]), o[4], o[5])
            for o in conn.execute(
                "SELECT name, kind, position, arrow_ipc, value_json, report_json FROM result_outputs"
                " WHERE job_id = ? ORDER BY position",
                (job_id,),
            )
        ]
        record = released.get(job_id)
        if record is None:
            problems.append(f"the result of job {job_id} is stored but has no result_released record in the log")
            continue
        actual = result_hash(outputs)
        try:
            reported = json.loads(row["report_json"]).get("result_hash")
        except (ValueError, AttributeError):
            reported = None
        if actual != record.summary.get("result_hash") or reported != actual:
            problems.append(
                f"the stored result of job {job_id} does not match its {record.event} record {record.seq} "
                "(its bytes were changed): it would not be served"
            )
    for job_id, record in sorted(released.items()):
        if job_id not in stored:
            problems.append(f"record {record.seq} (result_released) names job {job_id}, whose result is not stored")


def _mock(conn: sqlite3.Connection, by_event: dict[str, list[AuditRecord]], problems: list[str]) -> None:
    """Publications of mock data and their budgets against ``mock_published`` and ``mock_budget_set``."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'mock_publications'").fetchone() is None:
        return  # a database from before mock publications
    rows = {}
    for r in conn.execute(
        "SELECT dataset, version, epsilon, dataset_hash, measurements_hash, measurements FROM mock_publications"
    ):
        key = (str(r["dataset"]), int(r["version"]))
        rows[key] = (int(r["epsilon"]), r["dataset_hash"], r["measurements_hash"])
        if hashlib.sha256(bytes(r["measurements"])).hexdigest() != r["measurements_hash"]:
            problems.append(f"the stored measurements of mock {key[0]} version {key[1]} were changed")
    logged = {}
    for record in by_event[EventType.MOCK_PUBLISHED]:
        version = record.summary.get("version")
        key = (str(record.objects.get("dataset", "")), int(version) if isinstance(version, int) else -1)
        epsilon, _ = _units(record.summary)
        logged[key] = (epsilon, record.summary.get("dataset_hash"), record.summary.get("measurements_hash"))
    for key in sorted(set(rows) | set(logged)):
        if key not in logged:
            problems.append(
                f"mock {key[0]} version {key[1]} is published in the database but has no mock_published record"
            )
        elif key not in rows:
            problems.append(
                f"the mock_published record of {key[0]} version {key[1]} has no publication in the database "
                "(deleted: its epsilon would no longer count against the publication budget)"
            )
        elif rows[key] != logged[key]:
            problems.append(f"mock {key[0]} version {key[1]} differs from its mock_published record")
    last = {str(r.objects.get("dataset", "")): r for r in by_event[EventType.MOCK_BUDGET_SET]}
    budgets = {str(r[0]): int(r[1]) for r in conn.execute("SELECT dataset, epsilon_total FROM mock_budgets")}
    for dataset in sorted(set(budgets) | set(last)):
        budget_record = last.get(dataset)
        total = budget_record.summary.get("epsilon_total") if budget_record is not None else None
        if budget_record is None or dataset not in budgets or not isinstance(total, int | float):
            problems.append(f"the mock publication budget of {dataset} and its mock_budget_set records disagree")
        elif epsilon_units(float(total), round_up=False) != budgets[dataset]:
            problems.append(
                f"the mock publication budget of {dataset} is epsilon {budgets[dataset] / 1e6:g} in the database "
                f"but {total:g} by its last mock_budget_set record ({budget_record.seq})"
            )


def check_server_state(db: Database, log: AuditLog) -> list[str]:
    """The cross-check of a running server's database against its (reconciled) log."""
    records = list(log.read(AuditFilter()))
    with db.reading() as conn:
        return cross_check(conn, records)


def check_state_dir(state_dir: Path) -> list[str]:
    """``saferoom state check``: everything start-up checks, offline, changing neither the log nor the key.

    (Opening the database applies any migration it lacks, as the server would.)
    """
    db_path, log_dir = state_dir / "saferoom.db", state_dir / "audit"
    log_path = log_dir / LOG_FILE
    data, segments_problem = read_log(log_pieces(log_dir))
    if segments_problem:
        return [f"the audit log in {log_dir} is damaged: {segments_problem}"]
    if not db_path.exists():
        return [f"{db_path} is missing"] + (
            [f"the audit log {log_path} holds records: the database was deleted (restore it from a backup)"]
            if data
            else []
        )
    try:
        db = Database.open(db_path)
    except SaferoomError as exc:
        return [exc.message]
    try:
        with db.reading() as conn:
            row = conn.execute(
                "SELECT covers, head, signature FROM audit_checkpoints ORDER BY covers DESC LIMIT 1"
            ).fetchone()
            head, outbox = read_head(conn), read_outbox(conn)
        key_path = log_dir / PUBLIC_KEY_FILE
        if not key_path.exists():
            return [f"{key_path} is missing: the log cannot be verified"] if data else []
        public_key = load_public_key(key_path.read_bytes())
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        stored = None if row is None else Checkpoint(row[0], row[1], bytes(row[2]), raw)
        report = verify_log(data, public_key, anchors=(stored,) if stored else ())
        if not report.ok:
            return [f"the audit log {log_path} failed verification at record {report.first_bad_seq}: {report.reason}"]
        records = [frame.record for frame in iter_frames(data)]
        done, problem = plan_reconcile(records, head, outbox, False, db_path, log_path)
        if problem:
            return [problem]
        waiting = [AuditRecord(0, "", r.event, r.actor, r.role, *r.entry()[3:]) for r in outbox[done:]]
        with db.reading() as conn:
            return cross_check(conn, records + waiting)
    finally:
        db.close()
