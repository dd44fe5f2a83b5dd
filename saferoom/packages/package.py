"""Algorithm packages: the manifest, the files, and the content hash that is the package's identity.

A package is a directory (or a zip archive of one) holding ``saferoom.toml`` and Python files. Its hash is the
SHA-256 of this canonical encoding of all its files, stable forever:

    b"saferoom-package-v1\\n" + for each file, sorted by its relative POSIX name (as UTF-8 bytes):
        len(name) as 8-byte big-endian + name + len(content) as 8-byte big-endian + content

Every byte of a package is hostile until validated here: sizes, names, encodings and manifest fields are
checked before anything else looks at it.
"""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tomllib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from saferoom.errors import InvalidPackage

__all__ = [
    "MANIFEST_FILE",
    "MAX_FILES",
    "MAX_TOTAL_BYTES",
    "Package",
    "ParameterSpec",
    "check_file_name",
    "load_package",
    "package_from_files",
    "package_from_zip",
    "package_to_zip",
    "read_package_files",
]

T = TypeVar("T")

MANIFEST_FILE = "saferoom.toml"
MAX_TOTAL_BYTES = 1024 * 1024
MAX_FILES = 100
_HASH_PREFIX = b"saferoom-package-v1\n"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_VERSION = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})(?:-[0-9A-Za-z.-]{1,32})?$")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_DATASET = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FILE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_ALLOWED_SUFFIXES = (".py", ".md", ".txt")
_MANIFEST_KEYS = {"name", "version", "description", "entrypoint", "datasets", "parameters", "privacy"}
_PRIVACY_KEYS = {"epsilon"}
MAX_EPSILON = 10.0  # per run and dataset; a budget is usually a few units in all
_PARAM_KEYS = {"type", "default", "min", "max", "choices", "description"}
PARAM_TYPES = ("int", "float", "str", "bool")
MAX_PARAMETERS = 64
MAX_STR_PARAM = 4096


@dataclass(frozen=True)
class ParameterSpec:
    """One typed parameter of a package, with its default and bounds."""

    name: str
    type: str
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    description: str = ""


@dataclass(frozen=True)
class Package:
    """A validated algorithm package."""

    name: str
    version: str
    description: str
    entrypoint: str  # "file.py:function"
    datasets: tuple[str, ...]
    parameters: dict[str, ParameterSpec]
    files: dict[str, bytes] = field(repr=False)
    # The privacy loss (epsilon) one run spends on each differentially private dataset it reads; the operator
    # approves it with the package (it is part of the content hash) and the budget is charged this much.
    epsilon: dict[str, float] = field(default_factory=dict)

    @cached_property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical encoding of all files: the package's identity."""
        digest = hashlib.sha256(_HASH_PREFIX)
        for name in sorted(self.files, key=lambda n: n.encode("utf-8")):
            encoded = name.encode("utf-8")
            content = self.files[name]
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
            digest.update(len(content).to_bytes(8, "big"))
            digest.update(content)
        return digest.hexdigest()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def source(self, name: str) -> str:
        """A file's text (files are validated as UTF-8 on load)."""
        return self.files[name].decode("utf-8")


