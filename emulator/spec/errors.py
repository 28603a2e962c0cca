"""The one error type a user sees for bad input.

Every check in the validation gate raises :class:`ConfigError` with the dotted key the user typed,
the value given and what is allowed; the CLI prints ``str(error)`` as one line and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad configuration value: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={value}: {allowed}")


def require(condition: bool, key: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, value, allowed)


def require_positive(value: float, key: str) -> None:
    require(value > 0, key, value, "must be > 0")


def require_non_negative(value: float, key: str) -> None:
    require(value >= 0, key, value, "must be >= 0")


def require_fraction(value: float, key: str) -> None:
    require(0.0 < value <= 1.0, key, value, "must be in (0, 1]")
