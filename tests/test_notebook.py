"""docs/notebook.ipynb (README "Results in Python / notebooks") runs top to bottom in a real Jupyter kernel
against a real server: connect from the environment, run a job, read its released tables as DataFrames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saferoom.server import SaferoomServer
from tests.support import Deployment

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "docs" / "notebook.ipynb"

nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbclient and ipykernel")
nbclient = pytest.importorskip("nbclient", reason="the dev extra installs nbclient and ipykernel")


def _text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        data = output.get("data", {})
        parts.append(data.get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_the_notebook_runs_against_a_real_server(
    server: SaferoomServer, deployment: Deployment, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The kernel is a child process: it finds the profile and the server the way a user's would, in its
    # environment (and this checkout's code through PYTHONPATH, as the sandbox workers do).
    monkeypatch.setenv("SAFEROOM_PROFILE", str(deployment.pki / "identities" / "alice" / "profile.toml"))
    monkeypatch.setenv("SAFEROOM_SERVER", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's own deprecation warning otherwise
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    runner = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    runner.execute()  # raises CellExecutionError on any failing cell
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "alice @ 127.0.0.1:" in _text(code[0]) and "population" in _text(code[0])
    assert _text(code[1]).strip() == "'succeeded'"
    assert _text(code[2]).strip() == "['age_sex_by_district', 'income_by_district']"
    assert "district" in _text(code[3])  # a DataFrame, shown
    assert "rule" in _text(code[4])
    assert json.loads(NOTEBOOK.read_text())["nbformat"] == 4  # kept as the plain format (no outputs committed)
    assert not any(cell.get("outputs") for cell in json.loads(NOTEBOOK.read_text())["cells"])
