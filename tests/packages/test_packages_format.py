"""Package format: the content hash, validation of every hostile byte, parameters."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from saferoom.errors import InvalidPackage, InvalidParameter
from saferoom.packages import (
    load_package,
    package_from_files,
    package_from_zip,
    package_to_zip,
    parse_param_value,
    validate_params,
)

MANIFEST = b"""name = "tiny"
version = "1.2.3"
entrypoint = "main.py:run"
datasets = ["population"]
[parameters]
n = { type = "int", default = 3, min = 1, max = 10 }
mode = { type = "str", default = "a", choices = ["a", "b"] }
w = { type = "float", default = 0.5, min = 0, max = 1 }
flag = { type = "bool", default = false }
"""
MAIN = b"def run(ctx, n=3, mode='a', w=0.5, flag=False):\n    return {'n': n}\n"
FILES = {"saferoom.toml": MANIFEST, "main.py": MAIN}


def independent_hash(files: dict[str, bytes]) -> str:
    h = hashlib.sha256(b"saferoom-package-v1\n")
    for name in sorted(files):
        h.update(len(name.encode()).to_bytes(8, "big") + name.encode())
        h.update(len(files[name]).to_bytes(8, "big") + files[name])
    return h.hexdigest()


def test_hash_is_the_documented_canonical_encoding() -> None:
    assert package_from_files(FILES).hash == independent_hash(FILES)


def test_any_change_makes_a_new_package() -> None:
    base = package_from_files(FILES).hash
    assert package_from_files({**FILES, "main.py": MAIN + b"\n"}).hash != base
    assert package_from_files({**FILES, "helpers.py": b""}).hash != base


def test_directory_and_zip_give_the_same_package(tmp_path: Path) -> None:
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    from_dir = load_package(tmp_path)
    archive = tmp_path.parent / "tiny.zip"
    archive.write_bytes(package_to_zip(from_dir))
    assert load_package(archive).hash == from_dir.hash == package_from_files(FILES).hash
    assert package_to_zip(from_dir) == package_to_zip(load_package(archive))  # deterministic


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({**FILES, "../evil.py": b""}, "'..'"),
        ({**FILES, "/abs.py": b""}, "relative"),
        ({**FILES, "a\\b.py": b""}, "invalid file name"),
        ({**FILES, ".hidden.py": b""}, "hidden"),
        ({**FILES, "run.sh": b""}, "only .py"),
        ({**FILES, "big.py": b"#" * (1024 * 1024)}, "at most 1024 KiB"),
        ({**FILES, "latin1.py": "é".encode("latin-1")}, "not UTF-8"),
        ({"main.py": MAIN}, "needs a saferoom.toml"),
        ({**FILES, "saferoom.toml": b"name = "}, "saferoom.toml"),
        ({**FILES, "saferoom.toml": b"extra = 1\n" + MANIFEST}, "unknown keys"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b'"tiny"', b"5")}, "name must be"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b"1.2.3", b"one")}, "semantic version"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b"main.py:run", b"other.py:run")}, "not in the package"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b"main.py:run", b"main.py:_run")}, "entrypoint function"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b'["population"]', b"[]")}, "datasets must be"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b"default = 3", b"default = 30")}, "at most 10"),
        ({**FILES, "saferoom.toml": MANIFEST.replace(b'type = "int"', b'type = "list"')}, "type must be"),
        ({**FILES, **{f"f{i}.py": b"" for i in range(100)}}, "at most 100 files"),
    ],
)
def test_hostile_packages_are_refused(files, fragment: str) -> None:
    with pytest.raises(InvalidPackage) as info:
        package_from_files(files)
    assert fragment in str(info.value)


def test_zip_bombs_and_symlinks_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("saferoom.toml", MANIFEST)
        z.writestr("main.py", b"#" * (5 * 1024 * 1024))
    (tmp_path / "bomb.zip").write_bytes(buffer.getvalue())
    with pytest.raises(InvalidPackage, match="uncompressed"):
        load_package(tmp_path / "bomb.zip")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for name, content in FILES.items():
        (pkg / name).write_bytes(content)
    (pkg / "link.py").symlink_to("/etc/passwd")
    with pytest.raises(InvalidPackage, match="symbolic link"):
        load_package(pkg)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, {"n": 3, "mode": "a", "w": 0.5, "flag": False}),
        ({"n": 10, "w": 1, "flag": True, "mode": "b"}, {"n": 10, "mode": "b", "w": 1.0, "flag": True}),
    ],
)
def test_parameters_are_filled_and_checked(given, expected) -> None:
    assert validate_params(package_from_files(FILES), given) == expected


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"n": 11}, "at most 10"),
        ({"n": 0}, "at least 1"),
        ({"n": True}, "integer"),
        ({"n": 2.5}, "integer"),
        ({"w": "x"}, "number"),
        ({"w": float("nan")}, "finite"),
        ({"mode": "c"}, "one of"),
        ({"mode": "a" * 5000}, "longer than"),
        ({"flag": 1}, "true or false"),
        ({"nope": 1}, "no parameter"),
    ],
)
def test_bad_parameters_are_refused(given, fragment: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        validate_params(package_from_files(FILES), given)
    assert fragment in str(info.value)


def test_parse_param_value() -> None:
    assert parse_param_value("int", "5") == 5
    assert parse_param_value("float", "0.25") == 0.25
    assert parse_param_value("bool", "yes") is True
    assert parse_param_value("str", "x=y") == "x=y"
    with pytest.raises(InvalidParameter):
        parse_param_value("int", "five", "n")


def test_shipped_algorithms_are_valid() -> None:
    root = Path(__file__).parents[2] / "algorithms"
    names = {load_package(d).name for d in root.iterdir() if (d / "saferoom.toml").exists()}
    assert {"site-selection", "population-profile"} <= names


def test_zip_round_trip_keeps_the_hash() -> None:
    package = package_from_files(FILES)
    assert package_from_zip(package_to_zip(package)).hash == package.hash
    with pytest.raises(InvalidPackage):
        package_from_zip(b"PK\x03\x04 not really a zip")
