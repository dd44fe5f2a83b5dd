"""The container's entrypoint, run for real outside a container (no container engine runs here or in CI); the
Dockerfile, compose file and systemd unit checked against the repository and the CLI they call."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from saferoom.cli.main import cli
from saferoom.config import ServerConfig
from tests.support import Deployment

REPO = Path(__file__).resolve().parent.parent.parent
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"


def serve_flags() -> set[str]:
    text = CliRunner().invoke(cli, ["serve", "--help"]).output
    return set(re.findall(r"(--[a-z][a-z-]+)", text))


def entrypoint_env(tmp_path: Path, data: Path, pki: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SAFEROOM_COMMAND": f"{sys.executable} -m saferoom.cli.main",
        "SAFEROOM_DATA_DIR": str(data),
        "SAFEROOM_STATE_DIR": str(tmp_path / "state"),
        "SAFEROOM_PKI_DIR": str(pki),
        "SAFEROOM_LISTEN": "127.0.0.1:0",
        "SAFEROOM_METRICS_LISTEN": "127.0.0.1:0",
    }


def test_the_entrypoint_serves_probes_and_stops_cleanly(
    catalog_dir: Path, deployment: Deployment, tmp_path: Path
) -> None:
    env = entrypoint_env(tmp_path, catalog_dir, deployment.pki)
    proc = subprocess.Popen(
        ["sh", str(ENTRYPOINT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        listening = proc.stdout.readline()
        metrics = proc.stdout.readline()
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", listening).group(1))  # type: ignore[union-attr]
        metrics_port = int(re.search(r"http://127\.0\.0\.1:(\d+)/metrics", metrics).group(1))  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=10) as reply:
            assert reply.status == 200
        with deployment.client("alice", port) as alice:
            assert "population" in {d.name for d in alice.list_datasets()}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what the runtime sends on `docker stop`
        try:  # communicate, not wait: the server's log must keep draining while it stops (a full pipe blocks it)
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            raise AssertionError(f"the entrypoint did not stop within 60 s of SIGTERM:\n{stderr[-4000:]}") from None
        code = proc.returncode
    assert code == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]  # --log-format json
    assert any(
        line.get("method") == "/saferoom.v1.CatalogService/ListDatasets" and line["identity"] == "alice"
        for line in lines
    )
    # Any other command runs as itself: the state the container left is consistent.
    check = subprocess.run(
        ["sh", str(ENTRYPOINT), "state", "check", "--state", str(tmp_path / "state")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("missing", ["catalog", "pki", "state"])
def test_the_entrypoint_names_a_missing_volume(
    catalog_dir: Path, deployment: Deployment, tmp_path: Path, missing: str
) -> None:
    data, pki = catalog_dir, deployment.pki
    if missing == "catalog":
        data = tmp_path / "empty-data"
        data.mkdir()
    elif missing == "pki":
        pki = tmp_path / "empty-pki"
        pki.mkdir()
    env = entrypoint_env(tmp_path, data, pki)
    if missing == "state":
        (tmp_path / "state").write_text("not a directory")
    result = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 64
    assert {"catalog": "catalog.json", "pki": "ca.crt", "state": "writable"}[missing] in result.stderr


def test_the_dockerfile_refers_to_what_exists() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for source in sources.split():
            assert (REPO / source).exists(), source
    assert "COPY deploy/entrypoint.sh /usr/local/bin/saferoom-entrypoint" in dockerfile
    assert '"/usr/local/bin/saferoom-entrypoint"' in dockerfile
    assert re.search(r"^USER saferoom$", dockerfile, re.MULTILINE)  # non-root by default
    assert 'VOLUME ["/data", "/state", "/pki"]' in dockerfile
    assert os.access(ENTRYPOINT, os.X_OK)
    used = set(re.findall(r"(--[a-z][a-z-]+)", ENTRYPOINT.read_text(encoding="utf-8").split("exec $SAFEROOM serve")[1]))
    assert used <= serve_flags(), used - serve_flags()


def test_compose_and_the_unit_use_real_options() -> None:
    compose = (REPO / "deploy" / "compose.yaml").read_text(encoding="utf-8")
    assert "dockerfile: Dockerfile" in compose and "context: .." in compose
    options = {f"SAFEROOM_{name.upper()}" for name in ServerConfig.__dataclass_fields__}
    for variable in re.findall(r"^\s+(SAFEROOM_[A-Z_]+):", compose, re.MULTILINE):
        assert variable in options, variable
    assert '"127.0.0.1:9464:9464"' in compose  # metrics published on the host's loopback only
    unit = (REPO / "deploy" / "saferoom.service").read_text(encoding="utf-8")
    command = re.search(r"^ExecStart=(.+?)(?<!\\)$", unit, re.MULTILINE | re.DOTALL)
    assert command is not None
    flags = set(re.findall(r"(--[a-z][a-z-]+)", command.group(1)))
    assert flags <= serve_flags(), flags - serve_flags()
    for setting in ("NoNewPrivileges=yes", "RestrictNamespaces=net", "ProtectSystem=strict"):
        assert re.search(rf"^{setting}$", unit, re.MULTILINE), setting
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # every directive known to this systemd; the binary itself is not installed here
        copy = Path(os.environ.get("TMPDIR", "/tmp")) / f"saferoom-unit-{os.getpid()}"
        copy.mkdir(exist_ok=True)
        (copy / "saferoom.service").write_text(unit, encoding="utf-8")
        result = subprocess.run([analyze, "verify", str(copy / "saferoom.service")], capture_output=True, text=True)
        complaints = [
            line for line in (result.stdout + result.stderr).splitlines() if line and "is not executable" not in line
        ]
        shutil.rmtree(copy)
        assert complaints == [], complaints


def test_the_unit_stops_within_its_timeout() -> None:
    unit = (REPO / "deploy" / "saferoom.service").read_text(encoding="utf-8")
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert stop > ServerConfig().grace_seconds + 30  # the shutdown's own watchdog fires before systemd's kill
