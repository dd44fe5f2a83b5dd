"""saferoom.cli."""
