"""The vetted example packages shipped with saferoom (submitted and approved like any other at set-up)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_algorithms_dir"]


def default_algorithms_dir() -> Path:
    """``algorithms/`` of a checkout, or the copy installed inside the wheel."""
    checkout = Path(__file__).resolve().parent.parent.parent / "algorithms"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent.parent / "_algorithms"
