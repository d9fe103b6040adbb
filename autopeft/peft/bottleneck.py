"""Bottleneck adapters: serial (Pfeiffer, after the FFN) and parallel (beside the FFN).

Two methods sharing one module: ``serial`` (keys ``serial.size[.i]``, ``serial.activation``)
and ``parallel`` (``parallel.size[.i]``, ``parallel.scaling``, ``parallel.activation``).
``down: Linear(d, m)``, activation, ``up: Linear(m, d)`` with ``up`` zero-initialised
(weight and bias), so a fresh adapter adds nothing. Serial: ``y = f(x) + up(act(down(f(x))))``
on the FFN output ``f(x)`` (the ``ffn_out`` projection's output, inside the block's
residual). Parallel: ``y = f(x) + scaling * up(act(down(x)))`` with ``x`` the FFN input (the
``ffn_in`` projection's input). Parameters per adapter of size ``m`` on hidden ``h``:
``2 h m + m + h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autopeft.peft.arch import ArchDesc
from autopeft.peft.method import (
    Key,
    Method,
    check_positive,
    check_size,
    choice_checker,
    from_values,
    require,
)

if TYPE_CHECKING:
    from torch import nn

    from autopeft.peft.modelmap import ModelMap

#: the activation names (``autopeft.peft.host.ACTIVATIONS`` maps each to its torch module)
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
_activation = Key(choice_checker(ACTIVATIONS, "activation"), default="relu")

SERIAL_KEYS = {"size": Key(check_size, per_layer=True, default=0), "activation": _activation}
PARALLEL_KEYS = {
    "size": Key(check_size, per_layer=True, default=0),
    "scaling": Key(check_positive, default=4.0),
    "activation": _activation,
}


@dataclass(frozen=True)
class BottleneckSpec:
    size: tuple[int, ...]  # per layer, 0 where off
    activation: str
    scaling: float = 1.0  # the parallel adapter's output scale (a serial adapter has none)

    @property
    def active(self) -> bool:
        return any(self.size)


def check_serial(model: nn.Module, mmap: ModelMap, spec: BottleneckSpec) -> None:
    if spec.active:
        require(mmap, ("ffn_out",), "serial.size")


def check_parallel(model: nn.Module, mmap: ModelMap, spec: BottleneckSpec) -> None:
    if spec.active:
        require(mmap, ("ffn_in", "ffn_out"), "parallel.size")


def inject_serial(model: nn.Module, mmap: ModelMap, spec: BottleneckSpec) -> None:
    from autopeft.peft.host import Bottleneck, get_host, new_like

    for layer in mmap.layers:
        size = spec.size[layer.index]
        if size:
            host = get_host(model, mmap.proj(layer.index, "ffn_out", "serial.size").path)
            host.serial = Bottleneck(
                host.out_features,
                size,
                host.out_features,
                spec.activation,
                **new_like(host.base_layer),
            )


def inject_parallel(model: nn.Module, mmap: ModelMap, spec: BottleneckSpec) -> None:
    from autopeft.peft.host import Bottleneck, ParallelSite, get_host, new_like

    for layer in mmap.layers:
        size = spec.size[layer.index]
        if not size:
            continue
        producer = get_host(model, mmap.proj(layer.index, "ffn_in", "parallel.size").path)
        consumer = get_host(model, mmap.proj(layer.index, "ffn_out", "parallel.size").path)
        site = ParallelSite()
        producer.parallel = Bottleneck(
            producer.in_features,
            size,
            consumer.out_features,
            spec.activation,
            **new_like(producer.base_layer),
        )
        producer.parallel_scaling = spec.scaling
        producer.parallel_site, producer.parallel_role = site, "produce"
        consumer.parallel_site, consumer.parallel_role = site, "consume"


def count(spec: BottleneckSpec, desc: ArchDesc) -> int:
    total = sum(spec.size)
    active = sum(1 for s in spec.size if s)
    return 2 * desc.hidden * total + total + desc.hidden * active


build = from_values(BottleneckSpec)
SERIAL = Method("serial", SERIAL_KEYS, build, check_serial, inject_serial, count, inject_order=3)
PARALLEL = Method(
    "parallel", PARALLEL_KEYS, build, check_parallel, inject_parallel, count, inject_order=4
)
