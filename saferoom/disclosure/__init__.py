"""Disclosure control: the release rewrite of output plans and the checks and report at release."""

from saferoom.disclosure.protect import Protected, ThresholdRule, protect
from saferoom.disclosure.release import Released, ReleaseReport, RuleOutcome, release, value_report

__all__ = [
    "Protected",
    "ReleaseReport",
    "Released",
    "RuleOutcome",
    "ThresholdRule",
    "protect",
    "release",
    "value_report",
]
