"""Saving and loading adapters.

``export_adapter(model, config, directory)`` always writes the project's own format:

* ``autopeft_config.json``: ``{"format": "autopeft-adapter", "version": 1, "config": <the flat
  config>, "model_type", "head": [task head module names], "num_labels", "peft_format", "task":
  "classification" | "causal_lm" | null (a bare model)}``
* ``autopeft_adapter.safetensors``: every trainable tensor (PEFT modules + task head) by its
  parameter name in the adapted model;

and, when the config uses LoRA only or IA3 only (or peft injected it), additionally peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``) that
``peft.PeftModel.from_pretrained(base, directory)`` loads with identical outputs:

* per-layer ranks / alphas go to ``rank_pattern`` / ``alpha_pattern`` (keys: escaped module
  paths, which peft matches as anchored regexes);
* several LoRA slices of one fused projection (GPT-2 ``c_attn`` with targets ``q,v``) become
  one LoRA on that projection: ``A`` stacked, ``B`` block-diagonal (zero rows for un-adapted
  slices), rank = sum of the ranks; if the slices' scalings differ, each slice's scaling is
  folded into its block of ``B`` (peft scaling 1) so outputs stay identical;
* IA3 on a fused slice becomes IA3 on the whole projection with ones on the other slices;
* the task head is saved as peft ``modules_to_save``;
* a causal LM's prefix of one length in every layer (nothing else) becomes peft's prefix
  tuning without projection (:mod:`autopeft.peft.attention`: on a causal LM the text follows
  the prefix, as in peft);
* a causal LM (``AutoModelForCausalLM``: no task head, the LM head frozen) gets ``task_type
  "CAUSAL_LM"``, so ``peft.AutoPeftModelForCausalLM.from_pretrained(directory)`` loads base and
  adapter in one call (the base from ``base_model_name_or_path``, the model folder it was loaded
  from).

``load_adapter(base_model, directory)`` re-applies the stored config to a pristine base model
and loads the trainable tensors (own format only). A model whose head reads the mean of the
token states (``autopeft_config.json`` ``"pooling": "mean"``, the default for
sentence-transformers checkpoints) gets that pooling back from ``load_adapter``; a user loading
the peft-format files with ``peft.PeftModel.from_pretrained`` calls
``autopeft.peft.pooling.apply_pooling(base, "mean")`` on the base model first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autopeft.errors import InvalidConfig
from autopeft.peft.config import parse_peft_config
from autopeft.peft.host import PeftHost
from autopeft.peft.model import apply_peft, spec_of, trainable_state
from autopeft.peft.modelmap import ModelMap, is_causal_lm, map_model
from autopeft.peft.peftlib import CONVERTED, engine_of, initial_lora, prompt_config_of, tuner_of
from autopeft.peft.pooling import ATTR as POOLING_ATTR
from autopeft.peft.pooling import apply_pooling

OWN_CONFIG = "autopeft_config.json"
OWN_WEIGHTS = "autopeft_adapter.safetensors"
FORMAT = "autopeft-adapter"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"config value {value!r} is not JSON-serialisable")


def export_adapter(model: nn.Module, config: Mapping[str, Any], directory: str | Path) -> Path:
    """Write the adapter of ``model`` (adapted by ``apply_peft(model, config)``) to ``directory``."""
    from safetensors.torch import save_file

    applied = spec_of(model)
    if applied is None:
        raise InvalidConfig(
            "this model has no autopeft modules: call apply_peft(model, config) first", "model"
        )
    mmap = map_model(model)
    spec = parse_peft_config(config, len(mmap.layers))
    if spec != applied:
        raise InvalidConfig("config differs from the one applied to this model", "config")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().to("cpu").contiguous() for n, p in trainable_state(model, mmap).items()}
    save_file(state, str(directory / OWN_WEIGHTS), metadata={"format": "pt"})
    engine = engine_of(model) or "own"
    if spec.methods == ("prompt",):  # peft's prompt tuning forward: a classifier's only
        peft_format = bool(mmap.head)
    elif engine == "peft":
        lora = spec["lora"]
        # DoRA's magnitudes are norms of the PiSSA / OLoRA residual weight: no plain-LoRA form
        peft_format = not (lora.active and lora.init in CONVERTED and lora.variant == "dora")
    elif spec.methods == ("prefix",):
        peft_format = _peft_prefix(model, mmap, spec)
    else:
        peft_format = spec.methods in (("lora",), ("ia3",))
    meta = {
        "format": FORMAT,
        "version": 1,
        "config": dict(config),
        "model_type": getattr(getattr(model, "config", None), "model_type", None),
        "head": mmap.head,
        "num_labels": getattr(model.config, "num_labels", None) if mmap.head else None,
        "peft_format": peft_format,
        "engine": engine,  # who injected it: load_adapter injects the same way
        "task": "classification" if mmap.head else "causal_lm" if is_causal_lm(model) else None,
        # what the head reads (autopeft.peft.pooling): "mean" must be re-applied when loading
        "pooling": getattr(model, POOLING_ATTR, "model"),
    }
    (directory / OWN_CONFIG).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")
    if peft_format and spec.methods == ("prompt",):
        _export_peft_prompt(model, mmap, directory)
    elif peft_format and spec.methods == ("prefix",):
        _export_peft_prefix(model, mmap, directory)
    elif peft_format and engine == "peft":
        _export_peft_native(model, mmap, spec, directory)
    elif peft_format:
        _export_peft(model, mmap, spec, directory)
    return directory


def load_adapter(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """Apply the stored config to ``base_model`` (pristine, same architecture and head) and load
    the stored tensors. Returns the adapted model (``base_model`` itself, modified in place)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    path = directory / OWN_CONFIG
    if not path.is_file():
        raise InvalidConfig(
            f"{directory} has no {OWN_CONFIG}: not an autopeft adapter directory", "directory"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise InvalidConfig(
            f"{path} is not an autopeft adapter (format {meta.get('format')!r})", "directory"
        )
    apply_pooling(base_model, meta.get("pooling", "model"))
    model = apply_peft(base_model, meta["config"], meta.get("engine", "own"))
    stored = load_file(str(directory / OWN_WEIGHTS))
    expected = trainable_state(model)
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise InvalidConfig(
            f"adapter in {directory} does not fit this model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}",
            "directory",
        )
    with torch.no_grad():
        for name, param in expected.items():
            tensor = stored[name]
            if tensor.shape != param.shape:
                raise InvalidConfig(
                    f"adapter tensor {name} has shape {tuple(tensor.shape)}, the model expects "
                    f"{tuple(param.shape)} (another model size or num_labels?)",
                    "directory",
                )
            param.copy_(tensor)
    return model


# ------------------------------------------------------------------------------- peft format
def _head_tensors(model: nn.Module, mmap: ModelMap) -> dict[str, torch.Tensor]:
    out = {}
    for name in mmap.head:
        for sub, param in model.get_submodule(name).named_parameters():
            out[f"base_model.model.{name}.{sub}"] = param.detach().to("cpu").contiguous()
    return out


def _lora_host_tensors(host: PeftHost) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """(A, B, rank, scaling) of one peft LoRA equivalent to all LoRA branches of ``host``."""
    branches = list(host.lora.values())
    rank = sum(b.rank for b in branches)
    scalings = {b.scaling for b in branches}
    scaling = branches[0].scaling if len(scalings) == 1 else 1.0
    a = torch.cat([b.lora_A.weight.detach() for b in branches], dim=0)
    if len(branches) == 1 and branches[0].start is None:
        b = branches[0].lora_B.weight.detach() * (branches[0].scaling / scaling)
    else:
        b = a.new_zeros(host.out_features, rank)
        offset = 0
        for br in branches:
            start, stop = (0, host.out_features) if br.start is None else (br.start, br.stop)
            b[start:stop, offset : offset + br.rank] = br.lora_B.weight.detach() * (
                br.scaling / scaling
            )
            offset += br.rank
    return a.to("cpu").contiguous(), b.to("cpu").contiguous(), rank, scaling


def _export_peft(model: nn.Module, mmap: ModelMap, spec, directory: Path) -> None:
    from peft import IA3Config, LoraConfig
    from safetensors.torch import save_file
    from transformers.pytorch_utils import Conv1D

    tensors = _head_tensors(model, mmap)
    targets: list[str] = []
    conv1d = False
    task_type = "SEQ_CLS" if mmap.head else "CAUSAL_LM" if is_causal_lm(model) else None
    common = {
        "modules_to_save": list(mmap.head) or None,
        "task_type": task_type,
        "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None,
    }
    hosts = [(n, m) for n, m in model.named_modules() if isinstance(m, PeftHost)]
    if spec.methods == ("lora",):
        rank_pattern, alpha_pattern = {}, {}
        for path, host in hosts:
            if not len(host.lora):
                continue
            a, b, rank, scaling = _lora_host_tensors(host)
            tensors[f"base_model.model.{path}.lora_A.weight"] = a
            tensors[f"base_model.model.{path}.lora_B.weight"] = b
            rank_pattern[re.escape(path)] = rank
            alpha_pattern[re.escape(path)] = scaling * rank
            targets.append(path)
            conv1d |= isinstance(host.base_layer, Conv1D)
        first = next(iter(rank_pattern))
        cfg = LoraConfig(
            r=rank_pattern[first],
            lora_alpha=alpha_pattern[first],
            target_modules=targets,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            lora_dropout=spec["lora"].dropout,
            fan_in_fan_out=conv1d,
            bias="none",
            **common,
        )
    else:
        feedforward = []
        for path, host in hosts:
            if host.ia3_in is not None:
                tensors[f"base_model.model.{path}.ia3_l"] = (
                    host.ia3_in.detach().reshape(1, -1).to("cpu").clone()
                )
                feedforward.append(path)
            elif len(host.ia3_out):
                tensors[f"base_model.model.{path}.ia3_l"] = (
                    host._out_scale().detach().reshape(-1, 1).to("cpu").clone()
                )
            else:
                continue
            targets.append(path)
            conv1d |= isinstance(host.base_layer, Conv1D)
        cfg = IA3Config(
            target_modules=targets, feedforward_modules=feedforward, fan_in_fan_out=conv1d, **common
        )
    cfg.save_pretrained(str(directory))
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})


