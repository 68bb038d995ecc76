"""The error every layer raises for bad input (no torch here: the report and the claim checks
raise it too)."""


class ConfigError(ValueError):
    """Bad user input, reported as one line before any model is loaded."""
