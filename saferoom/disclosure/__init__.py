"""saferoom.disclosure."""
