"""The PEFT methods, in injection order: one entry per method with its injector and its
exact parameter count (from the config alone). Adding a method = one module + one line here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autopeft.peft import bottleneck, ia3, lora, prefix
from autopeft.peft.arch import ArchDesc
from autopeft.peft.config import PeftSpec


@dataclass(frozen=True)
class Method:
    name: str
    inject: Callable[..., None]  # (model, ModelMap, PeftSpec) -> None
    count: Callable[[PeftSpec, ArchDesc], int]


METHODS: tuple[Method, ...] = (
    Method("prefix", prefix.inject, prefix.count),
    Method("lora", lora.inject, lora.count),
    Method("ia3", ia3.inject, ia3.count),
    Method("serial", bottleneck.inject_serial, bottleneck.count_serial),
    Method("parallel", bottleneck.inject_parallel, bottleneck.count_parallel),
)

__all__ = ["METHODS", "Method"]
