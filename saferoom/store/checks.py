"""Held results and output checkers' decisions in the state database (tables of migration 7).

A held result's outputs live in ``results``/``result_outputs`` like a released one's; ``held_results`` marks
it held (with what the checker sees besides it) and ``check_decisions`` keeps every signed decision. Holding
and deciding are each one transaction with the job's state change, so a crash leaves a job either running or
held, and a decision either recorded together with its effect on the job or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from saferoom.errors import CheckConflict, JobNotFound
from saferoom.store.database import Database
from saferoom.store.jobs import JobStore, StoredOutput, write_result

__all__ = ["CheckStore", "DecisionRow", "HeldRecord"]


@dataclass(frozen=True)
class DecisionRow:
    """One checker's recorded decision."""

    job_id: str
    checker: str
    decision: str
    reason: str
    result_hash: str
    decided_at: int
    signature: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class HeldRecord:
    """A result held for output checking, with the decisions so far."""

    job_id: str
    result_hash: str
    checkers_required: int
    checks: list[dict[str, Any]]  # one entry per output, in order: the checker's view and risk flags
    held_at: float
    decisions: list[DecisionRow]


# Decides, inside the decision's transaction, the job's next state from every decision so far and the number
# of approvals required: (new state, error_code, message) or None to stay held.
Outcome = Callable[[list[DecisionRow], int], tuple[str, str | None, str | None] | None]


class CheckStore:
    """Persistence of held results and decisions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def hold(
        self,
        job_id: str,
        outputs: list[StoredOutput],
        report: dict[str, Any],
        result_hash: str,
        checkers_required: int,
        checks: list[dict[str, Any]],
        now: float | None = None,
    ) -> bool:
        """Store the result, mark it held and move the job running -> awaiting_check, in one transaction."""
        with self._db.transaction() as conn:
            return self.hold_in(conn, job_id, outputs, report, result_hash, checkers_required, checks, now)

    @staticmethod
    def hold_in(
        conn: sqlite3.Connection,
        job_id: str,
        outputs: list[StoredOutput],
        report: dict[str, Any],
        result_hash: str,
        checkers_required: int,
        checks: list[dict[str, Any]],
        now: float | None = None,
        staged: bool = False,
    ) -> bool:
        """``hold`` inside the caller's transaction (``AuditLog.commit``); False if the job was not running.
        ``staged``: the result's rows are written already (``JobStore.stage_result``)."""
        now = time.time() if now is None else now
        if not JobStore.update_state_in(conn, job_id, "awaiting_check", ["running", "releasing"], None, None, now):
            return False
        if not staged:
            write_result(conn, job_id, outputs, report, now)
        conn.execute(
            "INSERT INTO held_results VALUES (?, ?, ?, ?, ?)",
            (job_id, result_hash, checkers_required, json.dumps(checks, sort_keys=True), now),
        )
        return True

    @staticmethod
    def _decisions(conn: sqlite3.Connection, job_id: str) -> list[DecisionRow]:
        rows = conn.execute(
            "SELECT job_id, checker, decision, reason, result_hash, decided_at, signature, certificate_pem "
            "FROM check_decisions WHERE job_id = ? ORDER BY id",
            (job_id,),
        ).fetchall()
        return [DecisionRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7])) for r in rows]

    @staticmethod
    def _held(conn: sqlite3.Connection, job_id: str) -> HeldRecord | None:
        row = conn.execute(
            "SELECT job_id, result_hash, checkers_required, checks_json, held_at FROM held_results WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        return HeldRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], CheckStore._decisions(conn, job_id))

    def get(self, job_id: str) -> HeldRecord:
        """The held record of ``job_id`` (held now or once); ``JobNotFound`` if it was never held."""
        with self._db.reading() as conn:
            held = self._held(conn, job_id)
        if held is None:
            raise JobNotFound(f"no held result for job {job_id[:64]!r}")
        return held

    def awaiting(self) -> list[str]:
        """Ids of the jobs whose results await a decision, oldest first."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT h.job_id FROM held_results h JOIN jobs j ON j.id = h.job_id "
                "WHERE j.state = 'awaiting_check' ORDER BY h.held_at, h.job_id"
            ).fetchall()
        return [r[0] for r in rows]

    def decide(self, row: DecisionRow, outcome: Outcome, now: float | None = None) -> tuple[str, list[DecisionRow]]:
        """Record ``row`` and apply its effect on the job in one transaction; returns the job's state after it
        and every decision so far. The job must be awaiting_check and the checker must not have decided."""
        with self._db.transaction() as conn:
            return self.decide_in(conn, row, outcome, now)

    def decide_in(
        self, conn: sqlite3.Connection, row: DecisionRow, outcome: Outcome, now: float | None = None
    ) -> tuple[str, list[DecisionRow]]:
        """``decide`` inside the caller's transaction (``AuditLog.commit``)."""
        now = time.time() if now is None else now
        state = conn.execute("SELECT state FROM jobs WHERE id = ?", (row.job_id,)).fetchone()
        held = self._held(conn, row.job_id)
        if state is None or held is None:
            raise JobNotFound(f"no held result for job {row.job_id[:64]!r}")
        if state[0] != "awaiting_check":
            raise CheckConflict(f"job {row.job_id} is {state[0]}, not awaiting a check")
        if any(d.checker == row.checker for d in held.decisions):
            raise CheckConflict(f"{row.checker} already decided on job {row.job_id}")
        conn.execute(
            "INSERT INTO check_decisions (job_id, checker, decision, reason, result_hash, decided_at, "
            "signature, certificate_pem) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.job_id,
                row.checker,
                row.decision,
                row.reason,
                row.result_hash,
                row.decided_at,
                row.signature,
                row.certificate_pem,
            ),
        )
        decisions = [*held.decisions, row]
        effect = outcome(decisions, held.checkers_required)
        if effect is None:
            return "awaiting_check", decisions
        new_state, code, message = effect
        if not JobStore.update_state_in(conn, row.job_id, new_state, ["awaiting_check"], code, message, now):
            raise CheckConflict(f"job {row.job_id} changed state while it was being decided")
        return new_state, decisions
