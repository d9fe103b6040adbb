"""autopeft: multi-objective search over parameter-efficient fine-tuning configurations.

The public surface is re-exported lazily so that ``import autopeft`` stays cheap: torch,
transformers, BoTorch and the server stack are imported only by what uses them.
"""

from __future__ import annotations

from autopeft.errors import InvalidConfig
from autopeft.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
