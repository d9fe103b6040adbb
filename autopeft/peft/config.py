"""Parsing the PEFT keys of a flat config (``docs/config_format.md``) into a :class:`PeftSpec`.

Values are checked by :func:`autopeft.space.check_peft_value` (the same rules a search space
uses); this module adds what needs the layer count: indices in range, and a field given in
either its shared form (``lora.rank``) or its per-layer form (``lora.rank.3``), never both.
Non-PEFT keys (``lr``, ``epochs``...) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.space.spec import check_peft_value

PEFT_METHODS = ("layers", "lora", "serial", "parallel", "prefix", "ia3")
PER_LAYER_FIELDS = ("lora.rank", "serial.size", "parallel.size", "prefix.length")
DEFAULTS: dict[str, Any] = {
    "lora.targets": "q,v",
    "lora.alpha_ratio": 2.0,
    "lora.alpha": None,
    "lora.dropout": 0.0,
    "serial.activation": "relu",
    "parallel.scaling": 4.0,
    "parallel.activation": "relu",
    "prefix.reparam": 0,
    "ia3.targets": "",
}


@dataclass(frozen=True)
class PeftSpec:
    """A parsed PEFT config. Per-layer sizes already have the placement mask applied
    (a layer whose ``layers.{i}`` is false has size 0 for every method)."""

    num_layers: int
    layers: tuple[bool, ...]
    lora_rank: tuple[int, ...]
    lora_targets: tuple[str, ...]
    lora_alpha_ratio: float
    lora_alpha: float | None
    lora_dropout: float
    serial_size: tuple[int, ...]
    serial_activation: str
    parallel_size: tuple[int, ...]
    parallel_scaling: float
    parallel_activation: str
    prefix_length: tuple[int, ...]
    prefix_reparam: int
    ia3_targets: tuple[str, ...]  # () when IA3 is off

    def lora_alpha_for(self, rank: int) -> float:
        """``lora_alpha`` for a rank: ``lora.alpha`` if given, else ``alpha_ratio * rank``."""
        return (
            float(self.lora_alpha) if self.lora_alpha is not None else self.lora_alpha_ratio * rank
        )

    def lora_scaling(self, rank: int) -> float:
        return self.lora_alpha_for(rank) / rank

    @property
    def ia3_layers(self) -> tuple[int, ...]:
        return tuple(i for i, on in enumerate(self.layers) if on) if self.ia3_targets else ()

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods that put at least one parameter in the model."""
        used = []
        if any(self.lora_rank):
            used.append("lora")
        if any(self.serial_size):
            used.append("serial")
        if any(self.parallel_size):
            used.append("parallel")
        if any(self.prefix_length):
            used.append("prefix")
        if self.ia3_layers:
            used.append("ia3")
        return tuple(used)


def _split_targets(value: str) -> tuple[str, ...]:
    return tuple(t for t in (s.strip() for s in value.split(",")) if t)


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
    per_layer: dict[str, dict[int, int]] = {f: {} for f in PER_LAYER_FIELDS}
    mask = [True] * num_layers
    for key, value in config.items():
        if not isinstance(key, str):
            raise InvalidConfig(f"config keys must be strings, got {key!r}", str(key))
        if key.split(".", 1)[0] not in PEFT_METHODS:
            continue
        value = check_peft_value(key, value)
        parts = key.split(".")
        if len(parts) == 2 and parts[0] != "layers":
            shared[key] = value
            continue
        index = int(parts[-1])
        if index >= num_layers:
            raise InvalidConfig(
                f"layer index {index} is out of range: the model has {num_layers} layers "
                f"(0..{num_layers - 1})",
                key,
            )
        if parts[0] == "layers":
            mask[index] = bool(value)
        else:
            per_layer[f"{parts[0]}.{parts[1]}"][index] = int(value)
    for name, values in per_layer.items():
        if values and name in shared:
            first = min(values)
            raise InvalidConfig(
                f"{name} is given both shared ({name}) and per layer ({name}.{first}); "
                "use one form",
                f"{name}.{first}",
            )

    def sizes(name: str) -> tuple[int, ...]:
        if name in shared:
            return tuple(int(shared[name]) if mask[i] else 0 for i in range(num_layers))
        return tuple(per_layer[name].get(i, 0) if mask[i] else 0 for i in range(num_layers))

    def get(name: str) -> Any:
        return shared.get(name, DEFAULTS[name])

    return PeftSpec(
        num_layers=num_layers,
        layers=tuple(mask),
        lora_rank=sizes("lora.rank"),
        lora_targets=_split_targets(get("lora.targets")),
        lora_alpha_ratio=float(get("lora.alpha_ratio")),
        lora_alpha=get("lora.alpha"),
        lora_dropout=float(get("lora.dropout")),
        serial_size=sizes("serial.size"),
        serial_activation=get("serial.activation"),
        parallel_size=sizes("parallel.size"),
        parallel_scaling=float(get("parallel.scaling")),
        parallel_activation=get("parallel.activation"),
        prefix_length=sizes("prefix.length"),
        prefix_reparam=int(get("prefix.reparam")),
        ia3_targets=_split_targets(get("ia3.targets")),
    )


def peft_items(config: Mapping[str, Any]) -> dict[str, Any]:
    """The PEFT keys of a config (what the adapter export stores besides the head)."""
    return {
        k: v for k, v in config.items() if isinstance(k, str) and k.split(".", 1)[0] in PEFT_METHODS
    }
