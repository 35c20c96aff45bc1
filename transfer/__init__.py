"""twinplume transfer package."""
