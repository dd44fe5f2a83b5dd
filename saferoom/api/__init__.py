"""What algorithm code sees: ``ctx``, opaque tables, expressions and aggregates. Nothing here holds data."""

from saferoom.api.expressions import AggregateExpr, Expr, When
from saferoom.api.namespace import Context, export_outputs, namespace, public_attributes
from saferoom.api.table import Grouped, Model, Table

__all__ = [
    "AggregateExpr",
    "Context",
    "Expr",
    "Grouped",
    "Model",
    "Table",
    "When",
    "export_outputs",
    "namespace",
    "public_attributes",
]