class _AsPeftModel(nn.Module):
    """The tuner seen as peft's ``PeftModel`` sees it (``base_model``, ``peft_config``), so that
    ``get_peft_model_state_dict`` gives the keys ``PeftModel.from_pretrained`` loads."""

    def __init__(self, tuner: nn.Module):
        super().__init__()
        self.base_model = tuner
        self.peft_config = tuner.peft_config

    def resize_state_dict_by_rank_pattern(self, *args):  # AdaLoRA's pruned ranks
        return self.base_model.resize_state_dict_by_rank_pattern(*args)


def _export_peft_native(model: nn.Module, mmap: ModelMap, spec, directory: Path) -> None:
    """peft's format of a config peft injected: its own tuner config and adapter tensors.

    A LoRA initialised by PiSSA or OLoRA trained on a base weight it changed (the residual); as
    peft's ``path_initial_model_for_weight_conversion`` does, the saved LoRA is the difference
    from the initial adapter, ``[B, -B0] [A; A0]`` of twice the rank, so it loads on the
    pristine base model. An AdaLoRA is saved at its pruned ranks (peft's ``rank_pattern``)."""
    import copy

    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from autopeft.peft.peftlib import ADAPTER

    tuner = tuner_of(model)
    config = copy.deepcopy(tuner.peft_config[ADAPTER])
    tensors = {
        k: v.detach().to("cpu").contiguous()
        for k, v in get_peft_model_state_dict(_AsPeftModel(tuner), adapter_name=ADAPTER).items()
    }
    initial = initial_lora(model)
    if initial:
        lora = spec["lora"]
        for path, (a0, b0) in initial.items():
            key = f"base_model.model.{path}"
            a, b = tensors[f"{key}.lora_A.weight"], tensors[f"{key}.lora_B.weight"]
            tensors[f"{key}.lora_A.weight"] = torch.cat([a, a0.to(a.dtype)], dim=0).contiguous()
            tensors[f"{key}.lora_B.weight"] = torch.cat([b, -b0.to(b.dtype)], dim=1).contiguous()
        # twice the rank at the same scaling: alpha / r (or alpha / sqrt(r) for rsLoRA) kept
        grow = 2.0 if lora.variant != "rslora" else 2.0**0.5
        config.rank_pattern = {k: 2 * r for k, r in config.rank_pattern.items()}
        config.alpha_pattern = {k: grow * a for k, a in config.alpha_pattern.items()}
        config.r, config.lora_alpha = 2 * config.r, grow * config.lora_alpha
        config.init_lora_weights = True
    tensors.update(_head_tensors(model, mmap))
    config.modules_to_save = list(mmap.head) or None
    config.task_type = "SEQ_CLS" if mmap.head else "CAUSAL_LM" if is_causal_lm(model) else None
    config.base_model_name_or_path = getattr(model.config, "_name_or_path", None) or None
    config.inference_mode = True
    config.save_pretrained(str(directory))
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})


