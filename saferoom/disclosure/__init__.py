"""Disclosure control: the release rewrite of output plans and the checks and report at release."""

from saferoom.disclosure.protect import Protected, SubsetCheck, ThresholdRule, protect
from saferoom.disclosure.release import (
    Released,
    ReleaseReport,
    RuleOutcome,
    release,
    subset_failures,
    value_report,
)

__all__ = [
    "Protected",
    "ReleaseReport",
    "Released",
    "RuleOutcome",
    "SubsetCheck",
    "ThresholdRule",
    "protect",
    "release",
    "subset_failures",
    "value_report",
]
