"""saferoom.server."""