def _export_peft_prompt(model: nn.Module, mmap: ModelMap, directory: Path) -> None:
    """peft's format of a prompt-tuned classifier: its ``PromptTuningConfig`` (task ``SEQ_CLS``,
    the head as ``modules_to_save``), ``prompt_embeddings`` and the head's tensors."""
    import copy

    from safetensors.torch import save_file

    from autopeft.peft.prompt import ATTR

    config = copy.deepcopy(prompt_config_of(model))
    tensors = {"prompt_embeddings": getattr(model, ATTR).embedding.weight.detach().to("cpu")}
    for name in mmap.head:
        for sub, param in model.get_submodule(name).named_parameters():
            tensors[f"base_model.{name}.{sub}"] = param.detach().to("cpu")
    config.modules_to_save = list(mmap.head)
    config.inference_mode = True
    config.save_pretrained(str(directory))
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})


def _peft_prefix(model: nn.Module, mmap: ModelMap, spec) -> bool:
    """Whether peft's prefix tuning expresses this prefix-only config: a causal LM with one length
    in every layer (peft has one ``num_virtual_tokens``). Not a sequence classifier: peft's prefix
    tuning raises on them up to peft 0.21, and from peft 0.22 runs with the text's positions after
    the prefix, where a classifier's text here keeps positions ``0..n-1``
    (:mod:`autopeft.peft.attention`), so its logits would not be the trained model's."""
    lengths = set(spec["prefix"].length)
    return not mmap.head and is_causal_lm(model) and len(lengths) == 1 and 0 not in lengths


