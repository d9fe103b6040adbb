"""The PEFT layer: LoRA, serial / parallel bottleneck adapters, prefix-tuning and IA3 with
per-layer sizes and a placement mask, injected into transformers models found by structure.

Public: :func:`apply_peft`, :func:`count_trainable`, :func:`adapter_memory_bytes`,
:func:`estimate_memory` (-> :class:`MemoryEstimate`), :func:`predicted_memory_mb`,
:func:`export_adapter`, :func:`load_adapter`, :func:`num_layers`. The config keys are
specified in ``docs/config_format.md``; each method's keys, spec, injection and parameter count
live in its module, listed by :mod:`autopeft.peft.registry`.

Re-exported lazily: the search space imports the registry, and must not pull in torch.
"""

from autopeft.lazy import lazy_exports

_LAZY = {
    "apply_peft": "autopeft.peft.model",
    "count_trainable": "autopeft.peft.cost",
    "adapter_memory_bytes": "autopeft.peft.cost",
    "estimate_memory": "autopeft.peft.memory",
    "MemoryEstimate": "autopeft.peft.memory",
    "predicted_memory_mb": "autopeft.peft.memory",
    "export_adapter": "autopeft.peft.export",
    "load_adapter": "autopeft.peft.export",
    "num_layers": "autopeft.peft.arch",
}

__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
