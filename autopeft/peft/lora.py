"""LoRA: ``y = W x + (alpha / r) * B A dropout(x)`` with ``B`` zero-initialised.

Keys: ``lora.rank`` (per layer: ``lora.rank.{i}``), ``lora.targets`` (logical projections, or
``all``), ``lora.alpha_ratio`` (``alpha = ratio * rank``) or ``lora.alpha``, ``lora.dropout``.
On a fused projection (GPT-2 ``c_attn``) a target ``q``/``k``/``v`` adapts only its output slice;
the target ``all`` adapts every logical projection the model has (``ffn_gate`` only on a gated
MLP). ``A`` is initialised like peft (Kaiming-uniform, a = sqrt(5)), so a fresh model's outputs
are unchanged. Parameters per adapted projection: ``r * (in + out)`` (no bias).
"""

from __future__ import annotations

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
    split_targets,
    target_checker,
)

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap

KEYS = {
    "rank": Key(check_size, per_layer=True, default=0),
    "targets": Key(target_checker(LOGICAL, allow_empty=False, all_alias=True), default="q,v"),
    "alpha_ratio": Key(check_positive, default=2.0),
    "alpha": Key(check_positive),
    "dropout": Key(check_unit, default=0.0),
}


@dataclass(frozen=True)
class LoraSpec:
    rank: tuple[int, ...]  # per layer, 0 where off
    targets: tuple[str, ...]  # ("all",) for every projection of the model
    alpha_ratio: float
    alpha: float | None
    dropout: float

    @property
    def active(self) -> bool:
        return any(self.rank)

    def alpha_for(self, rank: int) -> float:
        """``lora_alpha`` for a rank: ``lora.alpha`` if given, else ``alpha_ratio * rank``."""
        return float(self.alpha) if self.alpha is not None else self.alpha_ratio * rank

    def scaling(self, rank: int) -> float:
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
    )


def check(model: nn.Module, mmap: ModelMap, spec: LoraSpec) -> None:
    """Every target must be a projection of the model (checked even when no rank is set)."""
    available = mmap.layers[0].projs
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
    available = [t for t in LOGICAL if t != "ffn_gate" or desc.gated]
    per_rank = sum(sum(desc.linear_shape(t)) for t in spec.targets_in(available))
    return per_rank * sum(spec.rank)


METHOD = Method("lora", KEYS, build, check, inject, count, inject_order=1)
