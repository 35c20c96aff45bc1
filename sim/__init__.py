"""twinplume sim package."""
