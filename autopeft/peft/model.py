"""``apply_peft``: freeze the model, inject the configured modules, unfreeze the task head."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from autopeft.errors import InvalidConfig
from autopeft.peft.attention import ATTR, REPARAM_ATTR
from autopeft.peft.config import PeftSpec, parse_peft_config
from autopeft.peft.host import PeftHost
from autopeft.peft.modelmap import ModelMap, map_model
from autopeft.peft.registry import INJECTION_ORDER

# name components that mark a PEFT parameter (a PeftHost's modules, the attention site's)
PEFT_MARKERS = ("lora", "ia3_in", "ia3_out", "serial", "parallel", ATTR, REPARAM_ATTR)


def has_peft(model: nn.Module) -> bool:
    return (
        any(isinstance(m, PeftHost) for m in model.modules())
        or hasattr(model, REPARAM_ATTR)
        or any(hasattr(m, ATTR) for m in model.modules())
    )


def apply_peft(model: nn.Module, config: Mapping[str, Any]) -> nn.Module:
    """Inject the PEFT modules of ``config`` into ``model`` (in place; also returned).

    Afterwards exactly the PEFT parameters and the task head (top-level modules beside the
    body, e.g. ``classifier``, ``score``, DistilBERT ``pre_classifier``) require grad; the
    model keeps its train/eval mode. Raises :class:`InvalidConfig` naming the offending key.
    """
    if has_peft(model):
        raise InvalidConfig(
            "this model already has autopeft modules: apply_peft takes a pristine model", "model"
        )
    mmap = map_model(model)
    spec = parse_peft_config(config, len(mmap.layers))
    for method in INJECTION_ORDER:  # every error is raised before the model is touched
        method.check(model, mmap, spec[method.name])
    for param in model.parameters():
        param.requires_grad_(False)
    for method in INJECTION_ORDER:
        method.inject(model, mmap, spec[method.name])
    _match_modes(model, mmap)
    for name in mmap.head:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(True)
    model.autopeft_spec = spec  # plain attribute: what was applied (read by export)
    return model


def _match_modes(model: nn.Module, mmap: ModelMap) -> None:
    """New modules start in training mode; give them the mode of what they attach to."""
    for module in model.modules():
        if isinstance(module, PeftHost):
            module.train(module.base_layer.training)
    for layer in mmap.layers:
        attention = model.get_submodule(layer.attention)
        if hasattr(attention, ATTR):
            getattr(attention, ATTR).train(attention.training)
    if hasattr(model, REPARAM_ATTR):
        getattr(model, REPARAM_ATTR).train(model.training)


def is_peft_param(name: str) -> bool:
    parts = name.split(".")
    return "base_layer" not in parts and any(p in PEFT_MARKERS for p in parts)


def trainable_state(model: nn.Module, mmap: ModelMap | None = None) -> dict[str, Any]:
    """The PEFT parameters and task head of an adapted model, by parameter name."""
    mmap = mmap or map_model(model)
    head = tuple(f"{h}." for h in mmap.head)
    return {n: p for n, p in model.named_parameters() if is_peft_param(n) or n.startswith(head)}


def spec_of(model: nn.Module) -> PeftSpec | None:
    return getattr(model, "autopeft_spec", None)
