"""The PEFT methods: the one list of them. Adding a method = one module + one line here.

:data:`METHODS` is in key order (the order of the search space's PEFT parameters and of
``PeftSpec.methods``); ``apply_peft`` injects by each method's ``inject_order``. Besides the
methods' keys, a config may hold the placement mask ``layers.{i}`` (:data:`MASK`), which applies
to every method.
"""

from __future__ import annotations

from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.peft import bottleneck, ia3, lora, prefix, prompt, tuners
from autopeft.peft.method import Method

METHODS: tuple[Method, ...] = (
    lora.METHOD,
    bottleneck.SERIAL,
    bottleneck.PARALLEL,
    prefix.METHOD,
    ia3.METHOD,
    *tuners.METHODS,
    prompt.METHOD,
)

BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}
MASK = "layers"
#: the first component of every PEFT key (``lora.rank.3`` -> ``lora``)
KEY_GROUPS: tuple[str, ...] = (MASK, *BY_NAME)
PEFT_PREFIXES: tuple[str, ...] = tuple(f"{group}." for group in KEY_GROUPS)
INJECTION_ORDER: tuple[Method, ...] = tuple(sorted(METHODS, key=lambda m: m.inject_order))


def is_peft_key(key: Any) -> bool:
    """Whether a config key belongs to the PEFT layer (its first component is a key group)."""
    return isinstance(key, str) and key.split(".", 1)[0] in KEY_GROUPS


def check_peft_value(key: str, value: Any) -> Any:
    """Validate one PEFT config value by its key (``lora.rank.3``, ``ia3.targets``...): the
    normalised value, or :class:`InvalidConfig` naming ``key``."""
    parts = key.split(".")
    group = parts[0]
    if group == MASK and len(parts) == 2 and parts[1].isdigit():
        if not isinstance(value, bool):
            raise InvalidConfig(f"expected true or false, got {value!r}", key)
        return value
    method = BY_NAME.get(group)
    if method is None or len(parts) not in (2, 3) or parts[1] not in method.keys:
        raise InvalidConfig(f"unknown PEFT key {key!r}", key)
    spec = method.keys[parts[1]]
    if len(parts) == 3 and not (spec.per_layer and parts[2].isdigit()):
        raise InvalidConfig(f"unknown PEFT key {key!r} ({group}.{parts[1]} is not per-layer)", key)
    return spec.check(value, key)
