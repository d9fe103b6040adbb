"""Exact cost model: trainable parameters and training memory from the config alone.

``count_trainable`` never builds the model: it reads the shapes from the transformers config
(:func:`autopeft.peft.arch.describe_config`) and adds up each method's closed-form count
(see each method's module docstring), plus the task head for ``num_labels`` labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.peft.arch import describe_config
from autopeft.peft.config import parse_peft_config
from autopeft.peft.registry import INJECTION_ORDER


def count_by_method(
    config: Mapping[str, Any], model_config: Any, num_labels: int | None = None
) -> dict[str, int]:
    """Trainable parameters per method (and ``head``), for the same inputs as :func:`count_trainable`."""
    from autopeft.peft.peftlib import decide

    desc = describe_config(model_config)
    spec = parse_peft_config(config, desc.num_layers)
    counts = {m.name: m.count(spec[m.name], desc) for m in INJECTION_ORDER}
    lora = spec["lora"]
    available = desc.projections
    targets = set(lora.targets_in(available)) if lora.active else set()
    targets |= set(spec["ia3"].targets) if spec["ia3"].active else set()
    sliced = desc.fused_qkv and bool(targets & {"q", "k", "v"})
    decide(spec, sliced)  # what peft cannot inject: the same error as apply_peft
    counts["head"] = desc.head_params(num_labels)
    return counts


def count_trainable(
    config: Mapping[str, Any], model_config: Any, num_labels: int | None = None
) -> int:
    """Exact number of trainable parameters after ``apply_peft(model, config)``.

    ``model`` is ``AutoModelForSequenceClassification`` with ``num_labels`` labels, or, when
    ``num_labels`` is None, the bare model (``AutoModel``) or the causal LM
    (``AutoModelForCausalLM``: its LM head is pretrained and stays frozen, tied to the input
    embeddings or not, so it adds nothing). Grouped-query attention is read from the config (``k``
    and ``v`` are ``num_key_value_heads * head_dim`` wide). Computed from ``model_config`` (a
    transformers config) only. Raises :class:`autopeft.InvalidConfig` like ``apply_peft``.
    """
    return sum(count_by_method(config, model_config, num_labels).values())


def adapter_memory_bytes(
    config: Mapping[str, Any],
    model_config: Any,
    num_labels: int | None = None,
    dtype_bytes: int = 4,
) -> int:
    """Training memory of the trainable parameters, in bytes: ``4 * n * dtype_bytes``.

    For ``n = count_trainable(...)`` parameters: the parameters themselves, their gradients,
    and AdamW's two moment buffers (``exp_avg``, ``exp_avg_sq``; torch keeps them in the
    parameter dtype), each ``n * dtype_bytes``. Excludes the frozen base weights and the
    activations (which depend on batch and sequence length, not on the adapter).
    """
    if dtype_bytes not in (1, 2, 4, 8):
        raise InvalidConfig(f"dtype_bytes must be 1, 2, 4 or 8, got {dtype_bytes!r}", "dtype_bytes")
    return 4 * dtype_bytes * count_trainable(config, model_config, num_labels)
