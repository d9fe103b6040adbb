"""What a PEFT method is: its config keys (:class:`Key`) and its :class:`Method` record.

A method module (``lora.py``, ``bottleneck.py``, ``prefix.py``, ``ia3.py``) defines its keys,
its spec (a frozen dataclass of the parsed values), its preflight check, its injection and its
exact parameter count, and hands them to :mod:`autopeft.peft.registry` as one :class:`Method`.

Method modules stay free of torch at import time: the search space imports the registry for
the keys (``import autopeft.space`` must stay light). Torch modules live in the injection
sites (:mod:`autopeft.peft.host`, :mod:`autopeft.peft.attention`), imported inside ``inject``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import InvalidConfig

#: LoRA target standing for every logical projection the model has (ffn_gate only on gated MLPs)
ALL_TARGETS = "all"


@dataclass(frozen=True)
class Key:
    """One config field of a method, ``{method}.{field}`` (``{method}.{field}.{i}`` per layer).

    ``check(value, where)`` returns the normalised value or raises :class:`InvalidConfig` naming
    ``where``; ``default`` is the value when the config leaves the key out (a per-layer key
    left out is 0 on every layer).
    """

    check: Callable[[Any, str], Any]
    per_layer: bool = False
    default: Any = None


@dataclass(frozen=True)
class Method:
    """One PEFT method, as listed in :data:`autopeft.peft.registry.METHODS`.

    * ``keys``: field name -> :class:`Key`;
    * ``build(values, layers)``: the method's spec from its checked values (every field present;
      per-layer ones as a tuple over layers, already 0 where the ``layers.{i}`` mask is off) and
      the mask; the spec's ``active`` says whether it puts any parameter in the model;
    * ``check(model, mmap, spec)``: raise :class:`InvalidConfig` if the model cannot take an
      active spec (called for every method before any model is touched);
    * ``inject(model, mmap, spec)``: add the method's modules to the model (frozen base);
    * ``count(spec, desc)``: its exact number of parameters from an ``ArchDesc`` alone;
    * ``inject_order``: ``apply_peft`` injects by ascending order (it fixes which random
      draws initialise which module, so a seed gives the same weights).
    """

    name: str
    keys: Mapping[str, Key]
    build: Callable[[Mapping[str, Any], tuple[bool, ...]], Any]
    check: Callable[..., None]
    inject: Callable[..., None]
    count: Callable[[Any, Any], int]
    inject_order: int


# ---------------------------------------------------------------------------- value checks
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_size(value: Any, where: str) -> int:
    """An integer >= 0 (a rank, a bottleneck size, a prefix length)."""
    if not _is_number(value) or int(value) != value:
        raise InvalidConfig(f"expected an integer size, got {value!r}", where)
    if value < 0:
        raise InvalidConfig(f"a size must be >= 0, got {value!r}", where)
    return int(value)


def check_positive(value: Any, where: str) -> float:
    if not _is_number(value) or value <= 0:
        raise InvalidConfig(f"expected a number > 0, got {value!r}", where)
    return float(value)


def check_unit(value: Any, where: str) -> float:
    """A number in [0, 1) (a dropout probability)."""
    if not _is_number(value) or not (0 <= value < 1):
        raise InvalidConfig(f"expected a number in [0, 1), got {value!r}", where)
    return float(value)


def target_checker(
    allowed: tuple[str, ...], allow_empty: bool, all_alias: bool = False
) -> Callable[[Any, str], str]:
    """A check for a comma-separated target list over ``allowed``; it returns the canonical
    string (targets in ``allowed`` order), or :data:`ALL_TARGETS` alone when ``all_alias``."""

    def check(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise InvalidConfig(
                f"expected a comma-separated string such as 'q,v', got {value!r}", where
            )
        names = [n.strip() for n in value.split(",") if n.strip()]
        if all_alias and ALL_TARGETS in names:
            if names != [ALL_TARGETS]:
                raise InvalidConfig(
                    f"{ALL_TARGETS!r} (every projection of the model) stands alone, got {value!r}",
                    where,
                )
            return ALL_TARGETS
        if not names and not allow_empty:
            raise InvalidConfig("needs at least one target", where)
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise InvalidConfig(f"unknown target(s) {unknown}; known: {', '.join(allowed)}", where)
        if len(set(names)) != len(names):
            raise InvalidConfig(f"duplicate targets in {value!r}", where)
        return ",".join(n for n in allowed if n in names)  # canonical order

    return check


def choice_checker(allowed: tuple[str, ...], what: str) -> Callable[[Any, str], str]:
    """A check for one of ``allowed`` (``what`` names the kind in the error)."""

    def check(value: Any, where: str) -> str:
        if value not in allowed:
            raise InvalidConfig(f"unknown {what} {value!r}; known: {', '.join(allowed)}", where)
        return value

    return check


def from_values(spec_type: Callable[..., Any]) -> Callable[[Mapping[str, Any], Any], Any]:
    """The ``build`` of a method whose spec's fields are exactly its keys (the mask unused)."""

    def build(values: Mapping[str, Any], layers: tuple[bool, ...]) -> Any:
        return spec_type(**values)

    return build


def split_targets(value: str) -> tuple[str, ...]:
    """``"q,v"`` -> ``("q", "v")``; ``""`` -> ``()``."""
    return tuple(t for t in (s.strip() for s in value.split(",")) if t)


def require(mmap: Any, names: tuple[str, ...], field: str) -> None:
    """Raise :class:`InvalidConfig` naming ``field`` unless every block of the mapped model has
    the logical projections ``names``."""
    for layer in mmap.layers:
        for name in names:
            mmap.proj(layer.index, name, field)
