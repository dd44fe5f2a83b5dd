"""Counts the metrics endpoint reads at scrape time: how many, never what (no values, parameters or messages)."""

from __future__ import annotations

from saferoom.store.budgets import delta_value, epsilon_value
from saferoom.store.database import Database

__all__ = ["budget_spent", "jobs_by_state", "queued_by_owner"]


def jobs_by_state(db: Database) -> list[tuple[tuple[str, str], float]]:
    """((state, error code or ""), jobs): every job ever recorded, by where it is and how it ended."""
    with db.reading() as conn:
        rows = conn.execute("SELECT state, coalesce(error_code, ''), count(*) FROM jobs GROUP BY 1, 2").fetchall()
    return [((str(state), str(code)), float(n)) for state, code, n in rows]


def queued_by_owner(db: Database) -> list[tuple[str, float]]:
    """(researcher, jobs waiting): the queue depth of everyone with a queued job."""
    with db.reading() as conn:
        rows = conn.execute("SELECT owner, count(*) FROM jobs WHERE state = 'queued' GROUP BY owner").fetchall()
    return [(str(owner), float(n)) for owner, n in rows]


def budget_spent(db: Database) -> list[tuple[str, float, float]]:
    """(dataset, epsilon, delta): privacy budget charged so far on each dataset, by everyone together."""
    with db.reading() as conn:
        rows = conn.execute(
            "SELECT dataset, sum(epsilon), sum(delta) FROM budget_charges GROUP BY dataset ORDER BY dataset"
        ).fetchall()
    return [(str(dataset), epsilon_value(int(e)), delta_value(int(d))) for dataset, e, d in rows]
