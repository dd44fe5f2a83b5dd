"""Writing a downloaded package to disk, without trusting the names that came over the wire."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from saferoom.errors import InvalidRequest
from saferoom.packages import package_from_files

__all__ = ["write_package_files"]


def write_package_files(out: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` under a new directory ``out`` (names validated as package names: no '..', no absolutes)."""
    package_from_files(files)
    if out.exists():
        raise InvalidRequest(f"{out} exists; choose a new directory")
    root = out.resolve()
    for name, content in files.items():
        target = (root / name).resolve()
        if root not in target.parents:
            raise InvalidRequest(f"refusing to write {name!r} outside {out}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
