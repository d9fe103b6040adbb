"""How a sequence classifier turns token states into one vector: the model's own pooling, or
the masked mean of the last hidden states.

Sentence-transformers checkpoints (all-MiniLM-L6-v2 among them) were trained to be read by
mean pooling; their ``[CLS]`` state and BERT pooler were not trained for it. Hugging Face's
``*ForSequenceClassification`` heads read ``[CLS]`` (through the pooler for BERT-style models),
so on such a checkpoint a classifier starts from a worse feature. Measured here (tweets,
MiniLM, frozen features, logistic regression): mean 0.694, ``[CLS]`` 0.662.

``apply_pooling(model, "mean")`` makes the model's existing head read the masked mean instead,
without new parameters (so ``count_trainable`` is unchanged):

* BERT-style bodies (a ``pooler`` module whose output the head reads): the pooler is replaced
  by the mean;
* bodies whose head reads the first token (RoBERTa, DistilBERT, ELECTRA, ...): the first
  token's final state is replaced by the mean.

Decoder heads (GPT-2, Llama: the last token) have no first-token reader: ``mean`` is refused
for them. ``detect_pooling(model_dir)`` says ``"mean"`` for a sentence-transformers folder
whose ``1_Pooling/config.json`` asks for mean tokens, else ``"model"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from autopeft.errors import InvalidConfig

POOLINGS = ("auto", "model", "mean")
ATTR = "autopeft_pooling"
_DECODERS = (
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi",
    "phi3",
    "gpt_neox",
    "opt",
    "falcon",
    "mixtral",
)


def detect_pooling(model_dir: str | Path) -> str:
    """``"mean"`` when the folder is a sentence-transformers model trained with mean pooling."""
    config = Path(model_dir) / "1_Pooling" / "config.json"
    try:
        pooling = json.loads(config.read_text())
    except (OSError, ValueError):
        return "model"
    return (
        "mean"
        if pooling.get("pooling_mode_mean_tokens") and not pooling.get("pooling_mode_cls_token")
        else "model"
    )


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``(batch, dim)`` mean of ``hidden`` ``(batch, length, dim)`` over positions where ``mask`` is 1."""
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask[:, : hidden.shape[1]].to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class _MaskCapture:
    """Remembers the attention mask of the body's current call (a forward pre-hook)."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def __call__(self, module, args, kwargs):
        self.mask = kwargs.get("attention_mask")
        return None


class MeanPooler(nn.Module):
    """Stands in for a BERT pooler: the masked mean of the hidden states (no parameters)."""

    def __init__(self, capture: _MaskCapture) -> None:
        super().__init__()
        self._capture = capture

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return masked_mean(hidden_states, self._capture.mask)


def check_mean_pooling(model_type: str | None) -> None:
    """``InvalidConfig`` naming ``workload.pooling`` for a decoder (its head reads the last token)."""
    if model_type in _DECODERS:
        raise InvalidConfig(
            f"mean pooling is for encoder classifiers; model type {model_type!r} reads its "
            "last token (use pooling 'model')",
            "workload.pooling",
        )


def apply_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Make ``model``'s classification head read ``pooling`` (``model``: leave it; ``mean``)."""
    if pooling not in ("model", "mean"):
        raise InvalidConfig(
            f"pooling must be 'model' or 'mean' here, got {pooling!r}", "workload.pooling"
        )
    if pooling == "model" or getattr(model, ATTR, "model") == pooling:
        return model
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    body = getattr(model, "base_model", None)
    check_mean_pooling(model_type)
    if body is None or body is model:
        raise InvalidConfig(
            f"mean pooling needs a model with a separate body; {type(model).__name__} has "
            "none (use pooling 'model')",
            "workload.pooling",
        )
    capture = _MaskCapture()
    body.register_forward_pre_hook(capture, with_kwargs=True)
    if isinstance(getattr(body, "pooler", None), nn.Module):
        body.pooler = MeanPooler(capture)
    else:

        def first_token_is_mean(module, args, kwargs, output):
            hidden = output[0]
            pooled = masked_mean(hidden, capture.mask).unsqueeze(1)
            hidden = torch.cat([pooled, hidden[:, 1:]], dim=1)
            if isinstance(output, tuple):
                return (hidden, *output[1:])
            output["last_hidden_state"] = hidden
            return output

        body.register_forward_hook(first_token_is_mean, with_kwargs=True)
    setattr(model, ATTR, pooling)
    return model
