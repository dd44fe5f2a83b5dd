"""A data owner's path into the catalog: read a source, check it against a declaration, publish a version."""

from saferoom.importer.dataset_import import ImportResult, import_dataset
from saferoom.importer.declaration import FROM_DATA_MARK, Declaration, DeclarationError, load_declaration
from saferoom.importer.propose import WARNING, propose_declaration
from saferoom.importer.retention import DEFAULT_KEEP, Collected, Decision, Kept, collect
from saferoom.importer.sources import Source, SourceError, SourceKind, open_source
from saferoom.importer.validate import ImportRefused, Issue, ValidationReport
from saferoom.importer.versions import Version, history

__all__ = [
    "DEFAULT_KEEP",
    "FROM_DATA_MARK",
    "WARNING",
    "Collected",
    "Decision",
    "Declaration",
    "DeclarationError",
    "ImportRefused",
    "ImportResult",
    "Issue",
    "Kept",
    "Source",
    "SourceError",
    "SourceKind",
    "ValidationReport",
    "Version",
    "collect",
    "history",
    "import_dataset",
    "load_declaration",
    "open_source",
    "propose_declaration",
]
