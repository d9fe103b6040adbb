"""Parsing of the space structure (the YAML / dict form) into parameters and constants.

Every error is an :class:`InvalidConfig` whose ``field`` is the dotted path of the offending
key in the document (``params.lr.low``, ``peft.lora.rank``), so a user can find it.
See ``docs/config_format.md`` for the format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.peft.registry import KEY_GROUPS, MASK, METHODS
from autopeft.space.params import Param, _is_number

TOP_LEVEL_KEYS = ("name", "description", "params", "peft")
PARAM_SPEC_KEYS = ("type", "low", "high", "log", "choices", "default", "active_if", "per_layer")
TYPE_ALIASES = {"float": "float", "int": "int", "categorical": "categorical", "ordinal": "ordinal"}


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
        if method not in KEY_GROUPS:
            raise InvalidConfig(
                f"unknown PEFT method {method!r}; known: {', '.join(KEY_GROUPS)}",
                f"peft.{method}",
            )

    layers = section.get(MASK)
    if layers is not None:
        where = f"peft.{MASK}"
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
                        name=f"{MASK}.{i}",
                        kind="ordinal",
                        choices=(False, True),
                        default=True,
                        group=MASK,
                        layer=i,
                    )
                )

    for method in METHODS:
        fields = method.keys
        settings = section.get(method.name)
        if settings is None:
            continue
        where_m = f"peft.{method.name}"
        if not isinstance(settings, dict):
            raise InvalidConfig("expected a mapping of field to value or spec", where_m)
        for fname, spec in settings.items():
            where = f"{where_m}.{fname}"
            if fname not in fields:
                raise InvalidConfig(
                    f"unknown field {fname!r} for {method.name}; known: {', '.join(fields)}", where
                )
            checker, may_be_per_layer = fields[fname].check, fields[fname].per_layer
            key = f"{method.name}.{fname}"
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
                    extra = ((f"{MASK}.{i}", (True,)),) if mask_searched else ()
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
