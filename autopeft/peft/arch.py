"""The shapes of an architecture, from its transformers config alone (no model, no torch).

:func:`describe_config` reads a transformers ``PretrainedConfig`` and gives the shapes the cost
model needs (:class:`ArchDesc`) by logical projection name (:data:`LOGICAL`). Its counterpart on
an instantiated model is :func:`autopeft.peft.modelmap.map_model`.

Supported by structure: BERT / RoBERTa / DistilBERT / MiniLM encoders, GPT-2 (Conv1D,
fused qkv) and Llama / Qwen2 / Mistral-style gated decoders (GQA included). Anything else
raises :class:`autopeft.InvalidConfig` naming what was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autopeft.errors import InvalidConfig

#: the logical projections of a transformer block, by which every PEFT key names its targets
LOGICAL = ("q", "k", "v", "o", "ffn_gate", "ffn_in", "ffn_out")


@dataclass(frozen=True)
class ArchDesc:
    """Shapes of an architecture read from its transformers config alone.

    ``family`` is ``encoder`` (BERT-like), ``distilbert``, ``gpt2`` or ``decoder`` (gated
    Llama-style). ``head`` lists the task head's linear layers for ``num_labels`` labels as
    ``(in, out or "labels", bias)``.
    """

    model_type: str
    family: str
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    gated: bool
    fused_qkv: bool
    bias: dict[str, bool] = field(default_factory=dict)
    head: tuple[tuple[int, Any, bool], ...] | None = ()

    @property
    def projections(self) -> tuple[str, ...]:
        """The logical projections this architecture has (:data:`LOGICAL`; ``ffn_gate`` only on a
        gated MLP): what a target ``all`` stands for."""
        return tuple(t for t in LOGICAL if t != "ffn_gate" or self.gated)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shape(self, name: str) -> tuple[int, int]:
        """(in_features, out_features) of logical projection ``name`` (a slice for fused qkv)."""
        h, i = self.hidden, self.intermediate
        shapes = {
            "q": (h, self.q_dim),
            "k": (h, self.kv_dim),
            "v": (h, self.kv_dim),
            "o": (self.q_dim, h),
            "ffn_in": (h, i),
            "ffn_out": (i, h),
        }
        if self.gated:
            shapes["ffn_gate"] = (h, i)
        if name not in shapes:
            raise InvalidConfig(
                f"{self.model_type} has no {name} projection "
                f"(it has {', '.join(s for s in LOGICAL if s in shapes)})",
                "lora.targets",
            )
        return shapes[name]

    def head_params(self, num_labels: int | None) -> int:
        if num_labels is None:
            return 0
        if self.head is None:
            raise InvalidConfig(
                f"the sequence-classification head of model type {self.model_type!r} is not "
                "known to the cost model (count without a head: num_labels=None)",
                "num_labels",
            )
        total = 0
        for n_in, n_out, bias in self.head:
            out = num_labels if n_out == "labels" else n_out
            total += n_in * out + (out if bias else 0)
        return total


# decoders with the Llama block layout (q/k/v/o_proj, gate/up/down_proj, GQA)
_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite")
_BERT_HEAD = ("bert", "ernie", "megatron-bert", "nezha")
_DEBERTA_HEAD = ("deberta", "deberta-v2")
_ROBERTA_HEAD = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text")


#: model types whose blocks the tests map on every family (tiny models of each): no structure
#: check is needed for them when a study is validated (it would import torch and build the model)
MAPPED_TYPES = frozenset(
    (*_LLAMA_LIKE, *_BERT_HEAD, *_ROBERTA_HEAD, "gpt2", "distilbert", "deberta-v2")
)


def _get(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return default


def num_layers(model_config: Any) -> int:
    """Number of transformer blocks of a transformers config."""
    value = _get(model_config, "num_hidden_layers", "n_layer", "n_layers", "num_layers")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidConfig(
            "cannot tell the layer count of this model config "
            "(none of num_hidden_layers, n_layer, n_layers, num_layers)",
            "model_config",
        )
    return value


def describe_config(model_config: Any) -> ArchDesc:
    """The :class:`ArchDesc` of a transformers config (a few attribute reads: cheap)."""
    return _describe(model_config)


def _describe(c: Any) -> ArchDesc:
    model_type = str(_get(c, "model_type", default=""))
    layers = num_layers(c)
    hidden = _get(c, "hidden_size", "n_embd", "dim", "d_model")
    heads = _get(c, "num_attention_heads", "n_head", "n_heads")
    if not isinstance(hidden, int) or not isinstance(heads, int):
        raise InvalidConfig(
            f"model config of type {model_type!r} has no hidden size / head count", "model_config"
        )
    if model_type == "gpt2":
        inter = _get(c, "n_inner") or 4 * hidden
        head = ((hidden, "labels", False),)
        return _ungated(model_type, "gpt2", layers, hidden, heads, inter, head, fused_qkv=True)
    if model_type == "distilbert":
        inter = _get(c, "hidden_dim", "intermediate_size")
        head = ((hidden, hidden, True), (hidden, "labels", True))
        return _ungated(model_type, "distilbert", layers, hidden, heads, inter, head)
    inter = _get(c, "intermediate_size")
    if not isinstance(inter, int):
        raise InvalidConfig(
            f"model config of type {model_type!r} has no intermediate size: not a supported "
            "architecture (BERT-like encoders, DistilBERT, GPT-2, Llama-style decoders)",
            "model_config",
        )
    if model_type in _LLAMA_LIKE:
        kv = _get(c, "num_key_value_heads", default=heads)
        head_dim = _get(c, "head_dim") or hidden // heads
        attn_bias = bool(_get(c, "attention_bias", default=False))
        qkv_bias = True if model_type == "qwen2" else attn_bias
        mlp_bias = bool(_get(c, "mlp_bias", default=False))
        b = {
            "q": qkv_bias,
            "k": qkv_bias,
            "v": qkv_bias,
            "o": attn_bias,
            "ffn_gate": mlp_bias,
            "ffn_in": mlp_bias,
            "ffn_out": mlp_bias,
        }
        return ArchDesc(
            model_type,
            "decoder",
            layers,
            hidden,
            heads,
            kv,
            head_dim,
            inter,
            True,
            False,
            b,
            head=((hidden, "labels", False),),
        )
    if _get(c, "type_vocab_size") is not None or model_type in ("bert",) + _ROBERTA_HEAD:
        if model_type in _ROBERTA_HEAD:
            head = ((hidden, hidden, True), (hidden, "labels", True))
        elif model_type in _DEBERTA_HEAD:  # ContextPooler's dense, then the classifier
            pooled = _get(c, "pooler_hidden_size", default=hidden)  # = hidden in every checkpoint
            head = ((pooled, pooled, True), (hidden, "labels", True))
        elif model_type in _BERT_HEAD:
            head = ((hidden, "labels", True),)
        else:
            head = None  # body known, sequence-classification head not: head_params refuses
        return _ungated(model_type, "encoder", layers, hidden, heads, inter, head)
    raise InvalidConfig(
        f"model type {model_type!r} is not a supported architecture (BERT-like encoders, "
        "DistilBERT, GPT-2, Llama-style decoders)",
        "model_config",
    )


def _ungated(
    model_type: str,
    family: str,
    layers: int,
    hidden: int,
    heads: int,
    inter: int,
    head: tuple[tuple[int, Any, bool], ...] | None,
    fused_qkv: bool = False,
) -> ArchDesc:
    """An architecture without GQA or a gated MLP whose every projection has a bias."""
    bias = {n: True for n in LOGICAL if n != "ffn_gate"}
    return ArchDesc(
        model_type,
        family,
        layers,
        hidden,
        heads,
        heads,
        hidden // heads,
        inter,
        False,
        fused_qkv,
        bias,
        head=head,
    )
