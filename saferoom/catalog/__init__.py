"""saferoom.catalog."""
