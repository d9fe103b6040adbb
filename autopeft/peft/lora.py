"""LoRA: ``y = W x + (alpha / r) * B A dropout(x)`` with ``B`` zero-initialised.

Per-layer ranks (``lora.rank.{i}``), on any subset of the logical projections; on a fused
projection (GPT-2 ``c_attn``) a target ``q``/``k``/``v`` adapts only its output slice; the target
``all`` adapts every logical projection the model has (``ffn_gate`` only on a gated MLP).
``A`` is initialised like peft (Kaiming-uniform, a = sqrt(5)), so a fresh model's outputs are
unchanged. Parameters per adapted projection: ``r * (in + out)`` (no bias).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autopeft.peft.arch import LOGICAL, ArchDesc, ModelMap
from autopeft.peft.config import PeftSpec
from autopeft.peft.host import get_host, new_like


class LoraBranch(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        scaling: float,
        dropout: float,
        start: int | None = None,
        stop: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(rank, out_features, bias=False, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rank = rank
        self.scaling = scaling
        self.start, self.stop = start, stop
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    def extra_repr(self) -> str:
        where = "" if self.start is None else f", slice={self.start}:{self.stop}"
        return f"rank={self.rank}, scaling={self.scaling:g}{where}"


def targets(spec: PeftSpec, available) -> tuple[str, ...]:
    """The logical projections LoRA adapts: ``lora.targets``, with ``all`` standing for every one of
    ``LOGICAL`` in ``available`` (a model's projections, or the names an ``ArchDesc`` has)."""
    if spec.lora_targets == ("all",):
        return tuple(t for t in LOGICAL if t in available)
    return spec.lora_targets


def check_targets(spec: PeftSpec, available) -> None:
    from autopeft.errors import InvalidConfig

    missing = [t for t in targets(spec, available) if t not in available]
    if missing:
        raise InvalidConfig(
            f"this model has no {', '.join(missing)} projection (it has "
            f"{', '.join(sorted(available))})",
            "lora.targets",
        )


def inject(model: nn.Module, mmap: ModelMap, spec: PeftSpec) -> None:
    check_targets(spec, mmap.layers[0].projs)
    for layer in mmap.layers:
        rank = spec.lora_rank[layer.index]
        if rank == 0:
            continue
        for target in targets(spec, mmap.layers[0].projs):
            proj = mmap.proj(layer.index, target, "lora.targets")
            host = get_host(model, proj.path)
            out = proj.stop - proj.start if proj.sliced else host.out_features
            host.lora[target if proj.sliced else "all"] = LoraBranch(
                host.in_features,
                out,
                rank,
                spec.lora_scaling(rank),
                spec.lora_dropout,
                proj.start,
                proj.stop,
                **new_like(host.base_layer),
            )


def count(spec: PeftSpec, desc: ArchDesc) -> int:
    available = [t for t in LOGICAL if t != "ffn_gate" or desc.gated]
    per_rank = sum(sum(desc.linear_shape(t)) for t in targets(spec, available))
    return per_rank * sum(spec.lora_rank)
