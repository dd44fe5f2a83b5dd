"""saferoom.api."""
