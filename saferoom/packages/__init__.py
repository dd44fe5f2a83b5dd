"""saferoom.packages."""
