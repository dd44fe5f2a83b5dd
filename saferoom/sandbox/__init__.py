"""saferoom.sandbox."""
