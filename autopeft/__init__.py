"""autopeft: multi-objective search over parameter-efficient fine-tuning configurations.

The public surface is re-exported lazily so that ``import autopeft`` stays cheap: torch,
transformers, BoTorch and the server stack are imported only by what uses them.
"""

from __future__ import annotations

import importlib
from typing import Any

from autopeft.errors import InvalidConfig

__version__ = "0.1.0"

_LAZY = {
    "SearchSpace": "autopeft.space",
    "load_space": "autopeft.space",
    "list_presets": "autopeft.space",
    "apply_peft": "autopeft.peft",
    "count_trainable": "autopeft.peft",
    "adapter_memory_bytes": "autopeft.peft",
    "estimate_memory": "autopeft.peft",
    "export_adapter": "autopeft.peft",
    "load_adapter": "autopeft.peft",
    "Client": "autopeft.client",
}

__all__ = ["InvalidConfig", "__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
