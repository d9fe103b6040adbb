"""Prompt tuning (Lester et al., 2021), through Hugging Face peft: ``prompt.length`` learned
virtual-token embeddings prepended to every input sequence (issue 35).

Keys: ``prompt.length`` (the number of virtual tokens, peft's ``num_virtual_tokens``; 0 = off)
and ``prompt.init`` (``random``: peft's ``RANDOM``; ``vocab``: peft's ``SAMPLE_VOCAB``, rows of
the model's own input embeddings drawn at random). Parameters: ``length * hidden`` (peft's
``PromptEmbedding``; one transformer stack, so ``num_transformer_submodules`` is 1). The layer
mask ``layers.{i}`` does not apply: the prompt enters before the first layer.

The embedding is peft's ``PromptEmbedding``, built from a ``PromptTuningConfig``; the forward is
peft's ``PeftModelForSequenceClassification`` prompt-tuning forward, run as a pre-hook of the model
so the trial keeps its own model object (its head, pooling, checkpoints and parameter names):

* the input embeddings become ``[prompt; embed(input_ids)]``, the attention mask gets ``length``
  leading ones, ``token_type_ids`` leading zeros, and ``position_ids`` are dropped (peft ignores
  them: positions run 0.. over prompt and text);
* a decoder's sequence-classification head reads the last position when given embeddings
  (transformers cannot find the last token without ``input_ids``): a right-padded batch is first
  turned into a left-padded one, so that position is each row's last token. That is the same
  input a user gives ``PeftModel`` for batched decoder inference, and the export in peft's format
  (``adapter_config.json`` + ``prompt_embeddings``) gives the trial's outputs there.

Refused with :class:`InvalidConfig` naming ``prompt.length``: a causal LM (the completion-only
loss reads logits by token position; prompt tuning would shift them) and a config that mixes
prompt tuning with another method (peft takes one method per config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.errors import InvalidConfig
from autopeft.peft.arch import ArchDesc
from autopeft.peft.method import Key, Method, check_size, choice_checker

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap

INITS = ("random", "vocab")
ATTR = "autopeft_prompt"  # the PromptEmbedding, a sub-module of the adapted model
KEYS = {
    "length": Key(check_size, default=0),
    "init": Key(choice_checker(INITS, "prompt init"), default="random"),
}
#: heads that read the last position (their family in :class:`~autopeft.peft.arch.ArchDesc`)
LAST_TOKEN_FAMILIES = ("gpt2", "decoder")


@dataclass(frozen=True)
class PromptSpec:
    length: int
    init: str

    @property
    def active(self) -> bool:
        return self.length > 0


def build(values: Any, layers: tuple[bool, ...]) -> PromptSpec:
    return PromptSpec(int(values["length"]), values["init"])


def check(model: nn.Module, mmap: ModelMap, spec: PromptSpec) -> None:
    if not spec.active:
        return
    from autopeft.peft.modelmap import is_causal_lm

    if is_causal_lm(model):
        raise InvalidConfig(
            "prompt tuning is for sequence classification here: on a causal LM the virtual "
            "tokens shift the positions the completion loss reads (use LoRA or another method)",
            "prompt.length",
        )
    if model.get_input_embeddings() is None:
        raise InvalidConfig("this model has no input embeddings to prompt", "prompt.length")


def inject(model: nn.Module, mmap: ModelMap, spec: PromptSpec) -> None:
    """The own path never injects a prompt (``peftlib.route`` sends it to peft)."""
    if spec.active:
        raise InvalidConfig("prompt tuning is injected by peft only", "prompt.length")


def count(spec: PromptSpec, desc: ArchDesc) -> int:
    return spec.length * desc.hidden if spec.active else 0


METHOD = Method("prompt", KEYS, build, check, inject, count, inject_order=9)


def peft_config(spec: PromptSpec, model: nn.Module, task_type: str | None) -> Any:
    import peft

    desc = _desc(model)
    return peft.PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=spec.length,
        token_dim=desc.hidden,
        num_transformer_submodules=1,
        num_attention_heads=desc.heads,
        num_layers=desc.num_layers,
        prompt_tuning_init="SAMPLE_VOCAB" if spec.init == "vocab" else "RANDOM",
        base_model_name_or_path=getattr(model.config, "_name_or_path", None) or None,
    )


def _desc(model: nn.Module) -> ArchDesc:
    from autopeft.peft.arch import describe_config

    return describe_config(model.config)


def inject_prompt(model: nn.Module, spec: PromptSpec, task_type: str | None) -> Any:
    """Add peft's ``PromptEmbedding`` as ``model.autopeft_prompt`` and the prompt-tuning forward
    as a pre-hook; returns the peft config."""
    from peft.tuners.prompt_tuning import PromptEmbedding

    config = peft_config(spec, model, task_type)
    embeddings = model.get_input_embeddings()
    encoder = PromptEmbedding(config, embeddings)
    encoder.to(embeddings.weight.device)
    setattr(model, ATTR, encoder)
    last_token = _desc(model).family in LAST_TOKEN_FAMILIES and task_type == "SEQ_CLS"
    model.register_forward_pre_hook(_PromptHook(spec.length, last_token), with_kwargs=True)
    return config


def left_align(embeds: Any, mask: Any, *others: Any) -> tuple[Any, Any, tuple[Any, ...]]:
    """Rows of a right-padded batch moved so that their padding comes first (the last position
    is then each row's last token); rows already ending in a token are unchanged."""
    import torch

    length = mask.shape[1]
    shift = length - mask.sum(dim=1, keepdim=True).long()  # (B, 1): padding of each row
    shift = torch.where(mask[:, -1:].bool(), torch.zeros_like(shift), shift)
    index = (torch.arange(length, device=mask.device)[None, :] - shift) % length
    moved = [t.gather(1, index) for t in (mask, *others)]
    embeds = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
    return embeds, moved[0], tuple(moved[1:])


class _PromptHook:
    """peft's prompt-tuning forward as a forward pre-hook (see the module doc)."""

    def __init__(self, length: int, last_token: bool):
        self.length = length
        self.last_token = last_token

    def __call__(self, model, args, kwargs):
        import torch

        kwargs = dict(kwargs)
        if args:  # model(input_ids, ...)
            kwargs["input_ids"], args = args[0], args[1:]
        input_ids = kwargs.pop("input_ids", None)
        embeds = kwargs.pop("inputs_embeds", None)
        if embeds is None:
            embeds = model.get_input_embeddings()(input_ids)
        batch = embeds.shape[0]
        mask = kwargs.get("attention_mask")
        types = kwargs.get("token_type_ids")
        if self.last_token and mask is not None:
            embeds, mask, moved = left_align(embeds, mask, *(() if types is None else (types,)))
            types = moved[0] if moved else None
        encoder = getattr(model, ATTR)
        indices = torch.arange(self.length, device=embeds.device).expand(batch, -1)
        prompts = encoder(indices).to(embeds.dtype)
        kwargs["inputs_embeds"] = torch.cat([prompts, embeds], dim=1)
        if mask is not None:
            ones = torch.ones(batch, self.length, dtype=mask.dtype, device=mask.device)
            kwargs["attention_mask"] = torch.cat([ones, mask], dim=1)
        if types is not None:
            zeros = torch.zeros(batch, self.length, dtype=types.dtype, device=types.device)
            kwargs["token_type_ids"] = torch.cat([zeros, types], dim=1)
        kwargs.pop("position_ids", None)
        return args, kwargs
