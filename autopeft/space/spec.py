"""Parsing of the space structure (the YAML / dict form) into parameters and constants.

Every error is an :class:`InvalidConfig` whose ``field`` is the dotted path of the offending
key in the document (``params.lr.low``, ``peft.lora.rank``), so a user can find it.
See ``docs/config_format.md`` for the format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.space.params import Param, _is_number

TOP_LEVEL_KEYS = ("name", "description", "params", "peft")
PARAM_SPEC_KEYS = ("type", "low", "high", "log", "choices", "default", "active_if", "per_layer")
TYPE_ALIASES = {"float": "float", "int": "int", "categorical": "categorical", "ordinal": "ordinal"}

LORA_TARGETS = ("q", "k", "v", "o", "ffn_gate", "ffn_in", "ffn_out")
IA3_TARGETS = ("k", "v", "ffn_out")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
PEFT_METHODS = ("layers", "lora", "serial", "parallel", "prefix", "ia3")


# ---------------------------------------------------------------------------- value checks
def _check_size(value: Any, where: str) -> int:
    if not _is_number(value) or int(value) != value:
        raise InvalidConfig(f"expected an integer size, got {value!r}", where)
    if value < 0:
        raise InvalidConfig(f"a size must be >= 0, got {value!r}", where)
    return int(value)


def _check_positive(value: Any, where: str) -> float:
    if not _is_number(value) or value <= 0:
        raise InvalidConfig(f"expected a number > 0, got {value!r}", where)
    return float(value)


def _check_unit(value: Any, where: str) -> float:
    if not _is_number(value) or not (0 <= value < 1):
        raise InvalidConfig(f"expected a number in [0, 1), got {value!r}", where)
    return float(value)


#: LoRA target standing for every logical projection the model has (ffn_gate only on gated MLPs)
ALL_TARGETS = "all"


def _target_checker(
    allowed: tuple[str, ...], allow_empty: bool, all_alias: bool = False
) -> Callable[[Any, str], str]:
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


def _check_activation(value: Any, where: str) -> str:
    if value not in ACTIVATIONS:
        raise InvalidConfig(f"unknown activation {value!r}; known: {', '.join(ACTIVATIONS)}", where)
    return value


# method -> field -> (value checker, may be per layer)
PEFT_FIELDS: dict[str, dict[str, tuple[Callable[[Any, str], Any], bool]]] = {
    "lora": {
        "rank": (_check_size, True),
        "targets": (_target_checker(LORA_TARGETS, allow_empty=False, all_alias=True), False),
        "alpha_ratio": (_check_positive, False),
        "alpha": (_check_positive, False),
        "dropout": (_check_unit, False),
    },
    "serial": {"size": (_check_size, True), "activation": (_check_activation, False)},
    "parallel": {
        "size": (_check_size, True),
        "scaling": (_check_positive, False),
        "activation": (_check_activation, False),
    },
    "prefix": {"length": (_check_size, True), "reparam": (_check_size, False)},
    "ia3": {"targets": (_target_checker(IA3_TARGETS, allow_empty=True), False)},
}


def check_peft_value(key: str, value: Any) -> Any:
    """Validate one PEFT config value by its key (``lora.rank.3``, ``ia3.targets``...)."""
    parts = key.split(".")
    method = parts[0]
    if method == "layers" and len(parts) == 2 and parts[1].isdigit():
        if not isinstance(value, bool):
            raise InvalidConfig(f"expected true or false, got {value!r}", key)
        return value
    fields = PEFT_FIELDS.get(method)
    if fields is None or len(parts) not in (2, 3) or parts[1] not in fields:
        raise InvalidConfig(f"unknown PEFT key {key!r}", key)
    checker, per_layer = fields[parts[1]]
    if len(parts) == 3 and not (per_layer and parts[2].isdigit()):
        raise InvalidConfig(f"unknown PEFT key {key!r} ({method}.{parts[1]} is not per-layer)", key)
    return checker(value, key)


# ---------------------------------------------------------------------------- params section
def _spec_kind(spec: dict, where: str) -> str:
    declared = spec.get("type")
    if declared is not None:
        if declared not in TYPE_ALIASES:
            raise InvalidConfig(
                f"unknown type {declared!r}; one of float, int, categorical", f"{where}.type"
            )
        kind = TYPE_ALIASES[declared]
        if kind in ("categorical", "ordinal"):
            if "choices" not in spec:
                raise InvalidConfig("a categorical parameter needs 'choices'", f"{where}.choices")
            kind = _choice_kind(spec["choices"], f"{where}.choices")
            if declared == "categorical" and kind == "ordinal" and spec.get("ordered") is False:
                kind = "categorical"
        elif "choices" in spec:
            raise InvalidConfig(f"'choices' is not allowed for type {declared}", f"{where}.choices")
        return kind
    if "choices" in spec:
        return _choice_kind(spec["choices"], f"{where}.choices")
    if "low" in spec and "high" in spec:
        both_int = all(_is_number(spec[k]) and isinstance(spec[k], int) for k in ("low", "high"))
        return "int" if both_int else "float"
    raise InvalidConfig("needs 'type', or 'choices', or 'low' and 'high'", where)


def _choice_kind(choices: Any, where: str) -> str:
    if not isinstance(choices, list) or not choices:
        raise InvalidConfig("'choices' must be a non-empty list", where)
    for c in choices:
        if not isinstance(c, (str, int, float, bool)):
            raise InvalidConfig(f"choices must be scalars, got {c!r}", where)
    if all(isinstance(c, bool) for c in choices) or all(_is_number(c) for c in choices):
        return "ordinal"
    if all(isinstance(c, str) for c in choices):
        return "categorical"
    raise InvalidConfig(f"choices mix types: {choices!r}", where)


def _parse_active_if(raw: Any, where: str) -> tuple[tuple[str, tuple], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise InvalidConfig(
            "'active_if' must map parameter names to a value or a list of values", where
        )
    out = []
    for parent, allowed in raw.items():
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        out.append((str(parent), values))
    return tuple(out)


def build_param(
    name: str,
    spec: dict,
    where: str,
    *,
    group: str | None = None,
    layer: int | None = None,
    value_check: Callable[[Any, str], Any] | None = None,
    extra_active_if: tuple = (),
) -> Param:
    """Build a :class:`Param` from a spec mapping; ``where`` is its path in the document."""
    unknown = [k for k in spec if k not in PARAM_SPEC_KEYS and k != "ordered"]
    if unknown:
        raise InvalidConfig(
            f"unknown key {unknown[0]!r}; allowed: {', '.join(PARAM_SPEC_KEYS)}",
            f"{where}.{unknown[0]}",
        )
    kind = _spec_kind(spec, where)
    choices = tuple(spec.get("choices", ()))
    if value_check is not None:
        choices = tuple(value_check(c, where) for c in choices)
        for bound in ("low", "high"):
            if bound in spec:
                value_check(spec[bound], f"{where}.{bound}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise InvalidConfig(f"expected true or false, got {log!r}", f"{where}.log")
    if log and kind not in ("float", "int"):
        raise InvalidConfig("'log' applies to float and int parameters only", f"{where}.log")
    active_if = extra_active_if + _parse_active_if(spec.get("active_if"), f"{where}.active_if")
    try:
        return Param(
            name=name,
            kind=kind,
            low=spec.get("low"),
            high=spec.get("high"),
            log=log,
            choices=choices,
            default=spec.get("default"),
            active_if=active_if,
            group=group,
            layer=layer,
        )
    except InvalidConfig as err:
        raise InvalidConfig(err.message.replace(f"{name}: ", ""), where) from None


def parse_params(section: Any) -> tuple[list[Param], dict[str, Any]]:
    """The ``params`` section: returns (searchable params, constants)."""
    if section is None:
        return [], {}
    if not isinstance(section, dict):
        raise InvalidConfig("must be a mapping of parameter name to spec", "params")
    params, constants = [], {}
    for name, spec in section.items():
        where = f"params.{name}"
        if not isinstance(name, str) or not name or "." in name:
            raise InvalidConfig(
                f"invalid parameter name {name!r} (no dots; dots are for PEFT keys)", where
            )
        if isinstance(spec, dict):
            if spec.get("per_layer"):
                raise InvalidConfig("'per_layer' is only for PEFT sizes", f"{where}.per_layer")
            params.append(build_param(name, spec, where))
        elif isinstance(spec, (str, int, float, bool)):
            constants[name] = spec
        else:
            raise InvalidConfig(f"expected a spec mapping or a constant, got {spec!r}", where)
    return params, constants


# ---------------------------------------------------------------------------- peft section
def parse_peft(section: Any, num_layers: int | None) -> tuple[list[Param], dict[str, Any], bool]:
    """The ``peft`` section: returns (params, constants, needs_layers)."""
    if section is None:
        return [], {}, False
    if not isinstance(section, dict):
        raise InvalidConfig("must be a mapping of method name to settings", "peft")
    params: list[Param] = []
    constants: dict[str, Any] = {}
    needs_layers = False
    mask_searched = False

    def require_layers(where: str) -> int:
        if num_layers is None:
            raise InvalidConfig(
                "this space has per-layer parameters: load it with a model config "
                "(load_space(name, model_config=...)) to know the layer count",
                where,
            )
        return num_layers

    for method in section:
        if method not in PEFT_METHODS:
            raise InvalidConfig(
                f"unknown PEFT method {method!r}; known: {', '.join(PEFT_METHODS)}",
                f"peft.{method}",
            )

    layers = section.get("layers")
    if layers is not None:
        where = "peft.layers"
        if not isinstance(layers, dict):
            raise InvalidConfig("expected a mapping such as {search: true}", where)
        for key in layers:
            if key not in ("search",):
                raise InvalidConfig(f"unknown key {key!r}; allowed: search", f"{where}.{key}")
        search = layers.get("search", False)
        if not isinstance(search, bool):
            raise InvalidConfig(f"expected true or false, got {search!r}", f"{where}.search")
        if search:
            needs_layers = True
            mask_searched = True
            for i in range(require_layers(where)):
                params.append(
                    Param(
                        name=f"layers.{i}",
                        kind="ordinal",
                        choices=(False, True),
                        default=True,
                        group="layers",
                        layer=i,
                    )
                )

    for method, fields in PEFT_FIELDS.items():
        settings = section.get(method)
        if settings is None:
            continue
        where_m = f"peft.{method}"
        if not isinstance(settings, dict):
            raise InvalidConfig("expected a mapping of field to value or spec", where_m)
        for fname, spec in settings.items():
            where = f"{where_m}.{fname}"
            if fname not in fields:
                raise InvalidConfig(
                    f"unknown field {fname!r} for {method}; known: {', '.join(fields)}", where
                )
            checker, may_be_per_layer = fields[fname]
            key = f"{method}.{fname}"
            if not isinstance(spec, dict):
                constants[key] = checker(spec, where)
                continue
            per_layer = spec.get("per_layer", False)
            if not isinstance(per_layer, bool):
                raise InvalidConfig(
                    f"expected true or false, got {per_layer!r}", f"{where}.per_layer"
                )
            spec = {k: v for k, v in spec.items() if k != "per_layer"}
            if per_layer and not may_be_per_layer:
                raise InvalidConfig(f"{key} cannot be per-layer", f"{where}.per_layer")
            if per_layer:
                needs_layers = True
                for i in range(require_layers(where)):
                    extra = ((f"layers.{i}", (True,)),) if mask_searched else ()
                    params.append(
                        build_param(
                            f"{key}.{i}",
                            spec,
                            where,
                            group=key,
                            layer=i,
                            value_check=checker,
                            extra_active_if=extra,
                        )
                    )
            else:
                params.append(build_param(key, spec, where, value_check=checker))
    if "alpha" in section.get("lora", {}) and "alpha_ratio" in section.get("lora", {}):
        raise InvalidConfig("give either alpha or alpha_ratio, not both", "peft.lora.alpha")
    return params, constants, needs_layers
