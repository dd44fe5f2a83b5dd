"""`package submit` reports every problem of a package at once (manifest fields, files, datasets, and what the
sandbox's static checks refuse in the code), as lines and as JSON, through the real CLI and a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from saferoom.cli.main import cli
from saferoom.errors import InvalidPackage
from saferoom.server import SaferoomServer
from tests.support import Deployment

BROKEN_MANIFEST = """name = "Broken_Name"
version = "one"
entrypoint = "missing.py:run"
datasets = ["bus_stops"]
colour = "blue"

[parameters]
n = { type = "int" }
k = { type = "complex", default = 1 }
"""
FORBIDDEN = 'import os\n\ndef run(ctx):\n    return {"n": ctx._secret}\n'
ALSO_FORBIDDEN = "def helper():\n    exec('1')\n"


def _write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def _submit(deployment: Deployment, server: SaferoomServer, path: Path, *extra: str) -> Result:
    profile = deployment.pki / "identities" / "alice" / "profile.toml"
    args = ["--profile", str(profile), "package", "submit", str(path), *extra, "--server", f"127.0.0.1:{server.port}"]
    return CliRunner().invoke(cli, args)


def test_every_problem_is_reported_at_once(server: SaferoomServer, deployment: Deployment, tmp_path: Path) -> None:
    package = _write(
        tmp_path / "broken",
        {"saferoom.toml": BROKEN_MANIFEST, "main.py": FORBIDDEN, "lib/util.py": ALSO_FORBIDDEN, "notes.exe": "x"},
    )
    result = _submit(deployment, server, package, "--json")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "invalid_package")
    problems = error["problems"]
    expected = [
        "unknown keys ['colour']",  # the manifest ...
        "name must be lowercase",
        "version must be a semantic version",
        "entrypoint file 'missing.py' is not in the package",
        "parameter 'n' needs a default",
        "parameter 'k': type must be one of",
        "file 'notes.exe': only .py",  # ... the files ...
        "main.py, line 1",  # ... and the code, as the sandbox's static checks see it
        "lib/util.py, line 2",
    ]
    for part in expected:
        assert any(part in p for p in problems), (part, problems)
    assert any("_secret" in p for p in problems), problems
    assert len(problems) >= len(expected)

    text = _submit(deployment, server, package)  # the same, for people: one problem a line
    assert text.exit_code == 1
    lines = text.stderr.splitlines()
    assert lines[0] == f"error (invalid_package): the package has {len(problems)} problems:"
    assert lines[1:] == [f"- {p}" for p in problems]


def test_a_broken_manifest_still_gets_its_code_checked(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    package = _write(tmp_path / "not-toml", {"saferoom.toml": "name = [", "main.py": FORBIDDEN})
    result = _submit(deployment, server, package, "--json")
    problems = json.loads(result.stderr)["error"]["problems"]
    assert len(problems) >= 2 and problems[0].startswith("saferoom.toml:") and "main.py, line 1" in problems[1]


def test_one_problem_is_one_line_and_a_good_package_is_json(
    server: SaferoomServer, deployment: Deployment, tmp_path: Path
) -> None:
    manifest = 'name = "fine"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["bus_stops"]\n'
    package = _write(tmp_path / "one", {"saferoom.toml": manifest.replace("1.0.0", "1"), "main.py": "x = 1\n"})
    result = _submit(deployment, server, package)
    assert result.exit_code == 1 and result.stderr.strip().splitlines() == [
        "error (invalid_package): version must be a semantic version like 1.0.0"
    ]
    good = _write(tmp_path / "good", {"saferoom.toml": manifest, "main.py": "def run(ctx):\n    return {'n': 1}\n"})
    result = _submit(deployment, server, good, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["created"] is True and data["package"]["name"] == "fine" and data["package"]["status"] == "pending"


@pytest.mark.parametrize("count", [1, 3, 80])
def test_the_listing_survives_the_wire_format(count: int) -> None:
    """What the client rebuilds from a status message is the list the server raised (at most 50, then a tail)."""
    raised = InvalidPackage.listing([f"problem {i}; with: punctuation\nand a newline" for i in range(count)])
    rebuilt = InvalidPackage(raised.message)
    assert len(raised.problems) == count  # in the server: all of them, to be joined with other checks' lists
    assert rebuilt.problems == raised.problems[:50] + ((f"... and {count - 50} more",) if count > 50 else ())
    assert len(rebuilt.problems) == min(count, 51) and all("\n" not in p for p in rebuilt.problems)
