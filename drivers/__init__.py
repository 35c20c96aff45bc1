"""twinplume drivers package."""
