# mypy: disable-error-code="arg-type"
# (files(**{name: bytes}) spreads extra files as keywords; mypy cannot tell them from the manifest argument.)
"""Hostile submissions: each is refused with INVALID_ARGUMENT and a reason, nothing is stored, and the server
keeps serving."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from saferoom._proto.saferoom.v1 import packages_pb2, packages_pb2_grpc
from saferoom.server import SaferoomServer
from tests.support import Deployment

MANIFEST = 'name = "hostile"\nversion = "1.0.0"\nentrypoint = "main.py:run"\ndatasets = ["bus_stops"]\n'
MAIN = b'def run(ctx):\n    return {"n": ctx.table("bus_stops").agg(n=count())}\n'


def files(manifest: str = MANIFEST, **extra: bytes) -> list[tuple[str, bytes]]:
    return [("saferoom.toml", manifest.encode()), ("main.py", MAIN), *extra.items()]


def nested(depth: int) -> bytes:
    return b"def run(ctx):\n    return {'n': " + b"(" * depth + b"1" + b")" * depth + b"}\n"


CASES = {
    "oversized": (files(**{"big.txt": b"x" * (1024 * 1024 + 1)}), "at most 1024 KiB"),
    "too many files": (files(**{f"f{i}.txt": b"x" for i in range(120)}), "at most 100 files"),
    "parent traversal": (files(**{"../evil.py": b"x = 1\n"}), "without '..'"),
    "nested traversal": (files(**{"lib/../../evil.py": b"x = 1\n"}), "without '..'"),
    "absolute path": (files(**{"/etc/cron.d/x.py": b"x = 1\n"}), "relative path"),
    "hidden file": (files(**{".bashrc.py": b"x = 1\n"}), "hidden"),
    "backslash": (files(**{"..\\evil.py": b"x = 1\n"}), "invalid file name"),
    "NUL in name": (files(**{"a\x00.py": b"x = 1\n"}), "invalid file name"),
    "executable suffix": (files(**{"run.sh": b"#!/bin/sh\n"}), "only .py"),
    "non-UTF-8 source": (files(**{"lib.py": b"x = '\xff\xfe'\n"}), "not UTF-8"),
    "NUL in source": (files(**{"lib.py": b"x = 1\x00\n"}), "NUL"),
    "no manifest": ([("main.py", MAIN)], "needs a saferoom.toml"),
    "manifest not TOML": (files(manifest="name = [unterminated"), "saferoom.toml"),
    "name of wrong type": (files(manifest=MANIFEST.replace('"hostile"', "42")), "name must be"),
    "datasets of wrong type": (files(manifest=MANIFEST.replace('["bus_stops"]', '"bus_stops"')), "datasets must"),
    "unknown manifest key": (files(manifest=MANIFEST + "run_as_root = true\n"), "unknown keys"),
    "unknown dataset": (files(manifest=MANIFEST.replace("bus_stops", "tax_records")), "do not exist"),
    "missing entrypoint": (files(manifest=MANIFEST.replace("main.py:run", "gone.py:run")), "not in the package"),
    "private entrypoint": (files(manifest=MANIFEST.replace("main.py:run", "main.py:_run")), "not starting with '_'"),
    "parameter default out of range": (
        files(manifest=MANIFEST + '[parameters]\nn = { type = "int", default = 99, min = 1, max = 10 }\n'),
        "default of parameter",
    ),
    "parameter of unknown type": (
        files(manifest=MANIFEST + '[parameters]\nn = { type = "object", default = 1 }\n'),
        "type must be one of",
    ),
    "parameter min above max": (
        files(manifest=MANIFEST + '[parameters]\nn = { type = "int", default = 1, min = 5, max = 1 }\n'),
        "min is greater than max",
    ),
    "code the policy refuses": (files(**{"lib.py": b"import os\n"}), "import of 'os' is not allowed"),
    "underscore attribute": (files(**{"lib.py": b"x = ().__class__\n"}), "lib.py, line 1"),
    "syntax error": (files(**{"lib.py": b"def (:\n"}), "lib.py"),
    "parser bomb": (files(**{"lib.py": nested(5000)}), "lib.py"),
    "duplicate file": ([*files(**{"x.txt": b"a"}), ("x.txt", b"b")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_submission_is_refused_and_nothing_is_stored(
    server: SaferoomServer, deployment: Deployment, case: str
) -> None:
    package_files, fragment = CASES[case]
    store = server.database.path.parent / "packages"
    before = sorted(p.name for p in store.rglob("*.zip"))
    with deployment.channel("alice", server.port, [("grpc.max_send_message_length", 8 * 2**20)]) as channel:
        stub = packages_pb2_grpc.PackagesServiceStub(channel)
        request = packages_pb2.SubmitPackageRequest(
            files=[packages_pb2.PackageFile(name=n, content=c) for n, c in package_files]
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitPackage(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert fragment in caught.value.details()
        assert "/work" not in caught.value.details() and "/tmp" not in caught.value.details()
        listed = stub.ListPackages(packages_pb2.ListPackagesRequest(), timeout=10).packages
        assert "hostile" not in {p.name for p in listed}
    assert sorted(p.name for p in store.rglob("*.zip")) == before


def test_a_package_of_a_thousand_problems_gets_a_bounded_list(server: SaferoomServer, deployment: Deployment) -> None:
    """Reporting every problem at once must not become a way to make the server build (and send) an unbounded
    message: 99 badly named files, 64 bad parameters and broken code give 50 problems and a count of the rest."""
    params = "".join(f'p{i} = {{ type = "object", default = 1 }}\n' for i in range(64))
    bad = MANIFEST.replace('"1.0.0"', '"one"') + "[parameters]\n" + params
    package_files = [*files(manifest=bad, **{"lib.py": b"import os\n"}), *((f"f{i}.exe", b"x") for i in range(97))]
    store = server.database.path.parent / "packages"
    before = sorted(p.name for p in store.rglob("*.zip"))
    with deployment.channel("alice", server.port) as channel:
        stub = packages_pb2_grpc.PackagesServiceStub(channel)
        request = packages_pb2.SubmitPackageRequest(
            files=[packages_pb2.PackageFile(name=n, content=c) for n, c in package_files]
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitPackage(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    lines = details.splitlines()
    assert lines[0] == "the package has 51 problems:" and len(lines) == 52, details[:500]
    assert re.fullmatch(r"- \.\.\. and \d+ more", lines[-1]) and int(lines[-1].split()[3]) > 100
    assert len(details) < 16_384
    assert sorted(p.name for p in store.rglob("*.zip")) == before


def test_identical_content_is_one_package(server: SaferoomServer, deployment: Deployment) -> None:
    content = {"saferoom.toml": MANIFEST.replace("hostile", "twice").encode(), "main.py": MAIN}
    with deployment.client("alice", server.port) as alice, deployment.client("bob", server.port) as bob:
        first, created = alice.submit_package(content)
        again, created_again = alice.submit_package(dict(reversed(list(content.items()))))
        by_bob, created_by_bob = bob.submit_package(content)
        assert created and not created_again and not created_by_bob
        assert first.hash == again.hash == by_bob.hash
        assert by_bob.submitters == ["bob"]  # bob does not learn that alice submitted it too
    with deployment.client("olga", server.port) as olga:
        assert olga.get_package(first.hash).submitters == ["alice", "bob"]
        assert sum(p.hash == first.hash for p in olga.list_packages()) == 1


def test_a_zip_bomb_directory_is_refused_before_reading_it_all(tmp_path: Path) -> None:
    import zipfile

    from saferoom.errors import InvalidPackage
    from saferoom.packages import load_package

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("saferoom.toml", MANIFEST)
        archive.writestr("big.txt", b"\0" * (50 * 1024 * 1024))  # 50 MiB that compresses to ~50 KiB
    with pytest.raises(InvalidPackage, match="uncompressed"):
        load_package(bomb)
