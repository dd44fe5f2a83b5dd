"""Publishing DP mock data: who may, what it costs, its audit record, and what each role may know about it.

An operator sets a dataset's *publication budget* (``saferoom mock budget``), separate from every researcher's
budget, and publishes (``saferoom mock publish DATASET --epsilon 1``): the server measures the real data
(``saferoom.mock.measure``), charges the epsilon to the publication budget and stores the post-processed
measurements together with one ``mock_published`` record, in one ``AuditLog.commit`` (no charge without its
record, no record without its charge). Publishing beyond the budget is refused and nothing is charged.

A publication is bound to the SHA-256 of the dataset file it measured: when the file changes, the mock is
stale and downloads fall back to the declared-domain generator (labelled so) until an operator publishes
again; nothing is re-measured or charged without an operator asking. Downloads sample rows from the stored
measurements, deterministically per (version, seed, rows). Public datasets' mock data is their real rows
(they may be released row by row); a dataset without a publication gets the declared-domain fallback.

What a researcher sees of a publication (``MockInfo``) is the public structure, the epsilon, the version, the
noisy row count and the fidelity *estimated from the noisy measurements*; the real-vs-mock fidelity and the
file hash are computed from real data without noise and are shown to operators only.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pyarrow as pa

from saferoom.audit import AuditLog, EventType
from saferoom.audit.log import Entry
from saferoom.catalog.catalog import Catalog
from saferoom.catalog.manifest import DatasetInfo
from saferoom.catalog.mock import DEFAULT_MOCK_ROWS, mock_table
from saferoom.errors import FailedPrecondition, InvalidRequest, PermissionDenied
from saferoom.identity import Identity, Role
from saferoom.mock.fidelity import along_structure, estimated_fidelity, measured_fidelity
from saferoom.mock.measure import Measurements, measure
from saferoom.mock.sample import sample
from saferoom.mock.structure import structure_of
from saferoom.store.budgets import (
    MAX_EPSILON_BUDGET,
    Publication,
    PublicationBudget,
    PublicationLedger,
    check_publication,
    epsilon_units,
    epsilon_value,
    format_amount,
)

__all__ = ["FIDELITY_ROWS", "MAX_DOWNLOAD_ROWS", "SAMPLE_CHUNK_ROWS", "MockInfo", "MockKind", "MockService"]

FIDELITY_ROWS = 200_000  # rows of mock data sampled to measure the operator's real-vs-mock fidelity
# Rows one download may ask for: the dataset's own (noisy) row count, or this many if that is fewer.
MIN_DOWNLOAD_CAP = 1_000_000
MAX_DOWNLOAD_ROWS = 100_000_000  # and never more than this
SAMPLE_CHUNK_ROWS = 500_000  # a synthetic download is sampled (and sent) this many rows at a time


class MockKind(StrEnum):
    """Where a dataset's mock data comes from."""

    SYNTHETIC = "synthetic"  # sampled from DP measurements of the real data
    DECLARED_DOMAIN = "declared_domain"  # the fallback: every value uniform over its declared domain
    PUBLIC_ROWS = "public_rows"  # a public dataset: its real rows


@dataclass(frozen=True)
class MockInfo:
    """What a caller may know about a dataset's mock data."""

    dataset: str
    kind: MockKind
    label: str
    version: int = 0
    epsilon: float = 0.0
    delta: float = 0.0
    structure: tuple[str, ...] = ()
    rows: int = 0  # the noisy row count (synthetic), the real count (public), or the fallback's default
    estimated: dict[str, float] = field(default_factory=dict)  # expected TVD per measurement (noisy only)
    note: str = ""
    # Operators only (computed from real data without noise, or about the budget):
    measured: dict[str, float] | None = None  # real vs mock TVD per marginal
    mean_tvd_structure: float | None = None
    budget_epsilon_total: float | None = None
    budget_epsilon_spent: float | None = None
    published_by: str = ""
    dataset_hash: str = ""


def _label(epsilon: float) -> str:
    return f"synthetic (DP, ε={format_amount(epsilon)})"


