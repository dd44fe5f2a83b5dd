"""The catalog: dataset manifest, memory-mapped Arrow datasets, the synthetic city and mock data."""

from saferoom.catalog.catalog import Catalog, schema_of
from saferoom.catalog.generate import generate_catalog
from saferoom.catalog.manifest import Column, DatasetInfo, Manifest, Policy
from saferoom.catalog.mock import mock_ipc_bytes, mock_table, write_mock_catalog

__all__ = [
    "Catalog",
    "Column",
    "DatasetInfo",
    "Manifest",
    "Policy",
    "generate_catalog",
    "mock_ipc_bytes",
    "mock_table",
    "schema_of",
    "write_mock_catalog",
]
