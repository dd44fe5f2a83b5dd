"""Upgrades: migrations run forward at open; a state database from a newer saferoom is refused untouched."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from saferoom.errors import FailedPrecondition
from saferoom.store import Database
from saferoom.store.database import MIGRATIONS, SCHEMA_VERSION


def test_an_older_database_is_migrated_forward(tmp_path: Path) -> None:
    path = tmp_path / "saferoom.db"
    Database.open(path).close()
    conn = sqlite3.connect(path)  # as an older version left it: its last migration not applied yet
    last_sql = dict(MIGRATIONS)[SCHEMA_VERSION]
    created = re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", last_sql)
    assert created, "the last migration creates a table (this test undoes it)"
    for table in created:
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DELETE FROM schema_migrations WHERE number = ?", (SCHEMA_VERSION,))
    conn.commit()
    conn.close()
    db = Database.open(path)
    with db.reading() as c:
        assert [r[0] for r in c.execute("SELECT number FROM schema_migrations ORDER BY number")] == [
            n for n, _ in MIGRATIONS
        ]
        for table in created:
            c.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert c.execute("SELECT count(*) FROM audit_head").fetchone()[0] == 1
    db.close()


def test_a_database_from_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "saferoom.db"
    Database.open(path).close()
    conn = sqlite3.connect(path)  # a newer saferoom applied a migration this one does not know
    conn.execute("CREATE TABLE from_the_future (x INTEGER)")
    conn.execute("INSERT INTO schema_migrations VALUES (?, julianday('now'))", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(FailedPrecondition, match=f"newer saferoom .*migration {SCHEMA_VERSION + 1}"):
        Database.open(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # nothing written to it
