"""Search spaces: mixed, conditional parameter sets over training knobs and PEFT structure.

See ``docs/config_format.md`` for the YAML format and the flat config keys.
"""

from autopeft.space.params import KINDS, Param
from autopeft.space.presets import list_presets, load_space, parse_yaml, preset_path
from autopeft.space.space import PEFT_PREFIXES, SearchSpace, num_layers_of
from autopeft.space.spec import IA3_TARGETS, LORA_TARGETS, check_peft_value

__all__ = [
    "IA3_TARGETS",
    "KINDS",
    "LORA_TARGETS",
    "PEFT_PREFIXES",
    "Param",
    "SearchSpace",
    "check_peft_value",
    "list_presets",
    "load_space",
    "num_layers_of",
    "parse_yaml",
    "preset_path",
]
