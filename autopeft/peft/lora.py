"""LoRA: ``y = W x + (alpha / r) * B A dropout(x)`` with ``B`` zero-initialised.

Keys: ``lora.rank`` (per layer: ``lora.rank.{i}``), ``lora.targets`` (logical projections, or
``all``), ``lora.alpha_ratio`` (``alpha = ratio * rank``) or ``lora.alpha``, ``lora.dropout``.
On a fused projection (GPT-2 ``c_attn``) a target ``q``/``k``/``v`` adapts only its output slice;
the target ``all`` adapts every logical projection the model has (``ffn_gate`` only on a gated
MLP). ``A`` is initialised like peft (Kaiming-uniform, a = sqrt(5)), so a fresh model's outputs
are unchanged. Parameters per adapted projection: ``r * (in + out)`` (no bias).

The LoRA family (issue 35): ``lora.variant`` is ``lora`` (default), ``rslora`` (rank-stabilised:
``scaling = alpha / sqrt(r)``) or ``dora`` (weight-decomposed: a trainable magnitude vector of
``out`` entries per adapted projection besides ``A`` and ``B``); ``lora.init`` is ``kaiming``
(default, as above), ``gaussian`` (``A ~ N(0, 1/r)``), ``pissa`` or ``olora`` (``A`` and ``B`` from
the frozen weight's SVD / QR, the weight keeping the residual); ``lora.plus_ratio`` (LoRA+, >= 1) is a
training knob: ``B`` trains at ``plus_ratio`` times the learning rate. DoRA and the inits other than
``kaiming`` are injected by Hugging Face peft (:mod:`autopeft.peft.peftlib`), so they cannot adapt a
slice of a fused projection (GPT-2 ``q``/``k``/``v``) nor share a config with the methods written
here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.errors import InvalidConfig
from autopeft.peft.arch import LOGICAL, ArchDesc
from autopeft.peft.method import (
    ALL_TARGETS,
    Key,
    Method,
    check_positive,
    check_size,
    check_unit,
    choice_checker,
    split_targets,
    target_checker,
)

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap


def check_plus_ratio(value: Any, where: str) -> float:
    """LoRA+'s learning-rate ratio of ``B`` to ``A``: a number >= 1 (1: plain LoRA)."""
    value = check_positive(value, where)
    if value < 1:
        raise InvalidConfig(f"the LoRA+ ratio must be >= 1 (1: off), got {value!r}", where)
    return value


KEYS = {
    "rank": Key(check_size, per_layer=True, default=0),
    "targets": Key(target_checker(LOGICAL, allow_empty=False, all_alias=True), default="q,v"),
    "alpha_ratio": Key(check_positive, default=2.0),
    "alpha": Key(check_positive),
    "dropout": Key(check_unit, default=0.0),
    "variant": Key(choice_checker(("lora", "rslora", "dora"), "LoRA variant"), default="lora"),
    "init": Key(
        choice_checker(("kaiming", "gaussian", "pissa", "olora"), "LoRA init"), default="kaiming"
    ),
    "plus_ratio": Key(check_plus_ratio, default=1.0),
}


@dataclass(frozen=True)
class LoraSpec:
    rank: tuple[int, ...]  # per layer, 0 where off
    targets: tuple[str, ...]  # ("all",) for every projection of the model
    alpha_ratio: float
    alpha: float | None
    dropout: float
    variant: str = "lora"
    init: str = "kaiming"
    plus_ratio: float = 1.0

    @property
    def active(self) -> bool:
        return any(self.rank)

    @property
    def needs_peft(self) -> bool:
        """Whether only peft can inject it (DoRA, an init other than Kaiming-uniform)."""
        return self.active and (self.variant == "dora" or self.init != "kaiming")

    def alpha_for(self, rank: int) -> float:
        """``lora_alpha`` for a rank: ``lora.alpha`` if given, else ``alpha_ratio * rank``."""
        return float(self.alpha) if self.alpha is not None else self.alpha_ratio * rank

    def scaling(self, rank: int) -> float:
        if self.variant == "rslora":
            return self.alpha_for(rank) / math.sqrt(rank)
        return self.alpha_for(rank) / rank

    def targets_in(self, available: Collection[str]) -> tuple[str, ...]:
        """The logical projections adapted: ``targets``, with ``all`` standing for every one of
        :data:`LOGICAL` in ``available`` (a model's projections, or the names an ``ArchDesc`` has)."""
        if self.targets == (ALL_TARGETS,):
            return tuple(t for t in LOGICAL if t in available)
        return self.targets


def build(values: Mapping[str, Any], layers: tuple[bool, ...]) -> LoraSpec:
    return LoraSpec(
        rank=values["rank"],
        targets=split_targets(values["targets"]),
        alpha_ratio=values["alpha_ratio"],
        alpha=values["alpha"],
        dropout=values["dropout"],
        variant=values["variant"],
        init=values["init"],
        plus_ratio=values["plus_ratio"],
    )


def _olora_conv1d(spec: LoraSpec, conv1d: bool) -> None:
    if spec.active and spec.init == "olora" and conv1d:
        raise InvalidConfig(
            "peft's OLoRA init does not handle GPT-2's Conv1D projections (their weight is stored "
            "transposed); use pissa or gaussian",
            "lora.init",
        )


def check(model: nn.Module, mmap: ModelMap, spec: LoraSpec) -> None:
    """Every target must be a projection of the model (checked even when no rank is set)."""
    available = mmap.layers[0].projs
    _olora_conv1d(spec, any(p.sliced for p in available.values()))  # fused: GPT-2's Conv1D
    missing = [t for t in spec.targets_in(available) if t not in available]
    if missing:
        raise InvalidConfig(
            f"this model has no {', '.join(missing)} projection (it has "
            f"{', '.join(sorted(available))})",
            "lora.targets",
        )


def inject(model: nn.Module, mmap: ModelMap, spec: LoraSpec) -> None:
    from autopeft.peft.host import LoraBranch, get_host, new_like

    targets = spec.targets_in(mmap.layers[0].projs)
    for layer in mmap.layers:
        rank = spec.rank[layer.index]
        if rank == 0:
            continue
        for target in targets:
            proj = mmap.proj(layer.index, target, "lora.targets")
            host = get_host(model, proj.path)
            out = proj.stop - proj.start if proj.sliced else host.out_features
            host.lora[target if proj.sliced else "all"] = LoraBranch(
                host.in_features,
                out,
                rank,
                spec.scaling(rank),
                spec.dropout,
                proj.start,
                proj.stop,
                **new_like(host.base_layer),
            )


def count(spec: LoraSpec, desc: ArchDesc) -> int:
    _olora_conv1d(spec, desc.family == "gpt2")
    available = desc.projections
    targets = spec.targets_in(available)
    per_rank = sum(sum(desc.linear_shape(t)) for t in targets)
    total = per_rank * sum(spec.rank)
    if spec.variant == "dora":  # one magnitude per output feature of each adapted projection
        total += sum(desc.linear_shape(t)[1] for t in targets) * sum(1 for r in spec.rank if r)
    return total


METHOD = Method("lora", KEYS, build, check, inject, count, inject_order=1)
