"""Where the PEFT modules go in an instantiated model: logical projections, found by structure.

:func:`map_model` walks a model: it finds the ``ModuleList`` of transformer blocks, then in each
block the projections by name patterns and shapes, and returns a :class:`ModelMap` (block paths,
each block's self-attention module and its logical projections ``q, k, v, o, ffn_gate, ffn_in,
ffn_out`` (:data:`autopeft.peft.arch.LOGICAL`); for a fused projection such as GPT-2's
``c_attn``, ``q``/``k``/``v`` are output slices), plus the task head. A model already adapted
by ``apply_peft`` maps the same (a :class:`~autopeft.peft.host.PeftHost` counts as a linear).

Supported by structure: BERT / RoBERTa / DistilBERT / MiniLM / DeBERTa-v2 encoders, GPT-2
(Conv1D, fused qkv) and Llama / Qwen2 / Mistral-style gated decoders (GQA included). Anything
else raises :class:`autopeft.InvalidConfig` naming what was found; :func:`check_structure` does
that for a model config alone (built on the meta device), when a study is validated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from autopeft.errors import InvalidConfig
from autopeft.peft.arch import describe_config
from autopeft.peft.host import PeftHost, linear_dims

# last path component -> logical name (unambiguous names)
_BY_NAME = {
    "query": "q",
    "query_proj": "q",
    "q_proj": "q",
    "q_lin": "q",
    "wq": "q",
    "key": "k",
    "key_proj": "k",
    "k_proj": "k",
    "k_lin": "k",
    "wk": "k",
    "value": "v",
    "value_proj": "v",
    "v_proj": "v",
    "v_lin": "v",
    "wv": "v",
    "o_proj": "o",
    "out_lin": "o",
    "out_proj": "o",
    "wo": "o",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_in",
    "c_fc": "ffn_in",
    "lin1": "ffn_in",
    "fc1": "ffn_in",
    "down_proj": "ffn_out",
    "lin2": "ffn_out",
    "fc2": "ffn_out",
}
_FUSED_QKV = ("c_attn", "qkv_proj", "query_key_value", "Wqkv")
_CROSS = ("crossattention", "cross_attn", "encoder_attn")


@dataclass
class Proj:
    """One logical projection: ``path`` of the module inside the model, and the output slice."""

    path: str
    start: int | None = None
    stop: int | None = None

    @property
    def sliced(self) -> bool:
        return self.start is not None


@dataclass
class LayerMap:
    index: int
    path: str  # e.g. "bert.encoder.layer.3"
    attention: str  # path of the self-attention module (parent of q)
    projs: dict[str, Proj]


@dataclass
class ModelMap:
    layers_path: str
    layers: list[LayerMap]
    head: list[str]  # top-level children forming the task head
    base_prefix: str  # path of the base (body) model, "" for a bare model

    def proj(self, layer: int, name: str, field_name: str) -> Proj:
        projs = self.layers[layer].projs
        if name not in projs:
            raise InvalidConfig(
                f"this model has no {name} projection (found: "
                f"{', '.join(f'{k}={v.path}' for k, v in projs.items())})",
                field_name,
            )
        return projs[name]


def is_linear(module: Any) -> bool:
    """nn.Linear, GPT-2 Conv1D, or our PeftHost / a peft tuner layer wrapping one (so an adapted
    model maps too)."""
    return isinstance(module, (nn.Linear, Conv1D, PeftHost)) or is_wrapper(module)


def is_wrapper(module: Any) -> bool:
    """A module holding the original projection as ``base_layer`` (our PeftHost, a peft layer)."""
    if isinstance(module, PeftHost):
        return True
    from peft.tuners.tuners_utils import BaseTunerLayer

    return isinstance(module, BaseTunerLayer)


def _classify(rel: str) -> str | None:
    parts = rel.split(".")
    last = parts[-1]
    if any(c in parts for c in _CROSS):
        return None
    if last in _FUSED_QKV:
        return "qkv"
    if last in _BY_NAME:
        return _BY_NAME[last]
    in_attn = any("att" in p for p in parts[:-1])
    if last == "c_proj":
        return "o" if in_attn else ("ffn_out" if any("mlp" in p for p in parts[:-1]) else None)
    if last == "dense" and len(parts) >= 2:
        if in_attn and parts[-2] == "output":
            return "o"
        if parts[-2] == "intermediate":
            return "ffn_in"
        if parts[-2] == "output" and not in_attn:
            return "ffn_out"
    return None


def _linear_summary(model: Any, limit: int = 40) -> str:
    names = [
        f"{n} ({type(m).__name__} {tuple(linear_dims(m))})"
        for n, m in model.named_modules()
        if is_linear(m)
    ]
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return "; ".join(names[:limit]) + more if names else "no linear layers"


def _find_layer_list(model: Any) -> tuple[str, Any]:
    best: tuple[int, str, Any] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(type(block) is not type(module[0]) for block in module):
            continue
        kinds = {_classify(rel) for rel, sub in module[0].named_modules() if rel and is_linear(sub)}
        if not ({"q", "k", "v"} <= kinds or "qkv" in kinds):
            continue
        if best is None or len(module) > best[0]:
            best = (len(module), name, module)
    if best is None:
        raise InvalidConfig(
            f"unknown architecture {type(model).__name__}: found no list of transformer blocks with "
            f"query/key/value projections. Modules found: {_linear_summary(model)}",
            "model",
        )
    return best[1], best[2]


def map_model(model: Any) -> ModelMap:
    """Walk ``model`` and map every block's logical projections (see the module docstring)."""
    layers_path, blocks = _find_layer_list(model)
    config = getattr(model, "config", None)
    desc = None
    layers: list[LayerMap] = []
    for index, block in enumerate(blocks):
        found: dict[str, list[str]] = {}
        inside: list[str] = []  # wrappers seen: their sub-modules are not projections
        for rel, sub in block.named_modules():
            if any(rel.startswith(f"{w}.") for w in inside):
                continue
            if is_wrapper(sub):
                inside.append(rel)
            if rel and is_linear(sub):
                kind = _classify(rel)
                if kind is not None:
                    found.setdefault(kind, []).append(rel)
        dupes = {k: v for k, v in found.items() if len(v) > 1}
        if dupes:
            raise InvalidConfig(
                f"ambiguous projections in block {index} of {type(model).__name__}: {dupes}",
                "model",
            )
        block_path = f"{layers_path}.{index}"
        projs = {k: Proj(f"{block_path}.{v[0]}") for k, v in found.items() if k != "qkv"}
        if "qkv" in found:
            rel = found["qkv"][0]
            _, out = linear_dims(block.get_submodule(rel))
            if desc is None and config is not None:
                desc = describe_config(config)
            q_dim = desc.q_dim if desc else out // 3
            kv_dim = desc.kv_dim if desc else out // 3
            if q_dim + 2 * kv_dim != out:
                raise InvalidConfig(
                    f"fused projection {rel} has {out} outputs, expected q {q_dim} + 2 x kv {kv_dim}",
                    "model",
                )
            path = f"{block_path}.{rel}"
            projs["q"] = Proj(path, 0, q_dim)
            projs["k"] = Proj(path, q_dim, q_dim + kv_dim)
            projs["v"] = Proj(path, q_dim + kv_dim, out)
            q_rel = rel
        elif {"q", "k", "v"} <= set(found):
            q_rel = found["q"][0]
        else:
            raise InvalidConfig(
                f"block {index} of {type(model).__name__} has no query/key/value projections "
                f"(found {sorted(found)})",
                "model",
            )
        attention = f"{block_path}.{q_rel.rpartition('.')[0]}" if "." in q_rel else block_path
        layers.append(LayerMap(index, block_path, attention, projs))
    base_prefix = _base_prefix(model, layers_path)
    return ModelMap(layers_path, layers, _head_modules(model, base_prefix), base_prefix)


