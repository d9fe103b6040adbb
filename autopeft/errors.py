"""Exceptions shared by every layer of autopeft."""

from __future__ import annotations


class InvalidConfig(ValueError):
    """A space, config, request or data file is invalid.

    ``field`` names the offending key (dotted path for nested YAML, e.g.
    ``peft.lora.rank``, or a config key such as ``lora.rank.3``); the message always
    contains it so that a user reading only ``str(err)`` knows what to fix.
    """

    def __init__(self, message: str, field: str | None = None):
        if field and field not in message:
            message = f"{field}: {message}"
        super().__init__(message)
        self.field = field
        self.message = message
