"""Mock data of a dataset with a timestamp column: the declared-domain fallback and the differentially private
synthetic data both give wall-clock seconds (timestamp[s]) within the declared bounds, as they do dates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog import Column, DatasetInfo, mock_table
from saferoom.catalog.manifest import MockSpec, timestamp_seconds
from saferoom.mock import measure, sample, structure_of

START, END = timestamp_seconds("2024-01-01 00:00:00"), timestamp_seconds("2024-01-31 23:59:59")
ROWS = 20_000


COLUMNS = (
    Column("card_id", "int64", min=1, max=ROWS),
    Column("line", "string", categories=("1", "2", "3")),
    Column("boarded", "timestamp", min=START, max=END, may_be_null=True),
)


def _info(mock: MockSpec | None = None) -> DatasetInfo:
    """One trip per card (privacy unit card_id)."""
    return DatasetInfo("trips", "Bus trips", "trips.arrow", ROWS, "personal", COLUMNS, "card_id", True, mock=mock)


def _within(table: pa.Table) -> np.ndarray:
    column = table.column("boarded")
    assert column.type == pa.timestamp("s")
    seconds = pc.drop_null(column).cast(pa.int64()).to_numpy()
    assert len(seconds) and seconds.min() >= START and seconds.max() <= END
    return np.asarray(seconds)


def test_the_declared_domain_fallback_stays_within_the_bounds() -> None:
    table = mock_table(_info(), rows=5_000)
    seconds = _within(table)
    assert len(np.unique(seconds)) > 4_000  # seconds drawn over the whole month, not a few values


def test_dp_synthetic_times_stay_within_the_bounds_and_keep_the_rush_hours() -> None:
    rng = np.random.default_rng(5)
    days = rng.integers(0, 31, ROWS) * 86_400
    rush = rng.random(ROWS) < 0.7  # most trips in the morning rush, 06:00 to 08:00 (one bin of each day)
    seconds = START + days + np.where(rush, rng.integers(6 * 3600, 8 * 3600, ROWS), rng.integers(0, 86_400, ROWS))
    missing = rng.random(ROWS) < 0.1
    real = pa.table(
        {
            "card_id": pa.array(np.arange(1, ROWS + 1)),
            "line": pa.array(rng.choice(["1", "2", "3"], ROWS)).dictionary_encode(),
            "boarded": pa.array(seconds, pa.timestamp("s"), mask=missing),
        }
    )
    info = _info(MockSpec(structure=(("line", "boarded"),), bins=372))  # 2-hour bins over the month
    structure = structure_of(info)
    synthetic = sample(measure(real, info, structure, 1.0), structure, info, ROWS, seed=3)
    drawn = _within(synthetic)
    hours = (drawn - START) % 86_400 // 3600
    assert 0.6 < np.mean((hours >= 6) & (hours < 8)) < 0.8  # the real share: 0.7 + 0.3 / 12 = 0.725
    assert 0.05 < synthetic.column("boarded").null_count / ROWS < 0.15  # missing times measured too
