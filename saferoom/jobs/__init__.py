"""saferoom.jobs."""
