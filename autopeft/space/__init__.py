"""Search spaces: mixed, conditional parameter sets over training knobs and PEFT structure.

Public: :class:`SearchSpace` (its ``params`` are :class:`Param`), :func:`load_space`,
:func:`list_presets`. See ``docs/config_format.md`` for the YAML format and the flat config keys.
"""

from autopeft.space.params import Param
from autopeft.space.presets import list_presets, load_space
from autopeft.space.space import SearchSpace

__all__ = ["Param", "SearchSpace", "list_presets", "load_space"]
