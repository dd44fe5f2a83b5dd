"""Differentially private synthetic mock data: measure the real data once under a publication budget, sample
mock rows of any size from the noisy measurements (``measure``, ``structure``, ``sample``, ``fidelity``), and
who may publish and see what (``service``)."""

from saferoom.mock.fidelity import estimated_fidelity, measured_fidelity, tvd
from saferoom.mock.measure import Marginal, Measurements, measure
from saferoom.mock.sample import sample
from saferoom.mock.service import MockInfo, MockKind, MockService
from saferoom.mock.structure import Attribute, Binning, Structure, structure_of

__all__ = [
    "Attribute",
    "Binning",
    "Marginal",
    "Measurements",
    "MockInfo",
    "MockKind",
    "MockService",
    "Structure",
    "estimated_fidelity",
    "measure",
    "measured_fidelity",
    "sample",
    "structure_of",
    "tvd",
]
