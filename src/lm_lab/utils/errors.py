"""The one error type for bad input (config values, files), so entry points can print it as a
single line that says what to change instead of a traceback."""


class ConfigError(ValueError):
    """A config key or input file is wrong; the message names it and says what to change."""
