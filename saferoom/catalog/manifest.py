"""The catalog manifest: what each dataset is, its columns, and the policy for releasing anything from it.

Stored as ``catalog.json`` beside the Arrow IPC files of a data directory. Everything here is public: it is
what researchers see when they list and describe datasets, and the mock data is drawn from it alone.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from saferoom.errors import DatasetNotFound, InvalidRequest

__all__ = [
    "COLUMN_TYPES",
    "ENGINES",
    "MANIFEST_NAME",
    "OUTPUT_CHECKING",
    "TEXT_BYTES",
    "Column",
    "DatasetInfo",
    "Manifest",
    "MockSpec",
    "Policy",
    "timestamp_seconds",
    "timestamp_text",
]

MANIFEST_NAME = "catalog.json"
FORMAT = 1

# Logical column types and their Arrow storage: string columns with ``categories`` are dictionary-encoded.
# Bounds of a date32 column are its days since 1970-01-01; of a timestamp column (wall-clock time to the second,
# no time zone: Arrow timestamp[s]) its seconds since 1970-01-01 00:00:00, written "YYYY-MM-DD HH:MM:SS" in
# catalog.json (``timestamp_text``) so that a reader sees the times that are published.
COLUMN_TYPES = frozenset({"int64", "float64", "string", "bool", "date32", "timestamp"})
_EPOCH_TIME = dt.datetime(1970, 1, 1)
_TIMESTAMP_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")

# The most bytes (UTF-8) a text value without declared categories may hold: the engine's cost model counts every
# such value at this width (``engine.cost.STRING_BYTES``), so imports refuse longer ones and ``Catalog.open``
# refuses a file that holds one (README "Resource limits never depend on data").
TEXT_BYTES = 60
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

# Where a dataset is executed: "arrow" (the Arrow IPC ``file`` in the data directory, memory-mapped) or "spark"
# (partitioned Parquet at ``location``, read by the Spark cluster the server reaches through Spark Connect).
ENGINES = frozenset({"arrow", "spark"})
OUTPUT_CHECKING = ("required", "none")  # a dataset policy's output_checking
_LOCATION = re.compile(r"^(/|file:/|s3a://|hdfs://|abfss://|gs://)[^\s]*$")

Sensitivity = Literal["public", "personal"]


@dataclass(frozen=True)
class Column:
    """One column: its type, unit, and the public bounds or categories of its domain."""

    name: str
    type: str
    description: str = ""
    unit: str | None = None
    min: float | None = None  # public lower bound (personal values are clamped to it when read)
    max: float | None = None  # public upper bound
    categories: tuple[str, ...] | None = None  # the public domain of a categorical column
    magnitude: bool = False  # an amount (income, price): sums and means of it face the dominance rules
    # Declared by the owner (``saferoom datasets import`` checks every row against them); None: not declared.
    may_be_null: bool | None = None
    may_be_nan: bool | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidRequest(f"column name {self.name!r} must match {_NAME.pattern}")
        if self.type not in COLUMN_TYPES:
            raise InvalidRequest(f"column {self.name!r}: unknown type {self.type!r}")
        if self.type == "timestamp":
            for bound in (self.min, self.max):
                # Whole seconds of a real time in years 1 to 9999 (what Python, Arrow and the engines all hold).
                if bound is not None and not (math.isfinite(bound) and bound == int(bound) and _in_years(bound)):
                    raise InvalidRequest(
                        f"column {self.name!r}: a timestamp bound is a time in years 1 to 9999, to the second"
                    )
            if self.min is not None and self.max is not None and self.min > self.max:
                raise InvalidRequest(f"column {self.name!r}: min {timestamp_text(self.min)} is after max")


def timestamp_seconds(text: object) -> int:
    """A timestamp written ``"YYYY-MM-DD HH:MM:SS"`` (or with a ``T``) as seconds since 1970-01-01 00:00:00.

    To the second and without a time zone, in years 1 to 9999; raises ``ValueError`` for anything else (a
    fraction of a second, an offset, a date alone, an impossible day or hour).
    """
    if isinstance(text, str) and _TIMESTAMP_TEXT.match(text):
        try:
            return int((dt.datetime.fromisoformat(text) - _EPOCH_TIME).total_seconds())
        except ValueError:  # no such day, hour or year (0000)
            pass
    raise ValueError(f"{str(text)[:40]!r} is not a time written YYYY-MM-DD HH:MM:SS in years 1 to 9999")


def timestamp_text(seconds: float) -> str:
    """Seconds since 1970-01-01 00:00:00 as ``"YYYY-MM-DD HH:MM:SS"``."""
    return (_EPOCH_TIME + dt.timedelta(seconds=int(seconds))).isoformat(sep=" ")  # strftime drops year 1's zeros


def _in_years(seconds: float) -> bool:
    try:
        _EPOCH_TIME + dt.timedelta(seconds=seconds)
    except OverflowError:
        return False
    return True


@dataclass(frozen=True)
class Policy:
    """How results from a dataset may be released."""

    min_contributors: int = 10  # distinct privacy units needed in every released cell
    dominance_n: int = 2  # (n, k) rule: a cell fails if its n largest contributors hold ...
    dominance_k: float = 0.9  # ... more than this share of its total (sums and means of magnitudes)
    p_percent: float = 0.1  # p% rule: a cell fails if the rest of it (after the two largest) is below p x largest
    min_residual_df: int = 10  # models (ols): residual degrees of freedom needed before coefficients leave
    # Differential privacy: when on, every aggregate of this dataset is released with calibrated noise under
    # the researcher's privacy budget instead of the exact rules above (see saferoom.disclosure.dp).
    differential_privacy: bool = False
    max_contributions: int = 1  # rows one privacy unit may contribute to a DP aggregate (more are dropped)
    dp_delta: float = 1e-7  # the delta one job spends on this dataset (selecting which group keys exist)
    # "required": a result read from this dataset is held until output checkers (a role) sign its release;
    # "none": released as soon as the rules pass. Exact rules can be outwitted by a programmable interface,
    # so the generated catalog requires checking for personal datasets released under them.
    output_checking: str = "none"
    output_checkers: int = 1  # distinct checkers whose approval a held result needs (any rejection ends it)

    def __post_init__(self) -> None:
        if self.min_contributors < 1 or self.dominance_n not in (1, 2):
            raise InvalidRequest("policy: min_contributors must be >= 1 and dominance_n 1 or 2")
        if not (0 < self.dominance_k <= 1 and 0 <= self.p_percent < 1):
            raise InvalidRequest("policy: dominance_k must be in (0, 1] and p_percent in [0, 1)")
        if not (1 <= self.max_contributions <= 1000 and 0 < self.dp_delta < 1e-3):
            raise InvalidRequest("policy: max_contributions must be in [1, 1000] and dp_delta in (0, 1e-3)")
        if self.output_checking not in OUTPUT_CHECKING:
            raise InvalidRequest(f"policy: output_checking must be one of {', '.join(OUTPUT_CHECKING)}")
        if type(self.output_checkers) is not int or self.output_checkers not in (1, 2):
            raise InvalidRequest("policy: output_checkers must be 1 or 2")

    @property
    def checking_required(self) -> bool:
        return self.output_checking == "required"


_DERIVATION = re.compile(r"^([a-z][a-z0-9_]{0,63}) ([*/]) ([a-z][a-z0-9_]{0,63})$")


@dataclass(frozen=True)
class MockSpec:
    """How differentially private mock data of a dataset is synthesised (``saferoom.mock``): all public.

    ``joint`` pairs of numeric columns are binned together as one attribute named ``a+b`` (lat/lon: places);
    ``structure`` is the dependency graph as (parent, child) attribute edges: a child is measured as a noisy
    2-way marginal with each parent (two at most: a Bayesian network of degree 2, as in PrivBayes); with
    ``select`` (``"structure": "auto"``, or no ``"structure"``, or no ``"mock"`` at all) the graph is a tree
    selected privately from the data at publication (``saferoom.mock.select``, as in MST); ``derived``
    columns are recomputed from two others (``"price / area_m2"``) instead of being measured.
    """

    structure: tuple[tuple[str, str], ...] = ()
    joint: tuple[tuple[str, str], ...] = ()
    derived: tuple[tuple[str, str], ...] = ()  # (column, "a / b" or "a * b")
    bins: int = 96  # bins of a numeric column (integers with a narrower range get one bin per value)
    joint_bins: int = 130  # bins per axis of a joint attribute
    select: bool = False  # the structure is selected privately (MST) instead of declared

    def __post_init__(self) -> None:
        if self.select and self.structure:
            raise InvalidRequest("mock: a structure is either declared or selected ('auto'), not both")
        if not (2 <= self.bins <= 1000 and 2 <= self.joint_bins <= 400):
            raise InvalidRequest("mock: bins must be in [2, 1000] and joint_bins in [2, 400]")
        for _, expression in self.derived:
            if not _DERIVATION.match(expression):
                raise InvalidRequest(f"mock: derivation {expression!r} must be 'a / b' or 'a * b'")
        children = [child for _, child in self.structure]
        if any(children.count(c) > 2 for c in children) or len(set(self.structure)) != len(self.structure):
            raise InvalidRequest("mock: an attribute of the structure has at most two parents, each named once")

    def to_data(self) -> dict[str, Any]:
        return {
            "structure": "auto" if self.select else [list(e) for e in self.structure],
            "joint": [list(j) for j in self.joint],
            "derived": dict(self.derived),
            "bins": self.bins,
            "joint_bins": self.joint_bins,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> MockSpec:
        try:
            declared = data.get("structure", "auto")
            select = declared == "auto"
            return cls(
                structure=() if select else tuple((str(a), str(b)) for a, b in declared),
                joint=tuple((str(a), str(b)) for a, b in data.get("joint", [])),
                derived=tuple((str(k), str(v)) for k, v in dict(data.get("derived", {})).items()),
                bins=int(data.get("bins", 96)),
                joint_bins=int(data.get("joint_bins", 130)),
                select=select,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"mock: malformed declaration ({exc})") from None


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the catalog declares it."""

    name: str
    description: str
    file: str  # Arrow IPC file name, relative to the data directory
    rows: int
    sensitivity: Sensitivity
    columns: tuple[Column, ...]
    privacy_unit: str | None = None  # column identifying the person (or household, ...) a row is about
    one_row_per_unit: bool = False  # true when every privacy unit has exactly one row
    policy: Policy = field(default_factory=Policy)
    engine: str = "arrow"  # "arrow" (``file``, memory-mapped) or "spark" (Parquet at ``location``)
    location: str | None = None  # spark: the Parquet directory as the cluster names it (s3a://, hdfs://, /path)
    # Imported datasets (``saferoom.importer``): the content hash of the current version's file(s) and the
    # SHA-256 of the declaration it was imported under; None for generated or hand-written entries.
    version: str | None = None
    declaration_hash: str | None = None
    mock: MockSpec | None = None  # how DP mock data is synthesised (None: every column on its own)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidRequest(f"dataset name {self.name!r} must match {_NAME.pattern}")
        if self.engine not in ENGINES:
            raise InvalidRequest(f"dataset {self.name!r}: engine must be one of {', '.join(sorted(ENGINES))}")
        if (self.engine == "spark") != (self.location is not None):
            raise InvalidRequest(f"dataset {self.name!r}: a location is given exactly for spark datasets")
        if self.location is not None and not _LOCATION.match(self.location):
            raise InvalidRequest(f"dataset {self.name!r}: location must be an absolute path or a cluster URI")
        if self.sensitivity not in ("public", "personal"):
            raise InvalidRequest(f"dataset {self.name!r}: sensitivity must be public or personal")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise InvalidRequest(f"dataset {self.name!r}: duplicate column names")
        if self.sensitivity == "personal" and self.privacy_unit not in names:
            raise InvalidRequest(f"dataset {self.name!r}: a personal dataset must name its privacy unit column")
        if "/" in self.file or "\\" in self.file or self.file.startswith("."):
            raise InvalidRequest(f"dataset {self.name!r}: file must be a plain file name")

    @property
    def is_public(self) -> bool:
        return self.sensitivity == "public"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise InvalidRequest(f"dataset {self.name!r} has no column {name!r}")

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        if self.engine == "arrow":  # the default: catalogs without Spark datasets stay as they were
            del data["engine"], data["location"]
        for key in ("version", "declaration_hash"):
            if data[key] is None:
                del data[key]
        del data["mock"]
        if self.mock is not None:
            data["mock"] = self.mock.to_data()
        data["columns"] = [{k: _stored(c, k, v) for k, v in asdict(c).items() if v is not None} for c in self.columns]
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> DatasetInfo:
        columns = tuple(
            Column(**{**c, **_read_bounds(c), "categories": tuple(c["categories"]) if c.get("categories") else None})
            for c in data["columns"]
        )
        mock = MockSpec.from_data(data["mock"]) if data.get("mock") is not None else None
        return cls(**{**data, "columns": columns, "policy": Policy(**data.get("policy", {})), "mock": mock})


