"""The packages a server runs: until the approval workflow exists, the vetted ones shipped in algorithms/."""

from __future__ import annotations

import re
from pathlib import Path

from saferoom.errors import InvalidPackage, PackageNotFound
from saferoom.packages.package import MANIFEST_FILE, Package, load_package

__all__ = ["PackageRegistry", "default_algorithms_dir"]

_HASH = re.compile(r"^[0-9a-f]{64}$")


def _version_key(version: str) -> tuple[int, int, int, int, str]:
    core, _, pre = version.partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    return (major, minor, patch, 0 if pre else 1, pre)


class PackageRegistry:
    """Packages by hash, ``name@version`` or ``name`` (the latest version)."""

    def __init__(self, packages: list[Package]) -> None:
        self._by_hash = {p.hash: p for p in packages}
        self._by_ref: dict[str, Package] = {}
        for p in packages:
            if p.ref in self._by_ref and self._by_ref[p.ref].hash != p.hash:
                raise InvalidPackage(f"two different packages claim {p.ref}")
            self._by_ref[p.ref] = p

    @classmethod
    def from_directory(cls, path: Path) -> PackageRegistry:
        """Every package directory directly under ``path``."""
        if not path.is_dir():
            raise InvalidPackage(f"no algorithms directory at {path.name!r}")
        return cls([load_package(d) for d in sorted(path.iterdir()) if (d / MANIFEST_FILE).is_file()])

    def get(self, ref: str) -> Package:
        if _HASH.match(ref):
            found = self._by_hash.get(ref)
        elif "@" in ref:
            found = self._by_ref.get(ref)
        else:
            versions = [p for p in self._by_ref.values() if p.name == ref]
            found = max(versions, key=lambda p: _version_key(p.version)) if versions else None
        if found is None:
            raise PackageNotFound(f"no package {ref[:100]!r}")
        return found

    def list(self) -> list[Package]:
        return sorted(self._by_hash.values(), key=lambda p: (p.name, _version_key(p.version)))


def default_algorithms_dir() -> Path:
    """The vetted packages shipped with saferoom: ``algorithms/`` of a checkout, or the installed copy."""
    checkout = Path(__file__).resolve().parent.parent.parent / "algorithms"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent.parent / "_algorithms"