def check_file_name(name: str) -> None:
    """Refuse a file name a package may not hold (absolute, '..', hidden parts, unusual characters or suffix)."""
    if not isinstance(name, str):
        raise InvalidPackage("invalid file name")
    if not name or len(name) > 200 or "\\" in name or "\x00" in name:
        raise InvalidPackage(f"invalid file name {name[:80]!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidPackage(f"file name {name[:80]!r} must be a relative path without '..'")
    if not all(_FILE_PART.match(part) for part in path.parts) or len(path.parts) > 4:
        raise InvalidPackage(f"file name {name[:80]!r} has a hidden or unusual path component")
    if name != MANIFEST_FILE and not name.endswith(_ALLOWED_SUFFIXES):
        raise InvalidPackage(f"file {name[:80]!r}: only .py, .md, .txt files and {MANIFEST_FILE} are allowed")


def _check_param(name: str, raw: Any) -> ParameterSpec:
    if not _IDENT.match(name) or name.startswith("_"):
        raise InvalidPackage(f"parameter name {name[:80]!r} must be an identifier not starting with '_'")
    if not isinstance(raw, dict):
        raise InvalidPackage(f'parameter {name!r} must be a table like {{ type = "int", default = 1 }}')
    unknown = set(raw) - _PARAM_KEYS
    if unknown:
        raise InvalidPackage(f"parameter {name!r}: unknown keys {sorted(unknown)}")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise InvalidPackage(f"parameter {name!r}: type must be one of {', '.join(PARAM_TYPES)}")
    if "default" not in raw:
        raise InvalidPackage(f"parameter {name!r} needs a default")
    lo, hi = raw.get("min"), raw.get("max")
    for bound in (lo, hi):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
            raise InvalidPackage(f"parameter {name!r}: min and max must be numbers")
    if (lo is not None or hi is not None) and kind not in ("int", "float"):
        raise InvalidPackage(f"parameter {name!r}: min and max apply to int and float only")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidPackage(f"parameter {name!r}: min is greater than max")
    choices = raw.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not choices or len(choices) > 100:
            raise InvalidPackage(f"parameter {name!r}: choices must be a non-empty list of at most 100")
        choices = tuple(choices)
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        raise InvalidPackage(f"parameter {name!r}: description must be a string of at most 1000 characters")
    spec = ParameterSpec(name, kind, raw["default"], lo, hi, choices, description)
    from saferoom.packages.params import check_value

    check_value(spec, spec.default, error=InvalidPackage, what=f"default of parameter {name!r}")
    if choices is not None:
        for choice in choices:
            check_value(spec, choice, error=InvalidPackage, what=f"choice of parameter {name!r}")
    return spec


def _parse_manifest(text: str, problems: list[str]) -> dict[str, Any] | None:
    """The manifest's table, or None (with why in ``problems``) when it is not TOML; its unknown and missing
    keys go to ``problems`` too."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{MANIFEST_FILE}: {exc}")
        return None
    unknown = set(data) - _MANIFEST_KEYS
    if unknown:
        problems.append(f"{MANIFEST_FILE}: unknown keys {sorted(unknown)}")
    problems.extend(
        f"{MANIFEST_FILE}: missing {key!r}" for key in ("name", "version", "entrypoint", "datasets") if key not in data
    )
    return data


def _check_files(files: Mapping[str, bytes], problems: list[str]) -> None:
    """Every file's name and content (each bad file once); the limits on count and size stop at once."""
    if not isinstance(files, Mapping) or not files:
        raise InvalidPackage("a package needs files")
    if len(files) > MAX_FILES:
        raise InvalidPackage(f"a package has at most {MAX_FILES} files")
    total = 0
    for name, content in files.items():
        try:
            check_file_name(name)
            if not isinstance(content, bytes):
                raise InvalidPackage(f"file {name!r}: content must be bytes")
        except InvalidPackage as exc:
            problems.append(exc.message)
            continue
        total += len(content)
        if total > MAX_TOTAL_BYTES:
            raise InvalidPackage(f"a package is at most {MAX_TOTAL_BYTES // 1024} KiB")
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"file {name!r} is not UTF-8 text")


def _checked(problems: list[str], check: Callable[[], T]) -> T | None:
    """``check()``, or None with its InvalidPackage message added to ``problems``."""
    try:
        return check()
    except InvalidPackage as exc:
        problems.append(exc.message)
        return None


def _check_identity(data: dict[str, Any]) -> tuple[str, str, str]:
    name, version = data.get("name"), data.get("version")
    problems: list[str] = []
    if "name" in data and (not isinstance(name, str) or not _NAME.match(name)):
        problems.append("name must be lowercase letters, digits and '-', starting with a letter")
    if "version" in data and (not isinstance(version, str) or not _VERSION.match(version)):
        problems.append("version must be a semantic version like 1.0.0")
    description = data.get("description", "")
    if not isinstance(description, str) or len(description) > 4000:
        problems.append("description must be a string of at most 4000 characters")
    if problems:
        raise InvalidPackage.listing(problems)
    return str(name), str(version), str(description)


def _check_entrypoint(entrypoint: Any, files: Mapping[str, bytes]) -> str:
    if not isinstance(entrypoint, str) or entrypoint.count(":") != 1:
        raise InvalidPackage("entrypoint must look like 'main.py:run'")
    entry_file, entry_fn = entrypoint.split(":")
    problems = []
    if entry_file not in files or not entry_file.endswith(".py"):
        problems.append(f"entrypoint file {entry_file[:80]!r} is not in the package")
    if not _IDENT.match(entry_fn) or entry_fn.startswith("_"):
        problems.append("entrypoint function must be an identifier not starting with '_'")
    if problems:
        raise InvalidPackage.listing(problems)
    return entrypoint


def _check_datasets(datasets: Any) -> list[str]:
    if (
        not isinstance(datasets, list)
        or not datasets
        or len(datasets) > 64
        or not all(isinstance(d, str) and _DATASET.match(d) for d in datasets)
        or len(set(datasets)) != len(datasets)
    ):
        raise InvalidPackage("datasets must be a non-empty list of unique dataset names")
    return datasets


def _check_params(raw_params: Any, problems: list[str]) -> dict[str, ParameterSpec]:
    if not isinstance(raw_params, dict) or len(raw_params) > MAX_PARAMETERS:
        problems.append(f"parameters must be a table of at most {MAX_PARAMETERS} entries")
        return {}
    specs = {}
    for pname, raw in raw_params.items():
        try:
            specs[pname] = _check_param(pname, raw)
        except InvalidPackage as exc:
            problems.append(exc.message)
    return specs


