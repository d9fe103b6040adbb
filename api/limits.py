"""Bounds on what a request may hold, so no input can cost the server more than a bounded amount.

Free-form JSON (``space``, ``workload``, ``optimizer.options``, ...) is walked once: its depth,
the items of each list / mapping, the length of strings and keys are capped, and numbers must be
finite (Python's JSON parser accepts ``NaN`` and ``Infinity``; they are refused here instead of
being stored as null). A whole study spec is capped in serialised size, so listing studies stays
cheap. Violations raise ``ValueError`` naming the dotted path, which the schemas turn into a 422.

Names shown to other people or in the dashboard (study, objective, dataset and token names) must be
printable: no control, bidi-override or zero-width characters (``str.isprintable``).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 8  # nesting of lists / mappings inside one free-form field
MAX_ITEMS = 512  # entries of one list or mapping
MAX_STRING = 4096  # characters of one string value
MAX_KEY = 200  # characters of one mapping key
MAX_SPEC_BYTES = 64 * 1024  # a whole study spec, as stored JSON


class LimitError(ValueError):
    def __init__(self, message: str, path: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def check_json(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise :class:`LimitError` unless ``value`` is bounded JSON with finite numbers only."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LimitError(f"numbers must be finite, got {value!r}", path)
        return
    if isinstance(value, int):
        if abs(value) > 2**63 - 1:
            raise LimitError("integers must fit in 64 bits", path)
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise LimitError(
                f"strings are limited to {MAX_STRING} characters (got {len(value)})", path
            )
        return
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels", path)
        if len(value) > MAX_ITEMS:
            raise LimitError(
                f"at most {MAX_ITEMS} entries per list or mapping (got {len(value)})", path
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or len(key) > MAX_KEY:
                    raise LimitError(f"keys must be strings of at most {MAX_KEY} characters", path)
                check_json(item, _join(path, key), depth + 1)
        else:
            for i, item in enumerate(value):
                check_json(item, _join(path, i), depth + 1)
        return
    raise LimitError(f"unsupported value of type {type(value).__name__}", path)


def check_spec_size(spec: dict[str, Any]) -> None:
    size = len(json.dumps(spec, separators=(",", ":")))
    if size > MAX_SPEC_BYTES:
        biggest = max(spec, key=lambda k: len(json.dumps(spec[k], separators=(",", ":"))))
        raise LimitError(
            f"the study spec is {size} bytes as JSON, more than {MAX_SPEC_BYTES}; its largest "
            f"part is {biggest!r}",
            biggest,
        )


def check_name(value: str, what: str = "name") -> str:
    if not value.isprintable():
        raise ValueError(
            f"{what} must hold printable characters only (no control, bidi or zero-width "
            "characters)"
        )
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with spaces")
    return value
