"""The failure catalogue at the pipeline: once the engine started on data, a job fails only with the fixed error of
its kind, whatever the engine said; before that, errors keep their (data-independent) messages.

A real pipeline (both worker pools forked, the real sandbox builds the plans); only the engine pool is replaced,
at its boundary, by a recording fake that fails as each test asks: exactly what the real pool raises after an
engine worker reported an error (``error_from_code`` of the worker's code and text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from saferoom.catalog.manifest import Manifest
from saferoom.config import WorkerLimits
from saferoom.errors import (
    EngineError,
    EngineFailed,
    EngineLimitExceeded,
    EngineTimeout,
    EngineUnavailable,
    InvalidPlan,
    JobCancelled,
    JobTimeout,
    LimitExceeded,
    ReleaseRefused,
    Unavailable,
    UserCodeError,
    WorkerCrashed,
    error_from_code,
)
from saferoom.jobs.failures import EnginePhase, engine_error
from saferoom.jobs.pipeline import Pipeline
from saferoom.packages import load_package
from saferoom.sandbox.pool import Reply

PACKAGES = Path(__file__).resolve().parents[1] / "fixtures" / "packages"
SECRET = "5718236491248"
# What the engine says when a cast of one person's income fails (saferoom.engine.arrow quotes the first line).
LEAKY = f"the engine could not execute the plan: Float value {SECRET}.000000 was truncated converting to int64"


class FaultyEngine:
    """Stands in for the engine worker pool: records each task it is given and fails it with ``fault``, or
    answers ``reply``."""

    def __init__(self, fault: BaseException | None = None, reply: Reply | None = None) -> None:
        self.fault = fault
        self.reply = reply
        self.calls: list[str] = []

    def run(
        self, task: str, request: dict[str, Any], blobs: Sequence[bytes] = (), *, limits: Any = None, cancel: Any = None
    ) -> Reply:
        self.calls.append(task)
        if self.fault is not None:
            raise self.fault
        assert self.reply is not None
        return self.reply

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def pipeline(catalog_dir: Path) -> Iterator[Pipeline]:
    limits = WorkerLimits(memory_mib=512, cpu_seconds=10, wall_seconds=10.0, output_mib=4)
    engine = WorkerLimits(memory_mib=2048, cpu_seconds=30, wall_seconds=30.0, output_mib=16)
    p = Pipeline(catalog_dir, Manifest.load(catalog_dir), limits, engine)
    try:
        yield p
    finally:
        p.close()


def _fail_with(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, engine: FaultyEngine, package: str) -> Exception:
    monkeypatch.setattr(pipeline, "_engine", engine)
    with pytest.raises(Exception) as caught:
        pipeline.run(load_package(PACKAGES / package), {})
    return caught.value


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (error_from_code(InvalidPlan.code, LEAKY), EngineFailed),
        (WorkerCrashed(LEAKY), EngineFailed),
        (UserCodeError(LEAKY), EngineFailed),
        (ReleaseRefused(LEAKY), EngineFailed),
        (pa.ArrowInvalid(LEAKY), EngineFailed),
        (ZeroDivisionError(LEAKY), EngineFailed),
        (JobTimeout(LEAKY), EngineTimeout),
        (LimitExceeded(LEAKY), EngineLimitExceeded),
        (Unavailable(LEAKY), EngineUnavailable),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, Exception) else x.__name__,
)
def test_an_engine_phase_fault_leaves_with_the_fixed_error_of_its_kind(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, fault: Exception, expected: type[EngineError]
) -> None:
    engine = FaultyEngine(fault)
    error = _fail_with(pipeline, monkeypatch, engine, "small_cells")
    assert engine.calls, "the fault must be raised by the engine, after the sandbox and the release rewrite"
    assert type(error) is expected
    assert error.message == expected.fixed_message  # type: ignore[attr-defined]
    assert SECRET not in str(error) and SECRET not in repr(error) and SECRET not in error.message  # type: ignore[attr-defined]
    assert error.__cause__ is fault  # kept for the server's diagnostic log only


def test_a_fault_after_the_engine_answered_is_fixed_too(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _fail_with(pipeline, monkeypatch, FaultyEngine(reply=Reply({"outputs": "not a list"}, [])), "small_cells")
    assert isinstance(error, EngineFailed) and error.message == EngineFailed.fixed_message


def test_cancelling_in_the_engine_phase_stays_cancelled(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    error = _fail_with(pipeline, monkeypatch, FaultyEngine(JobCancelled(LEAKY)), "small_cells")
    assert isinstance(error, JobCancelled) and error.code == "cancelled"
    assert error.message == "the job was cancelled"


def test_an_error_before_any_engine_work_keeps_its_message(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FaultyEngine(InvalidPlan(LEAKY))
    error = _fail_with(pipeline, monkeypatch, engine, "row_leak")  # refused by the release rewrite
    assert engine.calls == []
    assert isinstance(error, ReleaseRefused) and not isinstance(error, EngineError)
    assert "incomes" in error.message


def test_the_phase_converts_only_after_it_started() -> None:
    with pytest.raises(InvalidPlan, match="before"), EnginePhase():
        raise InvalidPlan("before")
    with pytest.raises(EngineFailed) as caught, EnginePhase() as phase:
        phase.start()
        raise InvalidPlan(LEAKY)
    assert SECRET not in str(caught.value)
    fixed = EngineTimeout()
    with pytest.raises(EngineTimeout) as again, EnginePhase() as phase:  # nested phases: raised once, unchanged
        phase.start()
        raise fixed
    assert again.value is fixed and engine_error(fixed) is fixed


def test_an_engine_error_drops_any_text_it_is_rebuilt_with() -> None:
    for cls in (EngineFailed, EngineTimeout, EngineLimitExceeded, EngineUnavailable):
        rebuilt = error_from_code(cls.code, LEAKY)  # e.g. by a client reading the code back
        assert type(rebuilt) is cls and rebuilt.message == cls.fixed_message and SECRET not in str(rebuilt)
