"""An imported timestamp column end to end: a CSV of bus trips imported twice (exact rules, differential
privacy), served by a real server on loopback, described and mocked over gRPC, and counted by the hour of
boarding in jobs a researcher submits: the exact counts of cells with enough cards, noisy counts under DP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from saferoom.catalog.manifest import timestamp_seconds, timestamp_text
from saferoom.client import Client
from saferoom.importer import import_dataset
from saferoom.server import create_server
from tests.importer.test_import_timestamps import DECLARATION
from tests.support import Deployment, approve_all, server_config

CARDS = 600
MAIN = """
def run(ctx):
    day = ctx.table("{name}").filter(col("boarded") >= timestamp("2024-01-08 05:00:00"))
    by_hour = day.with_columns(hour=hour(col("boarded"))).group_by("hour").agg(trips=count()).sort("hour")
    return {{"by_hour": by_hour}}
"""
PACKAGE = 'name = "{package}"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["{name}"]\n'
PRIVACY = "\n[privacy]\nepsilon = {{ {name} = 1.0 }}\n"


@dataclass(frozen=True)
class Room:
    port: int
    deployment: Deployment
    hours: Counter[int]  # the true trips per hour of boarding, from 05:00 (what the jobs count)

    def client(self, name: str = "alice") -> Client:
        return self.deployment.client(name, self.port)


def _declaration(name: str, dp: str) -> str:
    """The importer tests' trips (times of 2024), one per card, under the exact rules or DP."""
    policy = f"one_row_per_unit = true\n\n[policy]\ndifferential_privacy = {dp}\n"
    return DECLARATION.replace('name = "trips"', f'name = "{name}"').replace("[policy]\n", policy)


def _trips(directory: Path) -> tuple[Path, Counter[int]]:
    rng = np.random.default_rng(11)
    rush = rng.random(CARDS) < 0.6  # the morning rush: 07:00 to 09:00
    seconds = np.where(rush, rng.integers(7 * 3600, 9 * 3600, CARDS), rng.integers(0, 86_400, CARDS))
    start = timestamp_seconds("2024-01-08 00:00:00")
    rows = [f"{i},{timestamp_text(start + int(s))}," for i, s in enumerate(seconds, 1)]  # alighted: not known
    path = directory / "trips.csv"
    path.write_text("card_id,boarded,alighted\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return path, Counter(int(s) // 3600 for s in seconds if s >= 5 * 3600)


@pytest.fixture(scope="module")
def room(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    base = tmp_path_factory.mktemp("timestamps")
    source, hours = _trips(base)
    packages = base / "packages"
    for name, dp, package in (("trips", "false", "trips-by-hour"), ("trips_dp", "true", "trips-by-hour-dp")):
        declaration = base / f"{name}.toml"
        declaration.write_text(_declaration(name, dp), encoding="utf-8")
        import_dataset(str(source), declaration, base / "catalog")
        (packages / package).mkdir(parents=True)
        manifest = PACKAGE.format(package=package, name=name) + (PRIVACY.format(name=name) if dp == "true" else "")
        (packages / package / "saferoom.toml").write_text(manifest, encoding="utf-8")
        (packages / package / "main.py").write_text(MAIN.format(name=name), encoding="utf-8")
    srv, port = create_server(server_config(base / "catalog", base / "state", deployment.pki, catalog_poll_seconds=0))
    try:
        approve_all(deployment, port, packages)
        with deployment.client("olga", port) as operator:
            operator.set_budget("alice", "trips_dp", epsilon=5.0)
        yield Room(port, deployment, hours)
    finally:
        srv.stop(1.0)


def test_the_column_is_described_and_mocked_as_a_timestamp(room: Room) -> None:
    with room.client() as alice:
        boarded = alice.describe_dataset("trips").column("boarded")
        assert (boarded.type, boarded.min, boarded.max) == (
            "timestamp",
            timestamp_seconds("2024-01-01 00:00:00"),
            timestamp_seconds("2024-12-31 23:59:59"),
        )
        _, mock = alice.download_mock("trips", rows=500)
    assert mock.schema.field("boarded").type == pa.timestamp("s")
    seconds = mock.column("boarded").cast(pa.int64())
    assert pc.min(seconds).as_py() >= boarded.min and pc.max(seconds).as_py() <= boarded.max


def _by_hour(alice: Client, package: str) -> dict[int, float]:
    job = alice.wait(alice.run_job(package, {}).id, timeout=120)
    assert job.state == "succeeded", job.error_message
    assert set(job.dataset_versions) == {"trips_dp" if package.endswith("dp") else "trips"}
    table = alice.get_result(job.id).output("by_hour").table
    assert table is not None and table.num_rows > 0
    return dict(zip(table.column("hour").to_pylist(), table.column("trips").to_pylist(), strict=True))


def test_exact_rules_release_the_hours_with_enough_cards_exactly(room: Room) -> None:
    with room.client() as alice:
        released = _by_hour(alice, "trips-by-hour")
    assert released == {hour: n for hour, n in room.hours.items() if n >= 10}  # fewer than 10 cards: suppressed
    assert min(room.hours.values()) < 10 < released[7]  # both kinds of cell are in the data


def test_differential_privacy_releases_noisy_counts_by_hour(room: Room) -> None:
    with room.client() as alice:
        released = _by_hour(alice, "trips-by-hour-dp")
        (budget,) = alice.list_budgets(dataset="trips_dp")
    assert set(released) <= set(range(5, 24)) and {7, 8} <= set(released)  # hours are public keys (0..23)
    for hour in (7, 8):  # the rush hours: about 180 cards each, noise of scale ~1 at epsilon 1
        assert abs(released[hour] - room.hours[hour]) < 30
    assert budget.epsilon_remaining == pytest.approx(4.0)
