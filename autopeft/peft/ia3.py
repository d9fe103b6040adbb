"""IA3: learned scaling vectors, initialised to one (identity).

Key: ``ia3.targets``, a subset of ``k``, ``v``, ``ffn_out`` (empty: off), on every layer whose
``layers.{i}`` mask is on. ``k`` and ``v`` scale the key / value projection's output (on a fused
projection, only its slice); ``ffn_out`` scales the FFN's intermediate activation, i.e. the input
of the ``ffn_out`` projection (peft's "feedforward" IA3). Parameters: ``kv_dim`` each for ``k``
and ``v``, ``intermediate`` for ``ffn_out``, per layer whose mask is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft.peft.arch import ArchDesc
from autopeft.peft.method import Key, Method, require, split_targets, target_checker

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap

TARGETS = ("k", "v", "ffn_out")
KEYS = {"targets": Key(target_checker(TARGETS, allow_empty=True), default="")}


@dataclass(frozen=True)
class Ia3Spec:
    targets: tuple[str, ...]  # () when IA3 is off
    layers: tuple[int, ...]  # the layers it scales: those whose mask is on, () when off

    @property
    def active(self) -> bool:
        return bool(self.layers)


def build(values: Mapping[str, Any], layers: tuple[bool, ...]) -> Ia3Spec:
    targets = split_targets(values["targets"])
    return Ia3Spec(targets, tuple(i for i, on in enumerate(layers) if on) if targets else ())


def check(model: nn.Module, mmap: ModelMap, spec: Ia3Spec) -> None:
    if spec.active:
        require(mmap, spec.targets, "ia3.targets")


def inject(model: nn.Module, mmap: ModelMap, spec: Ia3Spec) -> None:
    import torch
    from torch import nn

    from autopeft.peft.host import get_host, new_like

    for i in spec.layers:
        for target in spec.targets:
            proj = mmap.proj(i, target, "ia3.targets")
            host = get_host(model, proj.path)
            kw = new_like(host.base_layer)
            if target == "ffn_out":
                host.ia3_in = nn.Parameter(torch.ones(host.in_features, **kw))
            elif proj.sliced:
                host.ia3_out[target] = nn.Parameter(torch.ones(proj.stop - proj.start, **kw))
                host.ia3_slices[target] = (proj.start, proj.stop)
            else:
                host.ia3_out["all"] = nn.Parameter(torch.ones(host.out_features, **kw))


def count(spec: Ia3Spec, desc: ArchDesc) -> int:
    sizes = {"k": desc.kv_dim, "v": desc.kv_dim, "ffn_out": desc.intermediate}
    return len(spec.layers) * sum(sizes[t] for t in spec.targets)


METHOD = Method("ia3", KEYS, build, check, inject, count, inject_order=2)
