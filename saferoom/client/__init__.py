"""saferoom.client."""
