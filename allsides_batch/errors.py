"""The one exception type users see: the CLI prints its message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input or configuration that the user can fix; the message says how."""


class ConfigError(UserError, ValueError):
    """A config field holds a value it cannot take; the message names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")
