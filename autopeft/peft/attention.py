"""The self-attention injection site: learned key/value prefixes prepended to attention.

:func:`add_prefixes` gives a block's self-attention module a :class:`PrefixKV` (attribute
:data:`ATTR`); its keys/values have the layer's key/value width ``kv_dim = kv_heads * head_dim``
(GQA models: the key/value heads, before they are repeated for the query heads), are not
rotated (RoPE) and are not part of any cache; every query attends to every prefix position (the
attention mask is padded with "visible" columns, and a causal mask that was left implicit is
made explicit). With a reparameterisation, each prefix is token embeddings mapped through one
:class:`PrefixReparam` MLP shared by all layers (attribute :data:`REPARAM_ATTR` of the model).

On a causal LM the text follows the prefix, as in prefix-tuning's GPT-2 setting and peft's
prefix tuning (the prefix as past key/values): the real tokens take positions ``P..P+n-1``
(``P`` the longest prefix; a pre-hook of the model adds ``P`` to its position ids), so a
prefix of one length in every layer gives exactly peft's logits and is exported in peft's
format. A classifier's tokens keep positions ``0..n-1``, the positions its encoder was trained
with (peft's prefix tuning raises on sequence classifiers up to peft 0.21 and from 0.22 moves
their text after the prefix; a classifier's prefix is exported in autopeft's format only).

Mechanism: transformers routes attention through ``ALL_ATTENTION_FUNCTIONS``. We register
``autopeft_prefix_sdpa`` / ``autopeft_prefix_eager`` (attention function + mask function of
the wrapped implementation) and switch the model to it; the wrapper concatenates the
module's prefix to ``key``/``value``, pads the mask, then calls the original implementation.
A module without a prefix passes straight through. Supported base implementations: ``sdpa``
and ``eager``. The method (keys, spec, count) is :mod:`autopeft.peft.prefix`.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from autopeft.errors import InvalidConfig
from autopeft.peft.host import linear_dims, new_like
from autopeft.peft.modelmap import ModelMap, is_causal_lm

ATTR = "autopeft_prefix"  # attribute of the self-attention module holding its PrefixKV
REPARAM_ATTR = "autopeft_prefix_reparam"  # attribute of the top-level model holding the shared MLP
OFFSET_ATTR = "_autopeft_text_offset"  # in model.__dict__ of a causal LM: its text's first position
_WRAPPED = {"sdpa": "autopeft_prefix_sdpa", "eager": "autopeft_prefix_eager"}


class PrefixReparam(nn.Module):
    """Shared MLP mapping a prefix token embedding to its key and value."""

    def __init__(self, hidden: int, width: int, kv_dim: int, device=None, dtype=None):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, width, device=device, dtype=dtype),
            nn.Tanh(),
            nn.Linear(width, 2 * kv_dim, device=device, dtype=dtype),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PrefixKV(nn.Module):
    """The prefix of one self-attention module: ``kv()`` gives key, value as (kv_heads, P, head_dim)."""

    def __init__(
        self,
        length: int,
        kv_heads: int,
        head_dim: int,
        hidden: int,
        reparam: PrefixReparam | None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.length, self.kv_heads, self.head_dim = length, kv_heads, head_dim
        kv_dim = kv_heads * head_dim
        if reparam is None:
            self.key = nn.Parameter(torch.randn(length, kv_dim, device=device, dtype=dtype))
            self.value = nn.Parameter(torch.randn(length, kv_dim, device=device, dtype=dtype))
            self.embedding = None
        else:
            self.embedding = nn.Parameter(torch.randn(length, hidden, device=device, dtype=dtype))
        # not a registered submodule: the MLP is shared, and registered once on the top-level model
        object.__setattr__(self, "_reparam", reparam)

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.embedding is None:
            key, value = self.key, self.value
        else:
            key, value = self._reparam(self.embedding).chunk(2, dim=-1)
        shape = (self.length, self.kv_heads, self.head_dim)
        return key.reshape(shape).transpose(0, 1), value.reshape(shape).transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"length={self.length}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
            f"reparam={self.embedding is not None}"
        )


# ----------------------------------------------------------------------------- attention hook
def _with_prefix(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    base: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    prefix: PrefixKV = getattr(module, ATTR)
    pk, pv = prefix.kv()
    batch = key.shape[0]
    pk = pk.to(key.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
    pv = pv.to(value.dtype).unsqueeze(0).expand(batch, -1, -1, -1)
    n = prefix.length
    q_len, kv_len = query.shape[2], key.shape[2]
    key = torch.cat([pk, key], dim=2)
    value = torch.cat([pv, value], dim=2)
    if mask is None:
        if base == "sdpa" and getattr(module, "is_causal", True) and q_len > 1:
            # sdpa would have applied is_causal itself; with a prefix the key length differs, so spell it out
            rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
            causal = rows >= torch.arange(kv_len, device=query.device)[None, :]
            mask = torch.cat([causal.new_ones(q_len, n), causal], dim=1)[None, None]
        return key, value, mask
    if mask.dtype == torch.bool:
        pad = mask.new_ones(*mask.shape[:-1], n)
    else:
        pad = mask.new_zeros(*mask.shape[:-1], n)
    return key, value, torch.cat([pad, mask], dim=-1)


def _sdpa(module: nn.Module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if getattr(module, ATTR, None) is not None:
        key, value, attention_mask = _with_prefix(module, query, key, value, attention_mask, "sdpa")
        if attention_mask is not None:
            kwargs["is_causal"] = False
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _eager(module: nn.Module, query, key, value, attention_mask, **kwargs):
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise InvalidConfig(
            f"{type(module).__name__}'s module defines no eager_attention_forward: "
            "load the model with attn_implementation='sdpa' for prefix-tuning",
            "prefix.length",
        )
    if getattr(module, ATTR, None) is not None:
        key, value, attention_mask = _with_prefix(
            module, query, key, value, attention_mask, "eager"
        )
    return fn(module, query, key, value, attention_mask, **kwargs)


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    AttentionInterface.register(_WRAPPED["sdpa"], _sdpa)
    AttentionInterface.register(_WRAPPED["eager"], _eager)
    AttentionMaskInterface.register(_WRAPPED["sdpa"], sdpa_mask)
    AttentionMaskInterface.register(_WRAPPED["eager"], eager_mask)
    _registered = True


def _configs(model: nn.Module, mmap: ModelMap) -> list[Any]:
    configs = {id(model.config): model.config}
    for layer in mmap.layers:
        cfg = getattr(model.get_submodule(layer.attention), "config", None)
        if cfg is not None:
            configs[id(cfg)] = cfg
    return list(configs.values())


def routes_attention(model_type: str) -> bool | None:
    """Whether transformers' model class of ``model_type`` computes attention through its attention
    interface (``_supports_attention_backend``: where prefixes are added); None when unknown.
    DeBERTa computes its disentangled attention itself: prefixes there would never be read."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(model_type)
    if not isinstance(name, str):
        return None
    cls = getattr(transformers, name, None)
    return None if cls is None else bool(getattr(cls, "_supports_attention_backend", False))


