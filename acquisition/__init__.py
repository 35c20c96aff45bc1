"""twinplume acquisition package."""
