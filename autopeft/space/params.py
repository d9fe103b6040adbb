"""Parameter types of a search space.

A :class:`Param` is one searchable dimension. Kinds:

``float``        continuous in [low, high], optionally log-scaled;
``int``          integer in [low, high], optionally log-scaled;
``ordinal``      a choice among numeric (or boolean) values with a natural order, encoded as
                 one number ``index / (k - 1)``;
``categorical``  a choice among unordered values (strings), encoded one-hot.

Every kind maps a value to a slice of the unit hypercube (``to_unit``) and back
(``from_unit``), so optimisers can work on ``[0, 1]^d`` while configs stay readable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autopeft.errors import InvalidConfig

KINDS = ("float", "int", "ordinal", "categorical")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    """One dimension of a search space.

    ``active_if`` is a tuple of ``(parent_name, allowed_values)``: the parameter exists in a
    config only when every parent holds one of its allowed values. ``group`` and ``layer``
    identify per-layer parameters (``group="lora.rank", layer=3`` for ``lora.rank.3``).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    default: Any = None
    active_if: tuple[tuple[str, tuple], ...] = ()
    group: str | None = None
    layer: int | None = None
    _numeric_choices: tuple = field(default=(), repr=False, compare=False)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidConfig(
                f"unknown parameter type {self.kind!r} (one of {', '.join(KINDS)})", self.name
            )
        if self.kind in ("float", "int"):
            if self.low is None or self.high is None:
                raise InvalidConfig("needs both 'low' and 'high'", self.name)
            if not (_is_number(self.low) and _is_number(self.high)):
                raise InvalidConfig("'low' and 'high' must be numbers", self.name)
            if self.low > self.high:
                raise InvalidConfig(f"'low' ({self.low}) is above 'high' ({self.high})", self.name)
            if self.kind == "int" and (int(self.low) != self.low or int(self.high) != self.high):
                raise InvalidConfig("an int parameter needs integer 'low' and 'high'", self.name)
            if self.log and self.low <= 0:
                raise InvalidConfig("a log-scaled parameter needs 'low' > 0", self.name)
        else:
            if len(self.choices) == 0:
                raise InvalidConfig("'choices' must be a non-empty list", self.name)
            if len(set(map(_hashable, self.choices))) != len(self.choices):
                raise InvalidConfig("'choices' has duplicates", self.name)
            if self.kind == "ordinal":
                object.__setattr__(self, "_numeric_choices", tuple(float(c) for c in self.choices))
        if self.default is None:
            object.__setattr__(self, "default", self._first_value())
        else:
            object.__setattr__(self, "default", self.check(self.default))

    def _first_value(self) -> Any:
        if self.kind == "float":
            return float(self.low)
        if self.kind == "int":
            return int(self.low)
        return self.choices[0]

    # ------------------------------------------------------------------ properties
    @property
    def width(self) -> int:
        """Number of encoded dimensions (one-hot width for categorical parameters)."""
        return len(self.choices) if self.kind == "categorical" else 1

    @property
    def n_levels(self) -> int | None:
        """Number of distinct values, or ``None`` for a continuous parameter."""
        if self.kind == "float":
            return None
        if self.kind == "int":
            return int(self.high) - int(self.low) + 1
        return len(self.choices)

    @property
    def is_discrete(self) -> bool:
        return self.kind != "float"

    def values(self) -> list:
        """All values of a discrete parameter, in order."""
        if self.kind == "float":
            raise ValueError(f"{self.name} is continuous")
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        return list(self.choices)

    def is_active(self, config: dict) -> bool:
        for parent, allowed in self.active_if:
            if parent not in config or config[parent] not in allowed:
                return False
        return True

    # ------------------------------------------------------------------ values
    def check(self, value: Any) -> Any:
        """Return the normalised value or raise :class:`InvalidConfig` naming this parameter."""
        if self.kind == "float":
            if not _is_number(value):
                raise InvalidConfig(
                    f"expected a number, got {type(value).__name__} {value!r}", self.name
                )
            value = float(value)
            if not math.isfinite(value) or not (self.low <= value <= self.high):
                raise InvalidConfig(f"{value!r} is outside [{self.low}, {self.high}]", self.name)
            return value
        if self.kind == "int":
            if not _is_number(value) or int(value) != value:
                raise InvalidConfig(
                    f"expected an integer, got {type(value).__name__} {value!r}", self.name
                )
            value = int(value)
            if not (self.low <= value <= self.high):
                raise InvalidConfig(
                    f"{value!r} is outside [{int(self.low)}, {int(self.high)}]", self.name
                )
            return value
        for choice in self.choices:
            if _same_choice(choice, value):
                return choice
        raise InvalidConfig(f"{value!r} is not one of {list(self.choices)}", self.name)

    def index(self, value: Any) -> int:
        for i, choice in enumerate(self.choices):
            if _same_choice(choice, value):
                return i
        raise InvalidConfig(f"{value!r} is not one of {list(self.choices)}", self.name)

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "float":
            if self.log:
                return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
            return float(rng.uniform(self.low, self.high))
        if self.kind == "int":
            if self.log:
                u = rng.uniform(
                    math.log(self.low - 0.5 if self.low > 0.5 else self.low),
                    math.log(self.high + 0.5),
                )
                return int(min(self.high, max(self.low, round(math.exp(u)))))
            return int(rng.integers(int(self.low), int(self.high) + 1))
        return self.choices[int(rng.integers(len(self.choices)))]

    # ------------------------------------------------------------------ encoding
    def to_unit(self, value: Any) -> list[float]:
        """Encode a valid value as ``width`` numbers in [0, 1]."""
        if self.kind in ("float", "int"):
            lo, hi, v = float(self.low), float(self.high), float(value)
            if hi == lo:
                return [0.0]
            if self.log:
                lo, hi, v = math.log(lo), math.log(hi), math.log(v)
            return [min(1.0, max(0.0, (v - lo) / (hi - lo)))]
        i = self.index(value)
        if self.kind == "ordinal":
            return [i / (len(self.choices) - 1) if len(self.choices) > 1 else 0.0]
        onehot = [0.0] * len(self.choices)
        onehot[i] = 1.0
        return onehot

    def from_unit(self, u: np.ndarray | list[float]) -> Any:
        """Decode ``width`` numbers (any reals; clipped to [0, 1]) to the nearest valid value."""
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if self.kind == "categorical":
            return self.choices[int(np.argmax(u))]
        x = float(u[0])
        if self.kind == "ordinal":
            return self.choices[int(round(x * (len(self.choices) - 1)))]
        lo, hi = float(self.low), float(self.high)
        if self.log:
            v = math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo)))
        else:
            v = lo + x * (hi - lo)
        if self.kind == "int":
            return int(min(hi, max(lo, round(v))))
        return float(min(hi, max(lo, v)))


def _hashable(value: Any) -> Any:
    return (type(value) is bool, value)


def _same_choice(choice: Any, value: Any) -> bool:
    """Choices compare by value, but a bool never equals a number (True is not 1)."""
    if isinstance(choice, bool) or isinstance(value, bool):
        return isinstance(choice, bool) and isinstance(value, bool) and choice == value
    if _is_number(choice) and _is_number(value):
        return float(choice) == float(value)
    return type(choice) is type(value) and choice == value
