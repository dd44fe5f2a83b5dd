"""Privacy accounting within one run: how the epsilon and delta a run may spend are divided among what it measures.

A run spends, on each differentially private dataset, exactly the epsilon its package declares (charged before
any work by ``disclosure.budgets``) and the dataset policy's ``dp_delta``. Here that is split with basic
composition: epsilon evenly over the measurements the run's DP aggregates make on the dataset (one for each
aggregate's cells, one for each other statistic: ``NoisyAggregate.measurements``), delta evenly over the
aggregates that select their keys privately. The plans were built without data, so the split never depends on
data, and the shares add up to what was charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from saferoom.catalog.manifest import Manifest
from saferoom.disclosure.dp import NoisyAggregate
from saferoom.errors import ReleaseRefused

__all__ = ["Share", "split"]


@dataclass(frozen=True)
class Share:
    """What one DP aggregate may spend: epsilon per measurement, delta for choosing its keys."""

    epsilon: float
    delta: float


def split(noisy: Mapping[str, NoisyAggregate], manifest: Manifest, epsilon: Mapping[str, float]) -> dict[str, Share]:
    """Each aggregate's share (by label) of the run's ``epsilon`` per dataset and of the policies' deltas."""
    measurements: dict[str, int] = {}
    selections: dict[str, int] = {}
    for agg in noisy.values():
        measurements[agg.dataset] = measurements.get(agg.dataset, 0) + agg.measurements
        selections[agg.dataset] = selections.get(agg.dataset, 0) + (1 if agg.selects_keys else 0)
    for dataset in measurements:
        if epsilon.get(dataset, 0) <= 0:
            raise ReleaseRefused(f"no epsilon was granted for the differentially private dataset {dataset}")
    return {
        label: Share(
            epsilon[agg.dataset] / measurements[agg.dataset],
            manifest.dataset(agg.dataset).policy.dp_delta / max(1, selections[agg.dataset]),
        )
        for label, agg in noisy.items()
    }
