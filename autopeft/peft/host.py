"""The injection host: one wrapper per adapted projection, shared by every method.

A projection (``nn.Linear`` or GPT-2 ``Conv1D``) that gets any PEFT module is replaced by a
:class:`PeftHost` holding the frozen original as ``base_layer`` (as peft does) and, all
optional:

* ``lora``: a ``ModuleDict`` of LoRA branches keyed ``all`` or, on a fused projection, by
  the slice they adapt (``q``, ``k``, ``v``);
* ``ia3_in`` (a vector scaling the input; IA3 on ``ffn_out``) and ``ia3_out`` (vectors scaling
  the output or a slice of it; IA3 on ``k``/``v``);
* ``serial``: bottleneck adapter on the output (on ``ffn_out``);
* ``parallel``: bottleneck adapter fed by the input (on ``ffn_in``); its scaled output is
  handed to the block's ``ffn_out`` host, which adds it to the FFN output.

The modules a host holds (:class:`LoraBranch`, :class:`Bottleneck`) are defined here, with it;
the method modules (``lora.py``, ``ia3.py``, ``bottleneck.py``) decide where they go.

Forward, for input ``x`` (``s`` = IA3 input scale, ``t`` = IA3 output scale)::

    x' = x * s                       (ia3_in)
    f  = (W x' + b + sum_slices pad(lora(x'))) * t
    y  = f + serial(f) + parallel_pending
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


def linear_dims(module: Any) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a GPT-2 Conv1D (weight stored (in, out))."""
    if hasattr(module, "get_base_layer"):  # a peft tuner layer
        module = module.get_base_layer()
    if hasattr(module, "in_features"):  # nn.Linear, or a PeftHost wrapping any projection
        return module.in_features, module.out_features
    return module.weight.shape[0], module.weight.shape[1]


class LoraBranch(nn.Module):
    """``scaling * B A dropout(x)``; ``A`` Kaiming-uniform (a = sqrt(5), as peft), ``B`` zero.
    ``start``/``stop``: the output slice it adapts on a fused projection (None: all of it)."""

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


class Bottleneck(nn.Module):
    """``up(act(down(x)))`` with ``up`` zero-initialised (weight and bias): adds nothing when new.
    ``activation`` is a key of :data:`ACTIVATIONS`."""

    def __init__(
        self,
        in_features: int,
        size: int,
        out_features: int,
        activation: str,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.down = nn.Linear(in_features, size, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, out_features, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class ParallelSite:
    """Hand-off of a parallel adapter's output from the FFN input host to the FFN output host."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: torch.Tensor | None = None


class PeftHost(nn.Module):
    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = linear_dims(base_layer)
        self.lora = nn.ModuleDict()
        self.register_parameter("ia3_in", None)
        self.ia3_out = nn.ParameterDict()
        self.ia3_slices: dict[str, tuple[int, int]] = {}
        self.serial: nn.Module | None = None
        self.parallel: nn.Module | None = None
        self.parallel_scaling = 1.0
        self.parallel_site: ParallelSite | None = None  # set on both ends of a parallel adapter
        self.parallel_role: str | None = None  # "produce" (ffn_in) or "consume" (ffn_out)

    @property
    def weight(self) -> torch.Tensor:  # what code reading ``.weight`` of the projection expects
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    def _out_scale(self) -> torch.Tensor:
        if "all" in self.ia3_out:
            return self.ia3_out["all"]
        pieces, cursor = [], 0
        ref = next(iter(self.ia3_out.values()))
        for name, (start, stop) in sorted(self.ia3_slices.items(), key=lambda kv: kv[1][0]):
            if start > cursor:
                pieces.append(ref.new_ones(start - cursor))
            pieces.append(self.ia3_out[name])
            cursor = stop
        if cursor < self.out_features:
            pieces.append(ref.new_ones(self.out_features - cursor))
        return torch.cat(pieces)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.parallel_role == "produce" and self.parallel is not None:
            self.parallel_site.pending = self.parallel_scaling * self.parallel(x)
        if self.ia3_in is not None:
            x = x * self.ia3_in
        out = self.base_layer(x, *args, **kwargs)
        for branch in self.lora.values():
            delta = branch(x)
            if branch.start is not None:
                delta = F.pad(delta, (branch.start, self.out_features - branch.stop))
            out = out + delta
        if len(self.ia3_out):
            out = out * self._out_scale()
        if self.serial is not None:
            out = out + self.serial(out)
        if self.parallel_role == "consume":
            pending = self.parallel_site.pending
            if pending is None:
                raise RuntimeError(
                    "parallel adapter: the FFN output projection ran without its FFN input "
                    "projection running first in the same block"
                )
            self.parallel_site.pending = None
            out = out + pending
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def get_host(model: nn.Module, path: str) -> PeftHost:
    """The host at ``path``, replacing the plain projection there by one on first use."""
    module = model.get_submodule(path)
    if isinstance(module, PeftHost):
        return module
    host = PeftHost(module)
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, host)
    return host


def new_like(base: nn.Module) -> dict[str, Any]:
    """``device``/``dtype`` keyword arguments matching a base layer's weight; for a quantised weight
    (bitsandbytes 4-bit, stored packed as uint8) the layer's compute dtype (fp32 when unset)."""
    layer = getattr(base, "base_layer", base)
    w = layer.weight
    dtype = (
        w.dtype
        if w.dtype.is_floating_point
        else (getattr(layer, "compute_dtype", None) or torch.float32)
    )
    return {"device": w.device, "dtype": dtype}
