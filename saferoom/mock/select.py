"""Private structure selection: the dependency tree of a dataset whose catalog declares none, chosen as in MST
(McKenna, Miklau, Sheldon 2021, "Winning the NIST Contest", private-pgm's ``mst.select``).

Each pair (a, b) is scored by how far its real 2-way table x is from independence, less what sampling and
measuring would make of it:

    score(a, b) = || x - m ||_1  -  sum over cells of f(m)  -  b x #{cells: m̂ >= 1}

    m = r c^T / N   (the independent table of x's margins r, c and total N)
    f(m) = min(2m, sqrt(2m / pi))

The first term is PrivBayes' R score (Zhang et al. 2017: half the L1 distance between the joint and the
product of its margins), unnormalised. The second is the L1 distance that sampling alone puts between an
independent table and its mean (a cell of mean m is off by about sqrt(2m / pi), by 2m when m is small): a
pair is not preferred for having many sparse cells (age x place would beat district x place on the L1
distance alone). The third is the noise measuring the pair would add, as AIM (McKenna et al. 2022) penalises a
candidate: b, the Laplace scale of an even share of the 2-way budget, in every cell that the post-processed
noisy 1-ways (m̂) expect to hold a row (the thresholds zero the others); it is post-processing. MST instead
scores the distance to a model fitted to the noisy 1-ways, which makes every pair of a poorly measured
attribute (a place's 4,000 cells at 10,000 sales) look dependent.

Sensitivity: adding one row moves x by 1 and m by less than 3 in L1 (r c^T / N changes by N/(N+1) from the
total, and by less than 1 from each margin), and f is 2-Lipschitz: the score moves by less than 1 + 3 + 6 = 10
per row, 10k per privacy unit of k rows.

Kruskal's algorithm then adds, r - 1 times (r attributes), the pair joining two components with the highest
score, chosen by OpenDP's noisy max (permute-and-flip, ``make_noisy_max``; non-monotonic scores, so
epsilon = 2 x 10k / scale) at an even share of the selection's epsilon each: the maximum spanning tree of noisy
pairwise dependence. Pairs of more than ``MAX_CANDIDATE_CELLS`` cells are not scored (the penalties keep
large tables out unless the dependence is strong). The tree is oriented away from its hub (the root, sampled
from its 1-way marginal), so every attribute has at most one parent and sampling is exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import opendp.prelude as dp

from saferoom.mock.structure import Structure

__all__ = ["SELECTION", "orient", "select_tree"]

dp.enable_features("contrib")

SELECTION = 0.1  # share of a publication's epsilon spent on selecting the tree (MST spends a third)
ONE_WAYS = 0.25  # share of the rest spent on every attribute's 1-way marginal, measured before the selection
MAX_CANDIDATE_CELLS = 4_000_000  # larger pairs are not scored (none in the generated city)


SENSITIVITY_PER_ROW = 10  # of the real part of the score (see above)


def _dependence(x: np.ndarray) -> float:
    """|| x - m ||_1 - sum f(m) of a 2-d table, m its independent table (0 for an empty one)."""
    n = float(x.sum())
    if n <= 0:
        return 0.0
    m = np.outer(x.sum(axis=1), x.sum(axis=0)) / n
    return float(np.abs(x - m).sum() - np.minimum(2.0 * m, np.sqrt(2.0 * m / math.pi)).sum())


def _noisy_max(scores: list[float], sensitivity: int, epsilon: float) -> int:
    """OpenDP's permute-and-flip over ``scores``, calibrated by its own privacy map."""
    scale = 2.0 * sensitivity / epsilon
    m: Any = dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.linf_distance(T=float), dp.max_divergence(), scale
    )
    assert m.map(float(sensitivity)) <= epsilon * (1 + 1e-9)
    return int(m(scores))


def select_tree(
    structure: Structure,
    index: Mapping[str, np.ndarray],
    one_ways: Mapping[str, np.ndarray],
    k: int,
    epsilon: float,
    pairs_epsilon: float,
) -> list[tuple[str, str]]:
    """The (undirected) edges of a maximum spanning tree of noisy dependence, spending ``epsilon`` in all.

    ``index``: each attribute's bin per (bounded) real row; ``one_ways``: their post-processed noisy 1-way
    counts; ``k``: rows per privacy unit at most; ``pairs_epsilon``: what the tree's 2-ways will be measured
    with (public: the penalty's scale)."""
    names = list(structure.attributes)
    noise = k * max(len(names) - 1, 1) / pairs_epsilon
    total = max(float(one_ways[min(names, key=lambda n: structure.attributes[n].cells)].sum()), 1.0)
    shares = {n: one_ways[n] / max(float(one_ways[n].sum()), 1.0) for n in names}
    scores: dict[tuple[str, str], float] = {}
    for a, b in itertools.combinations(names, 2):
        cells_a, cells_b = structure.attributes[a].cells, structure.attributes[b].cells
        if cells_a * cells_b > MAX_CANDIDATE_CELLS:
            continue
        x = np.bincount(index[a] * cells_b + index[b], minlength=cells_a * cells_b).astype(np.float64)
        expected = total * np.outer(shares[a], shares[b])
        scores[(a, b)] = _dependence(x.reshape(cells_a, cells_b)) - noise * np.count_nonzero(expected >= 1.0)
    component = {n: n for n in names}

    def find(n: str) -> str:
        while component[n] != n:
            component[n] = component[component[n]]
            n = component[n]
        return n

    edges: list[tuple[str, str]] = []
    rounds = len(names) - 1
    for _ in range(rounds):
        candidates = [e for e in scores if find(e[0]) != find(e[1])]
        if not candidates:
            break  # the candidates cannot join every attribute: a forest
        chosen = _noisy_max([scores[e] for e in candidates], SENSITIVITY_PER_ROW * k, epsilon / rounds)
        a, b = candidates[chosen]
        component[find(a)] = find(b)
        edges.append((a, b))
    return edges


def orient(structure: Structure, edges: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``edges`` as (parent, child) pairs directed away from each component's hub."""
    neighbours: dict[str, list[str]] = {n: [] for n in structure.attributes}
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    # A component's root is its hub (most edges: the shortest chains, so the least noise compounded down them),
    # ties to the fewest cells (a root is sampled from its 1-way marginal, best measured when small).
    for root in sorted(structure.attributes, key=lambda n: (-len(neighbours[n]), structure.attributes[n].cells)):
        if root in seen:
            continue
        seen.add(root)
        frontier = [root]
        while frontier:
            node = frontier.pop(0)
            for other in neighbours[node]:
                if other not in seen:
                    seen.add(other)
                    out.append((node, other))
                    frontier.append(other)
    return tuple(out)
