"""twinplume streaming package."""
