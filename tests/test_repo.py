"""Repository hygiene that CI enforces through the test suite: lint and generated code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_protobuf_code_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, "tools/genproto.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    """The package under --strict and the tests with every body checked: the files pyproject's [tool.mypy]
    names (saferoom and tests), as `python -m mypy` and the pre-commit hook run it."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source files" in result.stdout  # it checked something


def test_one_version_string() -> None:
    """pyproject takes its version from saferoom.__version__, and `saferoom --version` prints that."""
    import tomllib

    from click.testing import CliRunner

    import saferoom
    from saferoom.cli.main import cli

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "saferoom.__version__"}
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"saferoom, version {saferoom.__version__}"


def test_pre_commit_runs_the_suites_checks() -> None:
    """The pre-commit hooks are the checks this file makes (local hooks: the venv's own tools, no downloads)."""
    config = (REPO / ".pre-commit-config.yaml").read_text()
    for command in ("ruff check", "ruff format --check", "mypy --no-incremental", "tools/genproto.py --check"):
        assert command in config, command


def test_wheel_lists_every_subpackage() -> None:
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "saferoom").rglob("__init__.py")}
    assert found | {"saferoom._algorithms"} == listed
