"""Checkers of spec values: ``check(value, key)`` returns the value normalised or raises
``InvalidConfig`` whose ``field`` is ``key`` (workload keys, training knobs)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from autopeft.errors import InvalidConfig


def integer(low: int, high: int | None = None) -> Callable[[Any, str], int]:
    """An integer (an integral float is accepted) in ``[low, high]`` (``high`` None: no bound)."""

    def check(value: Any, key: str) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not float(value).is_integer()
        ):
            raise InvalidConfig(f"{key} must be an integer, got {value!r}", field=key)
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise InvalidConfig(f"{key} must be {bounds}, got {value!r}", field=key)
        return int(value)

    return check


def number(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Callable[[Any, str], float]:
    """A number (not NaN) between ``low`` and ``high`` (None: no bound), ends open as told."""

    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise InvalidConfig(f"{key} must be a number, got {value!r}", field=key)
        too_low = value <= low if open_low else value < low
        too_high = high is not None and (value >= high if open_high else value > high)
        if too_low or too_high:
            lo = "(" if open_low else "["
            hi = ")" if open_high else "]"
            raise InvalidConfig(
                f"{key} must be in {lo}{low}, {high if high is not None else 'inf'}"
                f"{hi}, got {value!r}",
                field=key,
            )
        return float(value)

    return check


def choice(options: tuple[str, ...]) -> Callable[[Any, str], str]:
    """One of ``options``."""

    def check(value: Any, key: str) -> str:
        if value not in options:
            raise InvalidConfig(f"{key} must be one of {list(options)}, got {value!r}", field=key)
        return value

    return check


def optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """None, or what ``check`` accepts."""
    return lambda value, key: None if value is None else check(value, key)


def string(value: Any, key: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise InvalidConfig(f"{key} must be a non-empty string, got {value!r}", field=key)
    return value