def peft_prefix_state(model: nn.Module, mmap: ModelMap, task_type: str = "CAUSAL_LM"):
    """The ``PrefixTuningConfig`` (without projection) and ``prompt_embeddings`` tensor that hold
    the prefix of ``model`` (one length in every layer) in peft's layout: row ``t`` holds every
    layer's key then value at prefix position ``t`` (heads by head dim, the layout peft views as
    ``past_key_values``). A reparameterised prefix is written as the keys and values its MLP
    gives (peft's own projection is another MLP)."""
    from peft import PrefixTuningConfig

    from autopeft.peft.attention import ATTR

    rows = []
    for layer in mmap.layers:
        prefix = getattr(model.get_submodule(layer.attention), ATTR)
        key, value = prefix.kv()  # (kv_heads, P, head_dim)
        length, kv_dim = prefix.length, prefix.kv_heads * prefix.head_dim
        rows += [key.transpose(0, 1).reshape(length, kv_dim)]
        rows += [value.transpose(0, 1).reshape(length, kv_dim)]
    embeddings = torch.cat(rows, dim=1).detach().to("cpu").contiguous()
    config = PrefixTuningConfig(
        task_type=task_type,
        num_virtual_tokens=length,
        token_dim=kv_dim,
        num_transformer_submodules=1,
        num_attention_heads=prefix.kv_heads,
        num_layers=len(mmap.layers),
        encoder_hidden_size=kv_dim,
        prefix_projection=False,
        base_model_name_or_path=getattr(model.config, "_name_or_path", None) or None,
    )
    return config, embeddings


def _export_peft_prefix(model: nn.Module, mmap: ModelMap, directory: Path) -> None:
    """peft's format of a causal LM's prefix (:func:`peft_prefix_state`), so the loaded model's
    logits are the trained model's."""
    from safetensors.torch import save_file

    config, embeddings = peft_prefix_state(model, mmap)
    config.inference_mode = True
    config.save_pretrained(str(directory))
    save_file(
        {"prompt_embeddings": embeddings},
        str(directory / "adapter_model.safetensors"),
        metadata={"format": "pt"},
    )
