"""The PEFT layer: LoRA, serial / parallel bottleneck adapters, prefix-tuning and IA3 with
per-layer sizes and a placement mask, injected into transformers models found by structure.

Public: :func:`apply_peft`, :func:`count_trainable`, :func:`adapter_memory_bytes`, :func:`estimate_memory`,
:func:`export_adapter`, :func:`load_adapter`, :func:`num_layers`. The config keys are
specified in ``docs/config_format.md``.
"""

from autopeft.peft.arch import ArchDesc, ModelMap, describe_config, map_model, num_layers
from autopeft.peft.config import PeftSpec, parse_peft_config
from autopeft.peft.cost import adapter_memory_bytes, count_by_method, count_trainable
from autopeft.peft.export import export_adapter, load_adapter
from autopeft.peft.memory import MemoryEstimate, estimate_memory
from autopeft.peft.model import apply_peft, trainable_state
from autopeft.peft.registry import METHODS

__all__ = [
    "METHODS",
    "ArchDesc",
    "MemoryEstimate",
    "ModelMap",
    "PeftSpec",
    "adapter_memory_bytes",
    "apply_peft",
    "count_by_method",
    "count_trainable",
    "describe_config",
    "estimate_memory",
    "export_adapter",
    "load_adapter",
    "map_model",
    "num_layers",
    "parse_peft_config",
    "trainable_state",
]
