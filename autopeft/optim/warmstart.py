"""Warm starting: map configs of another study (maybe another space or layer count) onto a space.

Rules, per parameter of the target space (in declaration order, so conditions see parents):
1. a per-layer parameter ``group.i`` of a model with ``L`` layers, when the source has
   per-layer keys of that group → the source's layer ``floor(i * (Ls - 1) / (L - 1) + 0.5)``
   (same relative depth; ``Ls`` = the source's layer count, the largest layer index of any
   per-layer key + 1);
2. the same key in the source config → its value; else for a per-layer parameter the
   source's shared form ``group``;
3. a shared parameter ``group`` whose source is per-layer → the source's most common value;
4. otherwise the parameter's default.
Every value is snapped to the nearest valid one (clipped numbers, nearest ordinal).
The result is ``space.validate``-normalised.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from autopeft.errors import InvalidConfig

_LAYER_KEY = re.compile(r"^(.*)\.(\d+)$")


def _snap(param, value: Any) -> Any:
    if param.kind in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return param.default
        v = min(max(float(value), float(param.low)), float(param.high))
        return int(round(v)) if param.kind == "int" else v
    for choice in param.choices:
        if choice == value and type(choice) is type(value):
            return choice
    if param.kind == "ordinal" and isinstance(value, (int, float)) and not isinstance(value, bool):
        numeric = [c for c in param.choices if not isinstance(c, bool)]
        if numeric:
            return min(numeric, key=lambda c: abs(float(c) - float(value)))
    return param.default


def map_config(config: dict, space) -> dict:
    """One source config → a valid config of ``space`` (see the module docstring)."""
    if not isinstance(config, dict):
        raise InvalidConfig(
            f"warm_start entries must be config mappings, got {type(config).__name__}", "warm_start"
        )
    per_layer: dict[str, dict[int, Any]] = {}
    for key, value in config.items():
        m = _LAYER_KEY.match(str(key))
        if m:
            per_layer.setdefault(m.group(1), {})[int(m.group(2))] = value
    target_layers = space.num_layers or 1
    source_layers = max((max(v) + 1 for v in per_layer.values()), default=1)
    out: dict[str, Any] = dict(space.constants)
    for p in space.params:
        if not p.is_active(out):
            continue
        if p.group is not None and p.layer is not None and p.group in per_layer:
            src = per_layer[p.group]
            n_src = source_layers
            j = (
                math.floor(p.layer * (n_src - 1) / (target_layers - 1) + 0.5)
                if target_layers > 1
                else 0
            )
            value = src.get(j, p.default)
        elif p.name in config:
            value = config[p.name]
        elif p.group is not None and p.group in config:
            value = config[p.group]
        elif p.name in per_layer:
            value = Counter(map(repr, per_layer[p.name].values())).most_common(1)[0][0]
            value = next(v for v in per_layer[p.name].values() if repr(v) == value)
        else:
            value = p.default
        out[p.name] = _snap(p, value)
    return space.validate(out)


def map_configs(configs: Sequence[dict], space) -> list[dict]:
    if not isinstance(configs, (list, tuple)):
        raise InvalidConfig("warm_start must be a list of configs", "warm_start")
    mapped, seen = [], set()
    for c in configs:
        m = map_config(c, space)
        key = tuple(sorted(m.items(), key=lambda kv: kv[0]))
        if key not in seen:
            seen.add(key)
            mapped.append(m)
    return mapped
