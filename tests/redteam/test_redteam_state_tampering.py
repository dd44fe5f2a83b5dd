"""Tampering with the state database while the server is stopped, to reset a privacy spend, raise a budget,
forge an approval, change a released result or roll the database back: each is refused at start-up and by
``saferoom state check``, naming what is wrong (issue 13). On the code before the outbox and the cross-check,
each of these started a server that served the tampered state."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from saferoom.audit.crosscheck import check_state_dir
from tests.support import Deployment
from tests.support_state import States, copy_state, execute, populate, refusal


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory, dp_catalog_dir: Path, deployment: Deployment) -> States:
    return populate(tmp_path_factory.mktemp("tamper"), dp_catalog_dir, deployment)


def _refused(state: Path, catalog: Path, deployment: Deployment, *fragments: str) -> None:
    offline = "; ".join(check_state_dir(state))
    reason = refusal(state, catalog, deployment)
    for fragment in fragments:
        assert fragment in offline, offline
        assert fragment in reason, reason


def test_deleting_the_charges_to_reset_a_researchers_spend_is_refused(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = copy_state(states.stopped, tmp_path / "state")
    assert execute(state, "DELETE FROM budget_charges") == 1
    _refused(
        state, dp_catalog_dir, deployment, "has no row in budget_charges", "alice has spent epsilon 0 on population"
    )


def test_shrinking_a_charge_is_refused(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                       deployment: Deployment) -> None:  # fmt: skip
    state = copy_state(states.stopped, tmp_path / "state")
    assert execute(state, "UPDATE budget_charges SET epsilon = 1") == 1
    _refused(state, dp_catalog_dir, deployment, "has no matching budget_charged record")


def test_raising_a_budget_behind_the_operators_back_is_refused(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = copy_state(states.stopped, tmp_path / "state")
    assert execute(state, "UPDATE budgets SET epsilon_total = 1000000000") == 1
    _refused(state, dp_catalog_dir, deployment, "the budget of alice on population is epsilon 1000 in the database")


def test_forging_an_approval_row_is_refused(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                            deployment: Deployment) -> None:  # fmt: skip
    state = copy_state(states.stopped, tmp_path / "state")
    assert (
        execute(
            state,
            "INSERT INTO package_decisions (package_hash, kind, actor, reason, decided_at, not_before, not_after,"
            " signature, certificate_pem) SELECT package_hash, 'approved', 'olga', '', decided_at, not_before,"
            " not_after, signature, certificate_pem FROM package_decisions WHERE kind = 'approved' LIMIT 1",
        )
        == 1
    )
    _refused(
        state, dp_catalog_dir, deployment, "has 2 'approved' decisions by olga in the database but 1 package_approved"
    )


def test_changing_a_released_value_is_refused(states: States, tmp_path: Path, dp_catalog_dir: Path,
                                              deployment: Deployment) -> None:  # fmt: skip
    state = copy_state(states.stopped, tmp_path / "state")
    with closing(sqlite3.connect(state / "saferoom.db")) as conn, conn:
        blob = bytearray(
            conn.execute("SELECT arrow_ipc FROM result_outputs WHERE job_id = ?", (states.exact_job,)).fetchone()[0]
        )
        blob[-20] ^= 0x04
        conn.execute("UPDATE result_outputs SET arrow_ipc = ? WHERE job_id = ?", (bytes(blob), states.exact_job))
    _refused(state, dp_catalog_dir, deployment, f"the stored result of job {states.exact_job} does not match")


def test_a_bit_flipped_in_a_stored_result_on_disk_is_refused(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    state = copy_state(states.stopped, tmp_path / "state")
    with closing(sqlite3.connect(state / "saferoom.db")) as conn, conn:
        blob = conn.execute("SELECT arrow_ipc FROM result_outputs WHERE job_id = ?", (states.dp_job,)).fetchone()[0]
    path = state / "saferoom.db"
    original = path.read_bytes()
    # Flip one bit where the blob's bytes lie in the file (the WAL was merged at stop); keep the first flip that
    # changes what SQLite reads back as this result.
    assert not (state / "saferoom.db-wal").exists()
    candidates = _occurrences(original, bytes(blob[-24:-8]))
    for at in candidates:
        data = bytearray(original)
        data[at + 8] ^= 0x01
        path.write_bytes(bytes(data))
        with closing(sqlite3.connect(path)) as conn, conn:
            now = conn.execute("SELECT arrow_ipc FROM result_outputs WHERE job_id = ?", (states.dp_job,)).fetchone()[0]
        if bytes(now) != bytes(blob):
            break
    else:
        raise AssertionError("no byte of the stored result was found in the file")
    _refused(state, dp_catalog_dir, deployment, f"the stored result of job {states.dp_job} does not match")


def _occurrences(data: bytes, piece: bytes) -> list[int]:
    found, at = [], data.find(piece)
    while at >= 0:
        found.append(at)
        at = data.find(piece, at + 1)
    return found


def test_rolling_the_database_back_to_an_older_copy_is_refused(
    states: States, tmp_path: Path, dp_catalog_dir: Path, deployment: Deployment
) -> None:
    """An older saferoom.db holds none of the later charges: restoring it would give the budget back."""
    state = copy_state(states.stopped, tmp_path / "state")
    for path in state.glob("saferoom.db*"):
        path.unlink()
    shutil.copyfile(states.before_jobs_db, state / "saferoom.db")
    _refused(state, dp_catalog_dir, deployment, "was never committed", "an older copy of saferoom.db")