def _refuse_unrouted(model_type: str) -> None:
    raise InvalidConfig(
        f"model type {model_type!r} computes its attention itself, not through transformers' "
        "attention interface, so prefix-tuning cannot reach it (use LoRA, IA3, adapters or "
        "prompt tuning)",
        "prefix.length",
    )


def check_supported(model: nn.Module, mmap: ModelMap) -> None:
    """Raise InvalidConfig unless every attention of ``model`` runs on sdpa or eager, through
    transformers' attention interface."""
    if not getattr(type(model), "_supports_attention_backend", False):
        _refuse_unrouted(getattr(model.config, "model_type", type(model).__name__))
    for cfg in _configs(model, mmap):
        current = cfg._attn_implementation or "eager"
        if current not in _WRAPPED and current not in _WRAPPED.values():
            raise InvalidConfig(
                f"prefix-tuning supports the 'sdpa' and 'eager' attention implementations, this "
                f"model uses {current!r}: load it with attn_implementation='sdpa'",
                "prefix.length",
            )


def _switch_implementation(model: nn.Module, mmap: ModelMap) -> None:
    check_supported(model, mmap)
    for cfg in _configs(model, mmap):
        current = cfg._attn_implementation or "eager"
        if current in _WRAPPED:
            cfg._attn_implementation = _WRAPPED[current]


