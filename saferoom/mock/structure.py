"""What is synthesised: the attributes of a dataset, their bins, and the dependency graph between them.

Everything here is built from the catalog's public declarations alone (column bounds, categories, the
``MockSpec``), never from data: the bins and the graph (each attribute with at most two parents: a tree where
one parent suffices, PrivBayes' degree 2 where a child depends on two) are public, so choosing them costs no
privacy.

An *attribute* is one column, or a declared pair of numeric columns binned together (``lat+lon``: a place).
Its bins are the column's categories, or intervals on its public bounds (log-spaced for amounts, one per value
for narrow integers), plus one last bin for a missing value, so missing-value rates are measured with the rest.
Identifiers (the privacy unit, ``*_id`` columns) and derived columns are not attributes: identifiers are
synthetic, derived columns are recomputed from the sampled ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from saferoom.catalog.manifest import Column, DatasetInfo, MockSpec
from saferoom.errors import InvalidRequest

__all__ = ["Attribute", "Binning", "Structure", "structure_of"]

ONE_BIN_PER_VALUE = 128  # integers with a range this narrow (ages, sizes) get one bin per value
_LOG_UNITS = 1e5  # an amount's log bins: log(1 + (x - lo) / u) with u = (hi - lo) / _LOG_UNITS
_TEMPORAL = {"date32": pa.date32(), "timestamp": pa.timestamp("s")}  # binned as their days or seconds


@dataclass(frozen=True)
class Binning:
    """The bins of one column: ``size`` value bins and a last bin (index ``size``) for a missing value."""

    column: Column
    edges: np.ndarray | None  # numeric: size + 1 edges; None for categories and booleans
    size: int
    point_at_low: bool = False  # an amount's first bin is exactly its lower bound (a zero income)

    @classmethod
    def of(cls, column: Column, bins: int) -> Binning:
        if column.categories:
            return cls(column, None, len(column.categories))
        if column.type == "bool":
            return cls(column, None, 2)
        if column.type not in ("int64", "float64", *_TEMPORAL) or column.min is None or column.max is None:
            raise InvalidRequest(f"mock: column {column.name!r} needs categories or public bounds to be synthesised")
        lo, hi = float(column.min), float(column.max)
        integer = column.type in ("int64", *_TEMPORAL)
        if integer and hi - lo + 1 <= max(bins, ONE_BIN_PER_VALUE):
            return cls(column, np.arange(lo, hi + 2.0), int(hi - lo + 1))
        if column.magnitude and hi > lo:
            unit = (hi - lo) / _LOG_UNITS
            top = math.log1p((hi - lo) / unit)
            edges = lo + unit * np.expm1(np.linspace(0.0, top, bins + 1))
            edges[0], edges[-1] = lo, hi
            return cls(column, edges, bins, point_at_low=True)
        return cls(column, np.linspace(lo, hi, bins + 1), bins)

    def _position(self, x: np.ndarray) -> np.ndarray:
        """Each value's bin by arithmetic on the evenly spaced (or evenly log-spaced) edges: no search, so
        binning 10 million values takes a fraction of a second."""
        assert self.edges is not None
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        if self.point_at_low:
            unit = (hi - lo) / _LOG_UNITS
            scaled = np.log1p(np.maximum(x - lo, 0.0) / unit) / math.log1p((hi - lo) / unit)
        else:
            scaled = (x - lo) / max(hi - lo, 1e-300)
        # (+1e-9: a value on an edge belongs to the bin above it, whatever the rounding of the division)
        position: np.ndarray = np.clip(np.floor(scaled * self.size + 1e-9), 0, self.size - 1).astype(np.int64)
        return position

    @property
    def cells(self) -> int:
        """Bins including the missing-value bin."""
        return self.size + 1

    @property
    def amount(self) -> bool:
        """An amount (log bins): its tail bins hold values far above the typical one."""
        return self.point_at_low

    def values(self) -> np.ndarray:
        """The mean value ``draw`` gives each value bin (log-uniform for amounts), from the public edges only."""
        assert self.edges is not None
        lo, hi = self.edges[:-1], self.edges[1:]
        if not self.point_at_low:
            means: np.ndarray = (lo + hi) / 2
            return means
        base, unit = self.edges[0], (self.edges[-1] - self.edges[0]) / _LOG_UNITS
        a, b = np.log1p((lo - base) / unit), np.log1p((hi - base) / unit)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_exp = np.where(b > a, (np.exp(b) - np.exp(a)) / np.where(b > a, b - a, 1.0), np.exp(a))
        out: np.ndarray = base + unit * (mean_exp - 1.0)
        out[0] = base  # bin 0 is exactly the lower bound
        return out

    def index(self, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Each value's bin (``size`` for a missing value, null or NaN): always in ``[0, size]``."""
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        missing = np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if self.edges is None:
            if pa.types.is_dictionary(values.type):
                raw = pc.fill_null(values.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
                # Dictionary order of this file may differ from the declared categories: map by name.
                declared = {c: i for i, c in enumerate(self.column.categories or ())}
                lookup = np.array([declared.get(str(v), self.size) for v in values.dictionary.to_pylist()] or [0])
                out = lookup[raw]
            elif self.column.categories:
                declared = {c: i for i, c in enumerate(self.column.categories)}
                out = np.array([declared.get(v, self.size) for v in values.to_pylist()], dtype=np.int64)
            else:  # bool
                out = pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            if pa.types.is_date32(values.type):
                values = values.cast(pa.int32())  # days since 1970-01-01
            elif pa.types.is_timestamp(values.type):
                values = values.cast(pa.int64())  # seconds since 1970-01-01 00:00:00
            x = pc.fill_null(values.cast(pa.float64()), float(self.edges[0])).to_numpy(zero_copy_only=False)
            # NaN (a column that may hold it) is a missing value here; +-inf and values beyond the declared
            # bounds fall in the end bins, as clamping would put them.
            nan = np.isnan(x)
            missing = missing | nan
            x = np.where(nan, float(self.edges[0]), x)
            out = self._position(x)
            if self.point_at_low:  # bin 0 holds exactly the lower bound; the rest of its interval goes to bin 1
                out = np.where((out == 0) & (x > self.edges[0]), min(1, self.size - 1), out)
        return np.where(missing, self.size, out).astype(np.int64)

    def allowed(self) -> np.ndarray:
        """Which bins a mock value may fall in: the missing-value bin only if the column may be missing (the
        catalog does not declare it never null, and, for a float, never NaN), whatever noise put there."""
        out = np.ones(self.cells, dtype=bool)
        never_nan = self.column.type != "float64" or self.column.may_be_nan is False
        if self.column.may_be_null is False and never_nan:
            out[self.size] = False
        return out

    def draw(self, rng: np.random.Generator, index: np.ndarray) -> pa.Array:
        """Values for bins ``index``: the category, or uniform within the bin (missing for the last bin)."""
        missing = index >= self.size
        safe = np.where(missing, 0, index)
        column = self.column
        if self.edges is None:
            if column.categories:
                indices = pa.array(safe.astype(np.int32), mask=missing)
                return pa.DictionaryArray.from_arrays(indices, pa.array(column.categories, pa.string()))
            return pa.array(safe.astype(bool), mask=missing)
        lo, hi = self.edges[safe], self.edges[safe + 1]
        if column.type in ("int64", *_TEMPORAL):
            width = np.maximum(np.floor(hi) - np.ceil(lo), 1.0)
            values = np.ceil(lo) + np.floor(rng.random(index.size) * width)
            values = np.clip(values, column.min, column.max).astype(np.int64)
            if column.type == "date32":
                return pa.array(values.astype(np.int32), pa.date32(), mask=missing)
            return pa.array(values, _TEMPORAL.get(column.type, pa.int64()), mask=missing)
        if self.point_at_low:  # an amount: log-uniform within its log-spaced bin, exactly the bound in bin 0
            base, unit = self.edges[0], (self.edges[-1] - self.edges[0]) / _LOG_UNITS
            a, b = np.log1p((lo - base) / unit), np.log1p((hi - base) / unit)
            values = np.where(safe == 0, base, base + unit * np.expm1(a + rng.random(index.size) * (b - a)))
        else:
            values = lo + rng.random(index.size) * (hi - lo)
        values = np.clip(values, column.min, column.max)
        if column.may_be_null is False:  # declared never null: a missing value is NaN (if it may be one at all)
            return pa.array(np.where(missing, np.nan, values), pa.float64())
        return pa.array(values, pa.float64(), mask=missing)


@dataclass(frozen=True)
class Attribute:
    """One synthesised attribute: a column, or a pair binned jointly (cell = i * bins_of_second + j)."""

    name: str
    binnings: tuple[Binning, ...]

    @property
    def cells(self) -> int:
        return math.prod(b.cells for b in self.binnings)

    def index(self, table: pa.Table) -> np.ndarray:
        first = self.binnings[0].index(table.column(self.binnings[0].column.name))
        if len(self.binnings) == 1:
            return first
        second = self.binnings[1].index(table.column(self.binnings[1].column.name))
        joint: np.ndarray = first * self.binnings[1].cells + second
        return joint

    def allowed(self) -> np.ndarray:
        """Which cells a mock row may fall in (``Binning.allowed`` of each column)."""
        if len(self.binnings) == 1:
            return self.binnings[0].allowed()
        return np.outer(self.binnings[0].allowed(), self.binnings[1].allowed()).ravel()

    def draw(self, rng: np.random.Generator, index: np.ndarray) -> dict[str, pa.Array]:
        if len(self.binnings) == 1:
            return {self.name: self.binnings[0].draw(rng, index)}
        a, b = self.binnings
        return {
            a.column.name: a.draw(rng, index // b.cells),
            b.column.name: b.draw(rng, index % b.cells),
        }


@dataclass(frozen=True)
class Structure:
    """A dataset's attributes and the graph over them: ``parents[child]`` (one or two); roots have none."""

    dataset: str
    attributes: dict[str, Attribute]
    parents: dict[str, tuple[str, ...]]
    identifiers: tuple[str, ...]  # synthetic ids (the privacy unit first when it is one)
    derived: tuple[tuple[str, str, str, str], ...]  # (column, left, operator, right)
    free_text: tuple[str, ...]  # string columns without a public domain: synthetic labels
    selected: bool = False  # the edges are to be selected privately (``select``), not declared

    def with_edges(self, edges: tuple[tuple[str, str], ...]) -> Structure:
        """This structure with the (parent, child) ``edges`` a private selection chose."""
        parents: dict[str, tuple[str, ...]] = {}
        for p, c in edges:
            if p not in self.attributes or c not in self.attributes or c in parents or p == c:
                raise InvalidRequest(f"mock of {self.dataset}: selected edge {p} -> {c} does not fit a tree")
            parents[c] = (p,)
        fitted = Structure(self.dataset, self.attributes, parents, self.identifiers, self.derived, self.free_text)
        fitted.order()
        return fitted

    @property
    def roots(self) -> list[str]:
        return [name for name in self.attributes if name not in self.parents]

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(p, c) for c, ps in self.parents.items() for p in ps]

    def marginals(self) -> list[tuple[str, ...]]:
        """What is measured: each root alone, each child with each of its parents (parent first).

        A child of two parents is measured as two 2-way marginals, not one 3-way: its conditional given both
        is fitted to them by ``sample.conditional`` (the no-three-way-interaction model, as Private-PGM fits
        MST's 2-way measurements). The 3-way table had (parent x parent x child) cells for as many rows, most of
        them empty: its noise, thresholded, cut the child's tails (a district's top incomes) and left phantoms.
        """
        return [(r,) for r in self.roots] + [(p, c) for c, ps in self.parents.items() for p in ps]

    def order(self) -> list[str]:
        """Attributes parents first (the order rows are sampled in)."""
        out: list[str] = []
        while len(out) < len(self.attributes):
            ready = [n for n in self.attributes if n not in out and all(p in out for p in self.parents.get(n, ()))]
            if not ready:
                raise InvalidRequest(f"mock of {self.dataset}: the structure has a cycle")
            out.extend(ready)
        return out

    def describe(self) -> list[str]:
        """The graph for people: ``district -> income`` per edge, ``sex`` for a lone root."""
        linked = {p for ps in self.parents.values() for p in ps}
        return [f"{p} -> {c}" for p, c in self.edges] + [r for r in self.roots if r not in linked]


def structure_of(info: DatasetInfo) -> Structure:
    """The attributes and graph of ``info`` from its catalog declaration (``MockSpec``; none, or ``"auto"``:
    the attributes, their graph to be selected privately when measured)."""
    spec = info.mock or MockSpec(select=True)
    names = {c.name for c in info.columns}
    derived = []
    for column, expression in spec.derived:
        left, operator, right = expression.split(" ")
        if not {column, left, right} <= names:
            raise InvalidRequest(f"mock of {info.name}: derivation {column} = {expression} names unknown columns")
        derived.append((column, left, operator, right))
    skip = {d[0] for d in derived}
    identifiers = tuple(
        c.name for c in info.columns if c.name == info.privacy_unit or (c.name.endswith("_id") and c.type == "int64")
    )
    free_text = tuple(c.name for c in info.columns if c.type == "string" and not c.categories)
    skip |= set(identifiers) | set(free_text)
    attributes: dict[str, Attribute] = {}
    paired = {name for pair in spec.joint for name in pair}
    for a, b in spec.joint:
        if not {a, b} <= names or a in skip or b in skip:
            raise InvalidRequest(f"mock of {info.name}: joint attribute {a}+{b} names unknown or derived columns")
        attributes[f"{a}+{b}"] = Attribute(
            f"{a}+{b}", (Binning.of(info.column(a), spec.joint_bins), Binning.of(info.column(b), spec.joint_bins))
        )
    for declared in info.columns:
        if declared.name not in skip and declared.name not in paired:
            attributes[declared.name] = Attribute(declared.name, (Binning.of(declared, spec.bins),))
    parents: dict[str, tuple[str, ...]] = {}
    for p, c in spec.structure:
        if p not in attributes or c not in attributes or p == c:
            raise InvalidRequest(f"mock of {info.name}: structure edge {p} -> {c} names no attribute")
        parents[c] = (*parents.get(c, ()), p)
    structure = Structure(info.name, attributes, parents, identifiers, tuple(derived), free_text, spec.select)
    structure.order()  # InvalidRequest for a cycle
    return structure
