"""Prefix-tuning with a per-layer length: learned key/value vectors prepended to self-attention.

Keys: ``prefix.length`` (per layer: ``prefix.length.{i}``) and ``prefix.reparam``. Layer ``i``
gets ``P_i`` prefix positions of the layer's key/value width ``kv_dim`` (the mechanism, on sdpa
or eager attention, is :mod:`autopeft.peft.attention`).

* ``prefix.reparam = 0``: the prefixes are direct parameters, ``2 * P_i * kv_dim`` per layer.
* ``prefix.reparam = R > 0``: each layer has ``P_i`` token embeddings of width ``hidden``
  mapped through one reparameterisation MLP shared by all layers,
  ``Linear(hidden, R) -> tanh -> Linear(R, 2 * kv_dim)``; parameters ``hidden * sum(P_i)``
  plus ``hidden * R + R + R * 2 * kv_dim + 2 * kv_dim`` once (if any ``P_i > 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.peft.arch import ArchDesc
from autopeft.peft.method import Key, Method, check_size, from_values

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap

KEYS = {
    "length": Key(check_size, per_layer=True, default=0),
    "reparam": Key(check_size, default=0),
}


@dataclass(frozen=True)
class PrefixSpec:
    length: tuple[int, ...]  # per layer, 0 where off
    reparam: int  # width of the shared reparameterisation MLP, 0 for none

    @property
    def active(self) -> bool:
        return any(self.length)


def check(model: nn.Module, mmap: ModelMap, spec: PrefixSpec) -> None:
    """The model's attention must run on sdpa or eager."""
    if spec.active:
        from autopeft.peft.attention import check_supported

        check_supported(model, mmap)


def inject(model: nn.Module, mmap: ModelMap, spec: PrefixSpec) -> None:
    from autopeft.peft.attention import add_prefixes

    add_prefixes(model, mmap, spec.length, spec.reparam)


def count(spec: PrefixSpec, desc: ArchDesc) -> int:
    total = sum(spec.length)
    if not total:
        return 0
    kv = desc.kv_dim
    if not spec.reparam:
        return 2 * kv * total
    r = spec.reparam
    return desc.hidden * total + desc.hidden * r + r + r * 2 * kv + 2 * kv


METHOD = Method("prefix", KEYS, from_values(PrefixSpec), check, inject, count, inject_order=0)
