"""Parsing the PEFT keys of a flat config (``docs/config_format.md``) into a :class:`PeftSpec`.

Values are checked by :func:`autopeft.peft.registry.check_peft_value` (the rules a search space
uses too); this module adds what needs the layer count: indices in range, and a field given in
either its shared form (``lora.rank``) or its per-layer form (``lora.rank.3``), never both.
Non-PEFT keys (``lr``, ``epochs``...) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.peft.registry import MASK, METHODS, check_peft_value, is_peft_key


@dataclass(frozen=True)
class PeftSpec:
    """A parsed PEFT config: the placement mask and each method's spec, ``spec["lora"]``.

    Per-layer sizes already have the mask applied (a layer whose ``layers.{i}`` is false has
    size 0 for every method)."""

    num_layers: int
    layers: tuple[bool, ...]
    by_method: Mapping[str, Any]  # method name -> its spec, every method of the registry

    def __getitem__(self, method: str) -> Any:
        return self.by_method[method]

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods that put at least one parameter in the model (registry order)."""
        return tuple(name for name, spec in self.by_method.items() if spec.active)


def parse_peft_config(config: Mapping[str, Any], num_layers: int) -> PeftSpec:
    """Validate and parse the PEFT keys of ``config`` for a model with ``num_layers`` blocks.

    Raises :class:`InvalidConfig` with ``field`` set to the offending key.
    """
    if not isinstance(config, Mapping):
        raise InvalidConfig(
            f"a config must be a dict of parameter name -> value, got {type(config).__name__}",
            "config",
        )
    shared: dict[str, Any] = {}
    per_layer: dict[str, dict[int, int]] = {}
    mask = [True] * num_layers
    for key, value in config.items():
        if not isinstance(key, str):
            raise InvalidConfig(f"config keys must be strings, got {key!r}", str(key))
        if not is_peft_key(key):
            continue
        value = check_peft_value(key, value)
        parts = key.split(".")
        if len(parts) == 2 and parts[0] != MASK:
            shared[key] = value
            continue
        index = int(parts[-1])
        if index >= num_layers:
            raise InvalidConfig(
                f"layer index {index} is out of range: the model has {num_layers} layers "
                f"(0..{num_layers - 1})",
                key,
            )
        if parts[0] == MASK:
            mask[index] = bool(value)
        else:
            per_layer.setdefault(f"{parts[0]}.{parts[1]}", {})[index] = int(value)
    for name, values in per_layer.items():
        if name in shared:
            first = min(values)
            raise InvalidConfig(
                f"{name} is given both shared ({name}) and per layer ({name}.{first}); "
                "use one form",
                f"{name}.{first}",
            )

    def value(name: str, key: Any) -> Any:
        if not key.per_layer:
            return shared.get(name, key.default)
        if name in shared:
            return tuple(int(shared[name]) if mask[i] else 0 for i in range(num_layers))
        given = per_layer.get(name, {})
        return tuple(given.get(i, 0) if mask[i] else 0 for i in range(num_layers))

    layers = tuple(mask)
    by_method = {
        m.name: m.build({f: value(f"{m.name}.{f}", k) for f, k in m.keys.items()}, layers)
        for m in METHODS
    }
    return PeftSpec(num_layers, layers, by_method)