def _kv_shape(attention: nn.Module, k_width: int, config: Any) -> tuple[int, int]:
    head_dim = (
        getattr(attention, "head_dim", None)
        or getattr(attention, "attention_head_size", None)
        or getattr(config, "head_dim", None)
    )
    if not head_dim:
        heads = config.num_attention_heads
        head_dim = config.hidden_size // heads
    return k_width // head_dim, head_dim


def add_prefixes(model: nn.Module, mmap: ModelMap, lengths: tuple[int, ...], reparam: int) -> None:
    """Give the self-attention of block ``i`` a prefix of ``lengths[i]`` positions (none where 0),
    reparameterised through one shared MLP of width ``reparam`` (0: direct parameters), and switch
    the model to the prefix-aware attention implementation."""
    if not any(lengths):
        return
    _register()
    config = model.config
    first = next(layer for layer in mmap.layers if lengths[layer.index])
    k_proj = mmap.proj(first.index, "k", "prefix.length")
    k_module = model.get_submodule(k_proj.path)
    k_width = k_proj.stop - k_proj.start if k_proj.sliced else linear_dims(k_module)[1]
    kv_heads, head_dim = _kv_shape(model.get_submodule(first.attention), k_width, config)
    hidden = linear_dims(k_module)[0]
    kw = new_like(k_module)
    shared = None
    if reparam:
        shared = PrefixReparam(hidden, reparam, kv_heads * head_dim, **kw)
        model.add_module(REPARAM_ATTR, shared)
    for layer in mmap.layers:
        length = lengths[layer.index]
        if length:
            attention = model.get_submodule(layer.attention)
            attention.add_module(ATTR, PrefixKV(length, kv_heads, head_dim, hidden, shared, **kw))
    _switch_implementation(model, mmap)
    if is_causal_lm(model):
        model.__dict__[OFFSET_ATTR] = max(lengths)
        model.register_forward_pre_hook(_text_after_prefix, with_kwargs=True)


def _text_after_prefix(model: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Forward pre-hook of a prefixed causal LM: its text's position ids start after the prefix
    (given ids are shifted; otherwise the cache position, or the cache length, starts them)."""
    offset = model.__dict__.get(OFFSET_ATTR, 0)
    if not offset:
        return None
    given = kwargs.get("position_ids")
    if given is not None:
        positions = given + offset
    else:
        ref = kwargs.get("input_ids", args[0] if args else None)
        if ref is None:
            ref = kwargs.get("inputs_embeds")
        if ref is None:
            return None
        batch, n = ref.shape[:2]
        start = kwargs.get("cache_position")
        if start is None:
            # the cache argument: ``cache`` since transformers 5.25, ``past_key_values`` before
            past = kwargs.get("cache", kwargs.get("past_key_values"))
            seen = past.get_seq_length() if hasattr(past, "get_seq_length") else 0
            start = torch.arange(seen, seen + n, device=ref.device)
        positions = (start + offset).unsqueeze(0).expand(batch, -1)
    limit = getattr(model.config, "n_positions", None)  # learned absolute positions (GPT-2)
    if limit is not None and positions.numel() and int(positions.max()) >= limit:
        raise InvalidConfig(
            f"on a causal LM the text follows the prefix: a {offset}-position prefix and "
            f"{int(positions.max()) + 1 - offset} text positions exceed the model's {limit} "
            "positions (n_positions): use a shorter prefix.length or max_length",
            "prefix.length",
        )
    kwargs["position_ids"] = positions
    return args, kwargs