def _stored(column: Column, key: str, value: Any) -> Any:
    """A column field as catalog.json holds it: lists for tuples, timestamp bounds as text."""
    if key in ("min", "max") and column.type == "timestamp":
        return timestamp_text(value)
    return list(value) if isinstance(value, tuple) else value


def _read_bounds(column: dict[str, Any]) -> dict[str, Any]:
    """The bounds of a timestamp column in catalog.json ("YYYY-MM-DD HH:MM:SS") as seconds."""
    if column.get("type") != "timestamp":
        return {}
    bounds = {}
    for key in ("min", "max"):
        if column.get(key) is not None:
            try:
                bounds[key] = float(timestamp_seconds(column[key]))
            except ValueError:
                raise InvalidRequest(
                    f'column {column.get("name")!r}: {key} of a timestamp is written "YYYY-MM-DD HH:MM:SS" (years 1 '
                    f"to 9999, no time zone), not {str(column[key])[:40]!r}"
                ) from None
    return bounds


@dataclass(frozen=True)
class Manifest:
    """All datasets of a data directory."""

    name: str
    datasets: dict[str, DatasetInfo]
    seed: int | None = None
    scale: int | None = None

    def dataset(self, name: str) -> DatasetInfo:
        try:
            return self.datasets[name]
        except (KeyError, TypeError):
            raise DatasetNotFound(f"no dataset named {str(name)[:80]!r}") from None

    def to_data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "seed": self.seed,
            "scale": self.scale,
            "datasets": {name: info.to_data() for name, info in self.datasets.items()},
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise InvalidRequest(f"unsupported catalog format {data.get('format')!r}")
        datasets = {name: DatasetInfo.from_data(d) for name, d in data["datasets"].items()}
        return cls(name=data["name"], datasets=datasets, seed=data.get("seed"), scale=data.get("scale"))

    def save(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_data(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidRequest(f"no {MANIFEST_NAME} in the data directory") from None
        return cls.from_data(data)
