"""Every benchmark the README quotes still runs: each at a tiny scale, as a script, the way a reader runs it.

A bench that no longer matches the code it measures (a renamed internal, a changed signature) otherwise breaks
silently until someone wants its figure. These runs check that it finishes and prints the lines its figures come
from, not the figures themselves (speed goals live in the benches, never in timed tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# script, tiny arguments, text its output must contain
BENCHES = {
    "time_model": (["bench_time_model.py", "--scale", "20000", "--plans", "3"], "overran their padded worst case: 0"),
    "dp": (["bench_dp.py", "--scales", "20000", "--runs", "1"], "site_selection      DP"),
    "engine": (["bench_engine.py", "--persons", "50000", "--runs", "1"], '"join_housing": "equal"'),
    "mock": (["bench_mock.py", "--scales", "20000"], "mean TVD along the structure"),
    "import": (["bench_import.py", "--rows", "20000"], "rows/s, peak RSS"),
    "audit": (["bench_audit.py", "--records", "100", "--jobs", "3"], "full verification of 100 records"),
    "jobs": (
        ["bench_jobs.py", "--scale", "20000", "--runs", "5", "--seconds", "1", "--repeat", "1", "--clients", "4"],
        "duckdb   median",
    ),
    "metrics": (["bench_metrics.py", "--jobs", "4", "--rounds", "1", "--blocks", "2"], "recording: +"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHES))
def test_the_bench_runs_at_a_tiny_scale(name: str, tmp_path: Path) -> None:
    argv, expected = BENCHES[name]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / argv[0]), *argv[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"bench/{argv[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert expected in done.stdout, f"bench/{argv[0]} printed:\n{done.stdout[-3000:]}"
