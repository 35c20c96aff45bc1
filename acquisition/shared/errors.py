"""Errors shared by every package."""


class ConfigError(ValueError):
    """A configuration (file, options, stored settings) that cannot be used; the message
    names the key or option at fault and what is wrong with it."""
