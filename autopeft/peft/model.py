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
from autopeft.peft.prompt import ATTR as PROMPT_ATTR
from autopeft.peft.registry import INJECTION_ORDER

# name components that mark a PEFT parameter (a PeftHost's modules, the attention site's)
PEFT_MARKERS = (
    "lora",
    "ia3_in",
    "ia3_out",
    "serial",
    "parallel",
    ATTR,
    REPARAM_ATTR,
    PROMPT_ATTR,
)


def has_peft(model: nn.Module) -> bool:
    from autopeft.peft.peftlib import has_peft_layers

    return (
        any(isinstance(m, PeftHost) for m in model.modules())
        or hasattr(model, REPARAM_ATTR)
        or hasattr(model, PROMPT_ATTR)
        or any(hasattr(m, ATTR) for m in model.modules())
        or has_peft_layers(model)
    )


def apply_peft(model: nn.Module, config: Mapping[str, Any], engine: str = "auto") -> nn.Module:
    """Inject the PEFT modules of ``config`` into ``model`` (in place; also returned).

    Afterwards exactly the PEFT parameters and the task head (top-level modules beside the
    body, e.g. ``classifier``, ``score``, DistilBERT ``pre_classifier``) require grad; the
    model keeps its train/eval mode. ``engine`` (``auto``, ``peft``, ``own``) picks who injects:
    Hugging Face peft wherever it can express the config, the modules written here otherwise
    (:func:`autopeft.peft.peftlib.route`). Raises :class:`InvalidConfig` naming the offending key.
    """
    from autopeft.peft import peftlib

    if has_peft(model):
        raise InvalidConfig(
            "this model already has autopeft modules: apply_peft takes a pristine model", "model"
        )
    mmap = map_model(model)
    spec = parse_peft_config(config, len(mmap.layers))
    for method in INJECTION_ORDER:  # every error is raised before the model is touched
        method.check(model, mmap, spec[method.name])
    path = peftlib.route(spec, mmap, engine)
    for param in model.parameters():
        param.requires_grad_(False)
    model.autopeft_spec = spec  # plain attribute: what was applied (read by export, hooks)
    if path == "peft":
        peftlib.inject(model, mmap, spec)
        for param in model.parameters():  # peft's tuner marks only its adapters trainable
            param.requires_grad_(False)
        for name, param in model.named_parameters():
            if is_peft_param(name, peftlib.adapter_names(model)):
                param.requires_grad_(True)
    else:
        for method in INJECTION_ORDER:
            method.inject(model, mmap, spec[method.name])
    _match_modes(model, mmap)
    for name in mmap.head:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(True)
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
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.train(module.get_base_layer().training)


def is_peft_param(name: str, markers: tuple[str, ...] = ()) -> bool:
    """Whether ``name`` is a PEFT parameter: of a module written here (:data:`PEFT_MARKERS`) or
    of a peft tuner layer (``markers``: its adapter tensors, e.g. ``lora_A``, ``vera_lambda_b``)."""
    parts = name.split(".")
    return "base_layer" not in parts and any(p in PEFT_MARKERS or p in markers for p in parts)


def trainable_state(model: nn.Module, mmap: ModelMap | None = None) -> dict[str, Any]:
    """The PEFT parameters and task head of an adapted model, by parameter name."""
    from autopeft.peft.peftlib import adapter_names

    mmap = mmap or map_model(model)
    head = tuple(f"{h}." for h in mmap.head)
    markers = adapter_names(model)
    return {
        n: p for n, p in model.named_parameters() if is_peft_param(n, markers) or n.startswith(head)
    }


def spec_of(model: nn.Module) -> PeftSpec | None:
    return getattr(model, "autopeft_spec", None)
