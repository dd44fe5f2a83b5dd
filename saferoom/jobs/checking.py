"""Output checking: exact results held until output checkers sign their release.

Exact statistical disclosure control (thresholds, dominance, subsets) assists a person; it is no guarantee,
since a programmable interface can outwit any fixed rule given enough tries. So a job whose released outputs
read a dataset with ``output_checking = "required"`` ends AWAITING_CHECK (``saferoom.jobs.state``) with its
result stored but out of the researcher's reach. Output checkers (a role) see it in full, with the code that
made it, the automatic report and risk flags, and sign a decision bound to the result's hash
(``saferoom.checks``): approvals from ``output_checkers`` distinct checkers release it (SUCCEEDED, fetched as
any result), one rejection or request for changes ends it with the checker's reason for the researcher.

Whether a job is held depends only on public facts (the datasets each output's plan reads and their
policies), never on the data: holding or not tells nobody anything. A checker may not check (or see) a job they
ran or a package they submitted. Every step is an audit record: ``result_held``, ``result_checked`` (with the
signed payload, the signature and the certificate, re-verified offline), then ``result_released`` or the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from saferoom.audit import AuditLog, EventType
from saferoom.audit.log import Entry
from saferoom.catalog.manifest import DatasetInfo
from saferoom.checks import (
    DECISION_WINDOW_SECONDS,
    Decision,
    SignedDecision,
    checked_reason,
    verify_decision,
)
from saferoom.errors import (
    AuthenticationFailed,
    CheckConflict,
    InvalidRequest,
    JobNotFound,
    PermissionDenied,
    StateDamaged,
)
from saferoom.identity import Identity, Role, TrustStore
from saferoom.jobs.pipeline import JobOutcome, ReleasedOutput
from saferoom.jobs.state import JobState
from saferoom.packages import Package, PackageService
from saferoom.store import CheckStore, DecisionRow, HeldRecord, JobRecord, JobStore, StoredOutput, StoredResult
from saferoom.store.jobs import result_hash

_log = logging.getLogger(__name__)

__all__ = ["CheckService", "HeldView", "next_state", "risk_flags"]

WIDE_OUTPUT_COLUMNS = 10  # more columns than this in one output: masked aggregates may single people out


@dataclass(frozen=True)
class HeldView:
    """Everything a checker judges a held result by."""

    job: JobRecord
    held: HeldRecord
    result: StoredResult
    package: Package
    submitters: tuple[str, ...]


def risk_flags(outputs: list[ReleasedOutput]) -> list[list[str]]:
    """Cheap flags per output from what the release reported (no disclosure internals): what a checker should
    look at first. The release rules' own flags, if any, come in each output's ``check``."""
    flags: list[list[str]] = []
    for o in outputs:
        mine: list[str] = []
        full = o.check.get("report")  # the checker's counts (the researcher's report has none)
        suppressed = int((full if isinstance(full, dict) else o.report).get("suppressed_cells", 0) or 0)
        if suppressed:
            mine.append(f"{suppressed} cells suppressed: check differences against other outputs and margins")
        if o.table is not None and o.table.num_columns > WIDE_OUTPUT_COLUMNS:
            mine.append(f"{o.table.num_columns} columns: masked aggregates can single out one person per column")
        if o.kind == "aggregate" and o.table is not None and o.table.num_rows == 1:
            mine.append("one cell: compare with the job's other outputs (differencing, trackers)")
        if o.kind == "model":
            mine.append("model coefficients: check the residual degrees of freedom and singled-out regressors")
        others = [p.name for p in outputs if p is not o and p.kind != "value" and set(p.datasets) & set(o.datasets)]
        if o.kind != "value" and others:
            mine.append(f"reads the same data as {', '.join(others[:8])}: check their differences")
        for f in o.check.get("flags", []):  # the release rules' own flags (``disclosure.release``)
            if isinstance(f, dict) and "flag" in f:
                details = json.dumps({k: v for k, v in f.items() if k != "flag"}, sort_keys=True, default=str)
                mine.append(f"{f['flag']}: {details}"[:2000])
            elif isinstance(f, str):
                mine.append(f)
        flags.append(mine)
    return flags


class CheckService:
    """Holds exact results for output checkers and records their signed decisions."""

    def __init__(
        self,
        store: CheckStore,
        jobs: JobStore,
        packages: PackageService,
        datasets: Mapping[str, DatasetInfo],
        audit: AuditLog,
        trust: TrustStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._packages = packages
        self._datasets = datasets
        self._audit = audit
        self._trust = trust
        self._clock = clock

    # ----------------------------------------------------------------- holding (called by the job service)

    def checkers_required(self, job: JobRecord, outcome: JobOutcome) -> int:
        """How many checkers must approve this result before it leaves: 0 when it needs no checking."""
        chosen = set(json.loads(job.datasets_json))
        checked = {d for d in chosen if d in self._datasets and self._datasets[d].policy.checking_required}
        touched: set[str] = set()
        for o in outcome.outputs:
            if o.kind != "value":  # a value is a constant the algorithm returned: it read nothing
                touched |= (set(o.datasets) or chosen) & checked
        return max((self._datasets[d].policy.output_checkers for d in touched), default=0)

    def hold(
        self,
        job: JobRecord,
        outcome: JobOutcome,
        outputs: list[StoredOutput],
        report: dict[str, Any],
        required: int,
        released_summary: dict[str, Any],
        staged: bool = False,
    ) -> bool:
        """Store the result held (job -> AWAITING_CHECK) and record it; False if the job was no longer running.
        ``staged``: its rows are stored already (``JobStore.stage_result``)."""
        flags = risk_flags(outcome.outputs)
        checks = [{"output": o.name, "check": o.check, "flags": f} for o, f in zip(outcome.outputs, flags, strict=True)]
        # What was held, never how many rows: a count of exact data nobody has been cleared to receive yet.
        summary = {
            "result_hash": released_summary["result_hash"],
            "outputs": [{"name": o["name"], "kind": o["kind"]} for o in released_summary["outputs"]],
            "budget_charged": released_summary["budget_charged"],
            "checkers_required": required,
        }
        finished = {"owner": job.owner, "outputs": len(outputs), "state": JobState.AWAITING_CHECK.value}
        held, _ = self._audit.commit(  # one transaction with its records, in the log before anyone sees it held
            lambda conn: self._store.hold_in(
                conn, job.id, outputs, report, report["result_hash"], required, checks, staged=staged
            ),
            lambda held: (
                [
                    (EventType.RESULT_HELD, "saferoom", "server", job.audit_objects(), summary),
                    (EventType.JOB_FINISHED, "saferoom", "server", job.audit_objects(), finished),
                ]
                if held
                else []
            ),
        )
        return held

    # ----------------------------------------------------------------- checkers

    def _conflict(self, job: JobRecord, caller: Identity) -> tuple[Package, tuple[str, ...]]:
        """The job's package and submitters; refuses a checker who ran the job or submitted the package."""
        view = self._packages.review(job.package_hash).view
        if job.owner == caller.name:
            raise PermissionDenied(f"{caller.name} ran job {job.id} and may not check it")
        if caller.name in view.record.submitters:
            raise PermissionDenied(f"{caller.name} submitted the package of job {job.id} and may not check it")
        return view.package, view.record.submitters

    def list_held(self, caller: Identity) -> list[HeldView]:
        """Held results awaiting a decision that ``caller`` may check, oldest first."""
        out = []
        for job_id in self._store.awaiting():
            job = self._jobs.get_job(job_id)
            try:
                package, submitters = self._conflict(job, caller)
            except PermissionDenied:
                continue
            # A summary: the outputs stay in the store until the checker opens this one.
            out.append(HeldView(job, self._store.get(job_id), StoredResult(job_id, {}, []), package, submitters))
        return out

    def get_held(self, job_id: str, caller: Identity) -> HeldView:
        """A held result in full, for a checker who may check it: NOT_FOUND for an unknown job,
        FAILED_PRECONDITION for one that never held a result, PERMISSION_DENIED for one the checker ran or whose
        package they submitted."""
        job = self._jobs.get_job(job_id)
        try:
            held = self._store.get(job_id)
        except JobNotFound:
            raise CheckConflict(f"job {job_id} is {job.state}: it holds no result for checking") from None
        package, submitters = self._conflict(job, caller)
        result = self._jobs.get_result(job_id)
        actual = result_hash(result.outputs)
        if self._audit.held_hash(job_id) != actual or held.result_hash != actual:
            # What the checker would review is not what the log recorded as held: never shown, never signed.
            _log.error("job %s: the held result (hash %s) does not match its result_held record: NOT shown", job_id,
                       actual)  # fmt: skip
            raise StateDamaged(
                f"the held result of job {job_id} does not match what the audit log recorded; it is not shown"
            )
        return HeldView(job, held, result, package, submitters)

    def decide(
        self,
        job_id: str,
        caller: Identity,
        decision: Decision,
        reason: str,
        decided_at: int,
        signature: bytes,
        result_hash: str,
    ) -> tuple[JobRecord, HeldRecord]:
        """Verify and record ``caller``'s signed decision on the result they reviewed (``result_hash``, which
        must be the held one); returns the job and held record after it."""
        if not caller.has(Role.OUTPUT_CHECKER) or caller.signing_key is None:
            raise PermissionDenied(f"{caller.name} is not an output checker with a signing key")
        try:  # the key is the one the authority put in the certificate, still valid and unrevoked now
            checker = self._trust.identify(caller.certificate_pem, at=datetime.now(UTC))
        except AuthenticationFailed as exc:
            raise PermissionDenied(f"{caller.name} may not decide: {exc.message}") from None
        job = self._jobs.get_job(job_id)
        if job.state != JobState.AWAITING_CHECK.value:
            raise CheckConflict(f"job {job_id} is {job.state}, not awaiting a check")
        held = self._store.get(job_id)
        self._conflict(job, caller)
        reason = checked_reason(decision, reason)
        if result_hash != held.result_hash:
            raise InvalidRequest(
                f"the result you reviewed (hash {result_hash[:12]}) is not the one held for job {job_id}: show it again"
            )
        if abs(self._clock() - decided_at) > DECISION_WINDOW_SECONDS:
            raise InvalidRequest(f"decided_at must be within {DECISION_WINDOW_SECONDS} s of the server's clock")
        signed = SignedDecision(job_id, held.result_hash, decision, reason, caller.name, int(decided_at), signature)
        if checker.signing_key is None or not verify_decision(signed, checker.signing_key):
            raise InvalidRequest(
                "the decision signature does not verify: sign the decision payload over the result hash of the "
                "outputs you reviewed, with your own signing key"
            )
        row = DecisionRow(
            job_id, caller.name, decision.value, reason, held.result_hash, int(decided_at), signature,
            caller.certificate_pem,
        )  # fmt: skip
        job = self._jobs.get_job(job_id)

        def records(decided: tuple[str, list[DecisionRow]]) -> list[Entry]:
            state, decisions = decided
            approvals = [d.checker for d in decisions if d.decision == Decision.APPROVE.value]
            summary = {
                "decision": decision.value,
                "reason": reason,
                "result_hash": held.result_hash,
                "checker": caller.name,
                "decided_at": int(decided_at),
                "signature": signature.hex(),
                "certificate": caller.certificate_pem.decode("ascii"),
                "approvals": len(approvals),
                "checkers_required": held.checkers_required,
                "state": state,
            }
            objects = job.audit_objects()
            entries: list[Entry] = [(EventType.RESULT_CHECKED, caller.name, caller.role_names, objects, summary)]
            if state == JobState.SUCCEEDED.value:
                released = {"result_hash": held.result_hash, "released_by": approvals}
                entries.append((EventType.RESULT_RELEASED, "saferoom", "server", job.audit_objects(), released))
            if state != JobState.AWAITING_CHECK.value:
                effect = next_state(decisions, held.checkers_required)
                code, message = (effect[1] or "", effect[2]) if effect is not None else ("", None)
                ended = {"owner": job.owner, "state": state, "code": code, "message": message}
                entries.append((EventType.JOB_FINISHED, "saferoom", "server", job.audit_objects(), ended))
            return entries

        # The decision, the job's new state and their records: one transaction, in the log before anyone hears.
        self._audit.commit(lambda conn: self._store.decide_in(conn, row, next_state), records)
        return self._jobs.get_job(job_id), self._store.get(job_id)


def next_state(decisions: list[DecisionRow], required: int) -> tuple[str, str | None, str | None] | None:
    """The job's next state after ``decisions``: any refusal ends it; enough distinct approvals release it."""
    for d in decisions:
        if d.decision == Decision.REJECT.value:
            return JobState.REJECTED.value, "output_rejected", f"rejected by output checker {d.checker}: {d.reason}"
        if d.decision == Decision.REQUEST_CHANGES.value:
            message = f"output checker {d.checker} requested changes: {d.reason}"
            return JobState.CHANGES_REQUESTED.value, "changes_requested", message
    if len({d.checker for d in decisions if d.decision == Decision.APPROVE.value}) >= required:
        return JobState.SUCCEEDED.value, None, None
    return None
