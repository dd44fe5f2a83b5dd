"""saferoom.engine."""
