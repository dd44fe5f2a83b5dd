"""How close mock data is to the real data: total variation distance (TVD) of 1- and 2-way marginals.

Two views, never mixed:

* ``measured_fidelity`` (for operators; it reads the real data): the TVD between the real and a mock sample
  of every attribute's 1-way marginal and of every pair's 2-way marginal, on the public bins. It is stored
  with the publication and shown to operators only: it is computed from real data without noise.
* ``estimated_fidelity`` (for everyone; it costs nothing): for each noisy measurement, the TVD the noise and
  the threshold are expected to cause, from the measurement alone: (scale x cells kept + noisy mass removed)
  / (2 x noisy total). Post-processing of the published measurements: no further privacy is spent.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from saferoom.mock.measure import ROWS_PER_UNIT, Measurements
from saferoom.mock.structure import Attribute, Structure

__all__ = ["along_structure", "estimated_fidelity", "measured_fidelity", "tvd"]

MAX_PAIR_CELLS = 4_000_000  # 2-way marginals larger than this are not compared (none in the generated city)


def tvd(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance of two histograms (each normalised; an empty one counts as all mass away)."""
    sa, sb = float(a.sum()), float(b.sum())
    if sa <= 0 or sb <= 0:
        return 1.0
    return float(0.5 * np.abs(a / sa - b / sb).sum())


def _histogram(attrs: tuple[Attribute, ...], index: dict[str, np.ndarray]) -> np.ndarray:
    if len(attrs) == 1:
        return np.bincount(index[attrs[0].name], minlength=attrs[0].cells)
    a, b = attrs
    return np.bincount(index[a.name] * b.cells + index[b.name], minlength=a.cells * b.cells)


def measured_fidelity(real: pa.Table, mock: pa.Table, structure: Structure) -> dict[str, float]:
    """Real vs mock TVD of every 1-way and 2-way marginal, keyed ``a`` and ``a,b`` (operators only)."""
    real_index = {n: a.index(real) for n, a in structure.attributes.items()}
    mock_index = {n: a.index(mock) for n, a in structure.attributes.items()}
    out: dict[str, float] = {}
    names = list(structure.attributes)
    for name in names:
        attrs = (structure.attributes[name],)
        out[name] = round(tvd(_histogram(attrs, real_index), _histogram(attrs, mock_index)), 4)
    for a, b in itertools.combinations(names, 2):
        pair = (structure.attributes[a], structure.attributes[b])
        if pair[0].cells * pair[1].cells <= MAX_PAIR_CELLS:
            out[f"{a},{b}"] = round(tvd(_histogram(pair, real_index), _histogram(pair, mock_index)), 4)
    return out


def along_structure(fidelity: dict[str, float], structure: Structure) -> float:
    """The mean TVD of the 2-way marginals along the tree's edges (either order of the pair)."""
    values = [fidelity.get(f"{p},{c}", fidelity.get(f"{c},{p}")) for p, c in structure.edges]
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else 0.0


def estimated_fidelity(measurements: Measurements) -> dict[str, float]:
    """The TVD each noisy measurement is expected to carry, from the measurement alone (free to show)."""
    out: dict[str, float] = {}
    for key, m in measurements.marginals.items():
        total = float(m.counts.sum())
        if key == ROWS_PER_UNIT or total <= 0:
            out[key] = 1.0 if total <= 0 else round(min(1.0, m.scale * m.counts.size / (2 * total)), 4)
            continue
        kept = int((m.counts > 0).sum())
        out[key] = round(min(1.0, (m.scale * kept + m.removed) / (2 * total)), 4)
    return out
