"""The one error type for input a user can fix: a config value, a path, a cluster too small."""


class ConfigError(ValueError):
    """The message names the field (or file), the value seen, and what is allowed."""