class MockService:
    """Publication budgets, publications and downloads of mock data (knows nothing of gRPC)."""

    def __init__(self, catalog: Catalog, ledger: PublicationLedger, audit: AuditLog) -> None:
        self._catalog = catalog
        self._ledger = ledger
        self._audit = audit
        self._lock = threading.Lock()  # one publication at a time: measuring is heavy
        self._hashes: dict[str, str] = {}
        self._cache: dict[tuple[str, int], Measurements] = {}
        self._cache_lock = threading.Lock()

    def serve(self, catalog: Catalog) -> None:
        """Measure and describe ``catalog`` (new dataset versions) from now on: a publication of an older version
        no longer matches its dataset's hash, so it is not served (the operator publishes again)."""
        with self._lock, self._cache_lock:  # after a publication in progress; the old mapping goes with its users
            self._catalog = catalog
            self._hashes.clear()

    # -------------------------------------------------------------- who and what

    def _info(self, dataset: str) -> DatasetInfo:
        if not isinstance(dataset, str) or not dataset:
            raise InvalidRequest("name a dataset")
        return self._catalog.info(dataset)  # DatasetNotFound

    def _publishable(self, dataset: str) -> DatasetInfo:
        info = self._info(dataset)
        if info.is_public:
            raise FailedPrecondition(f"{dataset} is public: its mock data is its real rows, nothing to publish")
        if info.engine != "arrow":
            raise FailedPrecondition(f"{dataset} is on the Spark cluster: its mock data is the declared-domain one")
        return info

    @staticmethod
    def _operator(caller: Identity) -> None:
        if not caller.has(Role.OPERATOR):
            raise PermissionDenied(f"{caller.name} is not an operator")

    def dataset_hash(self, dataset: str) -> str:
        """The SHA-256 of the dataset's file as served (computed once: served files never change in place)."""
        with self._cache_lock:
            known = self._hashes.get(dataset)
        if known is not None:
            return known
        digest = hashlib.sha256()
        path = Path(self._catalog.directory) / self._info(dataset).file
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        with self._cache_lock:
            self._hashes[dataset] = digest.hexdigest()
        return digest.hexdigest()

    # -------------------------------------------------------------- budget and publication

    def set_budget(self, dataset: str, epsilon: float, operator: Identity) -> PublicationBudget:
        """Set what publishing mock data of ``dataset`` may spend in all; recorded (``mock_budget_set``)."""
        self._operator(operator)
        self._publishable(dataset)

        def records(budget: PublicationBudget) -> list[Entry]:
            summary = {
                "epsilon_total": epsilon_value(budget.epsilon_total),
                "epsilon_spent": epsilon_value(budget.epsilon_spent),
                "epsilon_remaining": epsilon_value(budget.epsilon_remaining),
            }
            return [(EventType.MOCK_BUDGET_SET, operator.name, operator.role_names, {"dataset": dataset}, summary)]

        return self._audit.commit(self._ledger.setter(dataset, epsilon, operator.name), records)[0]

    def publish(self, dataset: str, epsilon: float, operator: Identity) -> MockInfo:
        """Measure ``dataset`` under ``epsilon``, charge it to the publication budget and store the measurements,
        with its ``mock_published`` record; ``BudgetExhausted`` (nothing charged or stored) beyond the budget."""
        self._operator(operator)
        info = self._publishable(dataset)
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 < epsilon <= MAX_EPSILON_BUDGET:
            raise InvalidRequest(f"epsilon must be a number in (0, {MAX_EPSILON_BUDGET:g}]")
        cost = epsilon_units(float(epsilon), round_up=True)
        structure = structure_of(info)
        with self._lock:
            check_publication(self._ledger.budget(dataset), cost)  # before touching the data; re-checked below
            real = self._catalog.table(dataset)
            measurements = measure(real, info, structure, epsilon_value(cost))
            structure = measurements.structure(structure)  # with its selected tree, if it was selected
            rows = min(max(measurements.total, 1), FIDELITY_ROWS)
            mock = sample(measurements, structure, info, rows, seed=0)
            fidelity = measured_fidelity(real, mock, structure)
            data_hash = self.dataset_hash(dataset)

            def records(result: tuple[Publication, PublicationBudget]) -> list[Entry]:
                publication, after = result
                summary = {
                    "version": publication.version,
                    "epsilon": epsilon_value(publication.epsilon),
                    "delta": 0.0,
                    "structure": list(publication.structure),
                    "measurements": measurements.describe(),
                    "dataset_hash": publication.dataset_hash,
                    "measurements_hash": publication.measurements_hash,
                    "epsilon_total": epsilon_value(after.epsilon_total),
                    "epsilon_remaining": epsilon_value(after.epsilon_remaining),
                }
                objects = {"dataset": dataset, "datasets": [dataset]}
                return [(EventType.MOCK_PUBLISHED, operator.name, operator.role_names, objects, summary)]

            change = self._ledger.publisher(
                dataset, cost, data_hash, structure.describe(), measurements.to_bytes(), fidelity, operator.name
            )
            publication, _ = self._audit.commit(change, records)[0]
        return self.info(dataset, operator, publication)

    # -------------------------------------------------------------- reading

    def _current(self, info: DatasetInfo) -> tuple[Publication | None, str]:
        """The publication mock data is sampled from now (None: fallback), and a note on why not."""
        if info.is_public or info.engine != "arrow":
            return None, ""
        publication = self._ledger.latest(info.name)
        if publication is None:
            return None, "no mock data was published (an operator may: saferoom mock publish)"
        if publication.dataset_hash != self.dataset_hash(info.name):
            return None, (
                f"version {publication.version} was measured on an earlier version of the dataset: "
                "an operator must publish again"
            )
        return publication, ""

    def _measurements(self, publication: Publication) -> Measurements:
        key = (publication.dataset, publication.version)
        with self._cache_lock:
            cached = self._cache.get(key)
        if cached is None:
            if hashlib.sha256(publication.measurements).hexdigest() != publication.measurements_hash:
                raise FailedPrecondition(f"the stored measurements of {publication.dataset} do not match their hash")
            cached = Measurements.from_bytes(publication.measurements)
            with self._cache_lock:
                self._cache = {key: cached, **{k: v for k, v in self._cache.items() if k[0] != key[0]}}
        return cached

    def info(self, dataset: str, caller: Identity, publication: Publication | None = None) -> MockInfo:
        """What ``caller`` may know about ``dataset``'s mock data (operators also: budget, real-vs-mock TVD)."""
        info = self._info(dataset)
        operator = caller.has(Role.OPERATOR)
        if info.is_public and info.engine == "arrow":  # a public Spark dataset gets the fallback: no file here
            return MockInfo(dataset, MockKind.PUBLIC_ROWS, "public: the real rows", rows=info.rows)
        note = ""
        if publication is None:
            publication, note = self._current(info)
        budget = self._ledger.budget(dataset) if operator and info.engine == "arrow" else None
        extra: dict[str, object] = {}
        if budget is not None:
            extra = {
                "budget_epsilon_total": epsilon_value(budget.epsilon_total),
                "budget_epsilon_spent": epsilon_value(budget.epsilon_spent),
            }
        if publication is None:
            rows = max(1, min(info.rows, DEFAULT_MOCK_ROWS))
            label = "declared-domain fallback (values uniform over each column's public domain, independent)"
            return MockInfo(dataset, MockKind.DECLARED_DOMAIN, label, rows=rows, note=note, **extra)  # type: ignore[arg-type]
        measurements = self._measurements(publication)
        epsilon = epsilon_value(publication.epsilon)
        if operator:
            extra |= {
                "measured": dict(publication.fidelity),
                "mean_tvd_structure": round(
                    along_structure(publication.fidelity, measurements.structure(structure_of(info))), 4
                ),
                "published_by": publication.published_by,
                "dataset_hash": publication.dataset_hash,
            }
        return MockInfo(
            dataset,
            MockKind.SYNTHETIC,
            _label(epsilon),
            version=publication.version,
            epsilon=epsilon,
            structure=publication.structure,
            rows=measurements.total,
            estimated=estimated_fidelity(measurements),
            note=(
                f"structure selected privately from the data (MST, ε={format_amount(measurements.selection_epsilon)} "
                "of the publication's)"
                if measurements.edges
                else ""
            ),
            **extra,  # type: ignore[arg-type]
        )

    def download_cap(self, dataset: str, caller: Identity) -> int:
        """The most rows one download of ``dataset`` may ask for: its (noisy) row count, at least 1M."""
        return min(MAX_DOWNLOAD_ROWS, max(MIN_DOWNLOAD_CAP, self.info(dataset, caller).rows))

    def download(self, dataset: str, rows: int, seed: int, caller: Identity) -> tuple[MockInfo, Iterator[pa.Table]]:
        """Mock rows of ``dataset`` (``rows`` 0: the noisy row count, or the fallback's default), as tables of at
        most ``SAMPLE_CHUNK_ROWS`` made as they are read (a 10M-row mock is never whole in the server's memory),
        deterministic per (publication version, seed, rows). Raises InvalidRequest beyond ``download_cap``."""
        info = self._info(dataset)
        described = self.info(dataset, caller)
        cap = self.download_cap(dataset, caller)
        if not 0 <= rows <= cap:
            raise InvalidRequest(f"rows must be between 0 and {cap:,} for {dataset} (0: its {described.rows:,})")
        n = min(rows or described.rows, cap)
        if described.kind is MockKind.PUBLIC_ROWS:
            public = self._catalog.table(dataset).slice(0, n)
            return described, (public.slice(i, SAMPLE_CHUNK_ROWS) for i in range(0, max(n, 1), SAMPLE_CHUNK_ROWS))
        if described.kind is MockKind.DECLARED_DOMAIN:
            return described, iter([mock_table(info, min(n, MIN_DOWNLOAD_CAP), seed)])
        publication, _ = self._current(info)
        assert publication is not None
        measurements, structure = self._measurements(publication), structure_of(info)
        key = (publication.version << 64) | seed

        def chunks() -> Iterator[pa.Table]:
            for first in range(0, max(n, 1), SAMPLE_CHUNK_ROWS):
                size = min(SAMPLE_CHUNK_ROWS, n - first)
                # Chunk i is its own sample, seeded by (version, seed, i): the first is what a download of up to
                # one chunk always was; identifiers continue where the rows before may have ended.
                chunk_key = key | ((first // SAMPLE_CHUNK_ROWS) << 128)
                yield sample(measurements, structure, info, size, seed=chunk_key, first_id=first + 1)

        return described, chunks()
