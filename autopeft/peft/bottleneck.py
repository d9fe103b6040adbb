"""Bottleneck adapters: serial (Pfeiffer, after the FFN) and parallel (beside the FFN).

``down: Linear(d, m)``, activation, ``up: Linear(m, d)`` with ``up`` zero-initialised
(weight and bias), so a fresh adapter adds nothing. Serial: ``y = f(x) + up(act(down(f(x))))``
on the FFN output ``f(x)`` (the ``ffn_out`` projection's output, inside the block's
residual). Parallel: ``y = f(x) + scaling * up(act(down(x)))`` with ``x`` the FFN input (the
``ffn_in`` projection's input). Parameters per adapter of size ``m`` on hidden ``h``:
``2 h m + m + h``.
"""

from __future__ import annotations

import torch
from torch import nn

from autopeft.peft.arch import ArchDesc, ModelMap
from autopeft.peft.config import PeftSpec
from autopeft.peft.host import ParallelSite, get_host, new_like

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
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


def inject_serial(model: nn.Module, mmap: ModelMap, spec: PeftSpec) -> None:
    for layer in mmap.layers:
        size = spec.serial_size[layer.index]
        if size:
            host = get_host(model, mmap.proj(layer.index, "ffn_out", "serial.size").path)
            host.serial = Bottleneck(
                host.out_features,
                size,
                host.out_features,
                spec.serial_activation,
                **new_like(host.base_layer),
            )


def inject_parallel(model: nn.Module, mmap: ModelMap, spec: PeftSpec) -> None:
    for layer in mmap.layers:
        size = spec.parallel_size[layer.index]
        if not size:
            continue
        producer = get_host(model, mmap.proj(layer.index, "ffn_in", "parallel.size").path)
        consumer = get_host(model, mmap.proj(layer.index, "ffn_out", "parallel.size").path)
        site = ParallelSite()
        producer.parallel = Bottleneck(
            producer.in_features,
            size,
            consumer.out_features,
            spec.parallel_activation,
            **new_like(producer.base_layer),
        )
        producer.parallel_scaling = spec.parallel_scaling
        producer.parallel_site, producer.parallel_role = site, "produce"
        consumer.parallel_site, consumer.parallel_role = site, "consume"


def _size_params(hidden: int, sizes) -> int:
    total = sum(sizes)
    active = sum(1 for s in sizes if s)
    return 2 * hidden * total + total + hidden * active


def count_serial(spec: PeftSpec, desc: ArchDesc) -> int:
    return _size_params(desc.hidden, spec.serial_size)


def count_parallel(spec: PeftSpec, desc: ArchDesc) -> int:
    return _size_params(desc.hidden, spec.parallel_size)
