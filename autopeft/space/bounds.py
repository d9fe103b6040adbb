"""The extremes of a search space's cost: the configs at the all-lowest and all-highest settings
of every ordered parameter (for each combination of the unordered categorical ones), where
``count_trainable`` and the memory model take their min and max (what ``autopeft space show``
prints and a study plan reports).

The count is non-decreasing in every ordinal or integer parameter (sizes, ranks, lengths, the
layer mask with off < on), so the extremes are at all-lowest / all-highest settings of those;
unordered categorical PEFT parameters (target sets) are enumerated; floats stay at their default.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from autopeft.errors import InvalidConfig

MAX_COMBINATIONS = 4096


def extreme_configs(space) -> Iterator[dict[str, Any]]:
    """Valid configs at the extremes of every ordered parameter, per categorical combination."""
    categorical = [p for p in space.params if p.kind == "categorical"]
    combos = list(itertools.product(*(p.values() for p in categorical)))
    if len(combos) > MAX_COMBINATIONS:
        raise InvalidConfig("too many categorical combinations to bound exactly", "space")
    for combo in combos:
        fixed = dict(zip((p.name for p in categorical), combo))
        for extreme in (0, -1):
            config: dict[str, Any] = dict(space.constants)
            for p in space.params:
                if not p.is_active(config):
                    continue
                if p.name in fixed:
                    config[p.name] = fixed[p.name]
                elif p.kind == "float":
                    config[p.name] = p.default
                else:
                    config[p.name] = p.values()[extreme]
            yield space.validate(config)


def trainable_range(space, model_config, num_labels: int | None) -> tuple[int, int]:
    """Exact min / max of ``count_trainable`` over the space."""
    from autopeft.peft import count_trainable

    counts = [
        count_trainable(c, model_config, num_labels=num_labels) for c in extreme_configs(space)
    ]
    return min(counts), max(counts)