def package_from_files(files: Mapping[str, bytes]) -> Package:
    """Validate a package given as relative file names and their bytes.

    Every problem is found in one pass and reported together (``InvalidPackage.problems``): each bad file, each
    bad or missing manifest field, each bad parameter. Only the limits on the number and size of files, and a
    manifest that is not TOML at all, stop the checking early."""
    problems: list[str] = []
    _check_files(files, problems)
    if MANIFEST_FILE not in files:
        problems.append(f"a package needs a {MANIFEST_FILE}")
        raise InvalidPackage.listing(problems)
    try:
        text = files[MANIFEST_FILE].decode("utf-8")
    except (UnicodeDecodeError, AttributeError):
        raise InvalidPackage.listing(problems) from None  # said already, by _check_files
    data = _parse_manifest(text, problems)
    if data is None:
        raise InvalidPackage.listing(problems)

    identity = _checked(problems, lambda: _check_identity(data))
    entrypoint = datasets = None
    if "entrypoint" in data:
        entrypoint = _checked(problems, lambda: _check_entrypoint(data["entrypoint"], files))
    if "datasets" in data:
        datasets = _checked(problems, lambda: _check_datasets(data["datasets"]))
    parameters = _check_params(data.get("parameters", {}), problems)
    epsilon = _checked(problems, lambda: _check_privacy(data.get("privacy", {}), datasets or []))
    if problems or identity is None or entrypoint is None or datasets is None or epsilon is None:
        raise InvalidPackage.listing(problems)
    name, version, description = identity
    return Package(
        name=name,
        version=version,
        description=description,
        entrypoint=entrypoint,
        datasets=tuple(datasets),
        parameters=parameters,
        files=dict(files),
        epsilon=epsilon,
    )


def _check_privacy(raw: Any, datasets: list[str]) -> dict[str, float]:
    """``[privacy] epsilon = { dataset = 0.5, ... }``: what one run spends per differentially private dataset."""
    if not isinstance(raw, dict) or set(raw) - _PRIVACY_KEYS:
        raise InvalidPackage("privacy must be a table with one key, epsilon = { dataset = number, ... }")
    spend = raw.get("epsilon", {})
    if not isinstance(spend, dict):
        raise InvalidPackage("privacy.epsilon must be a table of dataset = number")
    out: dict[str, float] = {}
    problems = []
    for dataset, value in spend.items():
        if dataset not in datasets:
            problems.append(f"privacy.epsilon names {dataset[:80]!r}, which the package does not declare")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_EPSILON:
            problems.append(f"privacy.epsilon.{dataset} must be a number in (0, {MAX_EPSILON:g}]")
        else:
            out[dataset] = float(value)
    if problems:
        raise InvalidPackage.listing(problems)
    return out


def _read_directory(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if "__pycache__" in path.parts or any(p.startswith(".") for p in path.relative_to(root).parts):
            continue
        if path.is_symlink():
            raise InvalidPackage(f"{relative!r} is a symbolic link")
        if path.is_dir():
            continue
        if len(files) >= MAX_FILES:
            raise InvalidPackage(f"a package has at most {MAX_FILES} files")
        total += path.stat().st_size
        if total > MAX_TOTAL_BYTES:
            raise InvalidPackage(f"a package is at most {MAX_TOTAL_BYTES // 1024} KiB")
        files[relative] = path.read_bytes()
    return files


def _read_zip(data: bytes) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise InvalidPackage("not a zip archive") from None
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > MAX_FILES:
        raise InvalidPackage(f"a package has at most {MAX_FILES} files")
    if sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
        raise InvalidPackage(f"a package is at most {MAX_TOTAL_BYTES // 1024} KiB uncompressed")
    files: dict[str, bytes] = {}
    for info in infos:
        if stat.S_ISLNK(info.external_attr >> 16):
            raise InvalidPackage(f"{info.filename[:80]!r} is a symbolic link")
        check_file_name(info.filename)
        with archive.open(info) as member:
            content = member.read(MAX_TOTAL_BYTES + 1)  # never trust the declared size alone
        if len(content) > MAX_TOTAL_BYTES:
            raise InvalidPackage(f"a package is at most {MAX_TOTAL_BYTES // 1024} KiB uncompressed")
        files[info.filename] = content
    return files


def package_from_zip(data: bytes) -> Package:
    """Validate a package given as a zip archive's bytes."""
    if len(data) > MAX_TOTAL_BYTES * 2:
        raise InvalidPackage("the archive is too large")
    return package_from_files(_read_zip(data))


def read_package_files(path: Path) -> dict[str, bytes]:
    """A package's files from a directory or a .zip archive, read within the limits but not yet validated (a
    server validates them all and reports every problem at once)."""
    if path.is_dir():
        return _read_directory(path)
    if path.suffix == ".zip" and path.is_file():
        if path.stat().st_size > MAX_TOTAL_BYTES * 2:
            raise InvalidPackage("the archive is too large")
        return _read_zip(path.read_bytes())
    raise InvalidPackage(f"{path.name!r} is neither a package directory nor a .zip archive")


def load_package(path: Path) -> Package:
    """Load and validate a package from a directory or a .zip archive."""
    return package_from_files(read_package_files(path))


def package_to_zip(package: Package) -> bytes:
    """A deterministic zip of the package (fixed timestamps, sorted names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(package.files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, package.files[name])
    return buffer.getvalue()
