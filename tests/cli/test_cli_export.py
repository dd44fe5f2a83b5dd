"""Released results where researchers use them: CSV, Parquet, Arrow and JSON files, through the real CLI, from
`dev run` and from a real server; tables at full width when piped."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from click.testing import CliRunner

from saferoom.cli.main import cli
from saferoom.server import SaferoomServer
from tests.support import Deployment

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "tests" / "fixtures" / "packages" / "echo"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _as(deployment: Deployment, name: str, server: SaferoomServer, *args: str) -> tuple[int, str]:
    profile = deployment.pki / "identities" / name / "profile.toml"
    return _run("--profile", str(profile), *args, "--server", f"127.0.0.1:{server.port}")


def test_dev_run_writes_every_format(catalog_dir: Path, tmp_path: Path) -> None:
    base = ("dev", "run", str(ECHO), "--data", str(catalog_dir), "--param", "n=7")
    code, out = _run(*base, "--format", "csv", "--output", "stops")
    assert code == 0, out
    assert len(pa_csv.read_csv(pa.py_buffer(out.encode())).to_pylist()) == 7
    for fmt, read in (("parquet", pq.read_table), ("arrow", lambda p: pa.ipc.open_file(p).read_all())):
        code, out = _run(*base, "--format", fmt, "--out", str(tmp_path / fmt))
        assert code == 0, out
        files = sorted(p.name for p in (tmp_path / fmt).iterdir())
        assert files == [f"stops.{fmt}", "values.json"]
        assert read(str(tmp_path / fmt / f"stops.{fmt}")).num_rows == 7
        assert json.loads((tmp_path / fmt / "values.json").read_text())["n"] == 14
    code, out = _run(*base, "--format", "csv", "--output", "stops", "--out", str(tmp_path / "one.csv"))
    assert code == 0 and pa_csv.read_csv(tmp_path / "one.csv").num_rows == 7


def test_unclear_requests_are_refused_with_the_way_out(catalog_dir: Path, tmp_path: Path) -> None:
    base = ("dev", "run", str(ECHO), "--data", str(catalog_dir))
    code, out = _run(*base, "--format", "parquet")
    assert code == 1 and "needs --out" in out
    code, out = _run(*base, "--format", "csv", "--output", "nope")
    assert code == 1 and "no output 'nope'" in out and "stops" in out
    code, out = _run(*base, "--format", "table", "--out", str(tmp_path / "t.txt"))
    assert code == 1 and "for the terminal" in out


def test_piped_tables_are_not_squeezed(catalog_dir: Path) -> None:
    code, out = _run("dev", "run", str(ECHO), "--data", str(catalog_dir), "--param", "label=" + "w" * 150)
    assert code == 0, out
    assert "w" * 150 in out  # the whole value on one line, not cut at 80 columns


def test_jobs_result_from_a_real_server(server: SaferoomServer, deployment: Deployment, tmp_path: Path) -> None:
    with deployment.client("alice", server.port) as alice:
        job = alice.wait(alice.run_job("echo", {"n": 5}).id, timeout=120)
    args = ("jobs", "result", job.id, "--format", "parquet", "--out", str(tmp_path))
    code, out = _as(deployment, "alice", server, *args)
    assert code == 0, out
    assert pq.read_table(tmp_path / "stops.parquet").num_rows == 5
    code, out = _as(deployment, "alice", server, "jobs", "result", job.id, "--format", "json")
    assert code == 0 and json.loads(out)["outputs"]["n"]["value"] == 10


def test_the_python_client_gives_arrow_tables_and_dataframes(server: SaferoomServer, deployment: Deployment) -> None:
    with deployment.client("alice", server.port) as alice:
        result = alice.get_result(alice.wait(alice.run_job("echo", {"n": 4}).id, timeout=120).id)
    assert result.tables()["stops"].num_rows == 4
    frame = result.frames()["stops"]
    assert len(frame) == 4 and list(frame.columns) == result.tables()["stops"].column_names
    assert result.values()["n"] == 8
