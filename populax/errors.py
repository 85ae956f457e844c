"""The one exception type a user's mistake raises."""


class ConfigError(ValueError):
    """A setting a user gave is invalid.

    The message is one sentence that names the setting and says what is
    allowed; the CLI prints it without a traceback and exits with code 2.
    """
