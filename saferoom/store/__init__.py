"""saferoom.store."""
