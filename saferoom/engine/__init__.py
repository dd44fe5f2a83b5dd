"""The engine: the plan language and its execution over Arrow (pyarrow compute + Acero)."""

from saferoom.engine import plan
from saferoom.engine.arrow import ArrowEngine, Engine, Execution
from saferoom.engine.optimize import output_columns, prune_columns

__all__ = ["ArrowEngine", "Engine", "Execution", "output_columns", "plan", "prune_columns"]