def _base_prefix(model: Any, layers_path: str) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and hasattr(model, prefix) and layers_path.startswith(prefix + "."):
        return prefix
    return ""


def _head_modules(model: Any, base_prefix: str) -> list[str]:
    """Top-level children other than the body that hold parameters: the task head.

    Output-embedding (LM) heads are pretrained or tied to the input embeddings and are not a
    freshly initialised task head, so they are excluded.
    """
    if not base_prefix:
        return []
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = []
    for name, child in model.named_children():
        if name == base_prefix or name.startswith("autopeft_"):
            continue
        if out_emb is not None and any(m is out_emb for m in child.modules()):
            continue
        if any(True for _ in child.parameters()):
            head.append(name)
    return head


def check_structure(model_config: Any, task: str = "classification") -> None:
    """Map the task model of ``model_config`` built on the meta device (no weights, no memory):
    :class:`InvalidConfig` naming ``workload.model`` when its blocks cannot be found by structure
    (what a trial's ``apply_peft`` would meet), so a study is refused before anything trains."""
    import json

    _check_structure(json.dumps(model_config.to_dict(), sort_keys=True, default=str), task)


@functools.lru_cache(maxsize=32)
def _check_structure(config_json: str, task: str) -> None:
    import json

    import torch

    from autopeft.models import transformers_attrs

    auto_config, causal_lm, classifier = transformers_attrs(
        "AutoConfig", "AutoModelForCausalLM", "AutoModelForSequenceClassification"
    )
    config = auto_config.for_model(**json.loads(config_json))
    try:
        with torch.device("meta"):
            model = (causal_lm if task == "causal_lm" else classifier).from_config(config)
    except (ValueError, KeyError) as err:
        raise InvalidConfig(
            f"model type {config.model_type!r} has no transformers {task} model: {err}",
            "workload.model",
        ) from None
    try:
        map_model(model)
    except InvalidConfig as err:
        message = err.message.removeprefix(f"{err.field}: ")
        raise InvalidConfig(
            f"{message} (the {task} model built from its config)", "workload.model"
        ) from None


def is_causal_lm(model: nn.Module) -> bool:
    """A transformers ``*ForCausalLM`` / ``*LMHeadModel`` (what ``AutoModelForCausalLM`` builds)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
