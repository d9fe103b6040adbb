"""Checks of the arguments every optimiser takes: objectives and constraints (also used by the
controller to validate a study's constraints before any optimiser exists)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.optim import pareto as _pareto

#: the comparison of each constraint operator: ``OPS[op](value, bound)`` holds when satisfied
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


def check_objectives(objectives: Any) -> list[tuple[str, str]]:
    """``[(name, direction), ...]`` (mappings with ``name`` / ``direction`` accepted); names
    unique, directions ``minimize`` or ``maximize``; else :class:`InvalidConfig`."""
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise InvalidConfig(
            "objectives must be a non-empty list of (name, direction)", "objectives"
        )
    out = []
    for item in objectives:
        if isinstance(item, Mapping):
            item = (item.get("name"), item.get("direction"))
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
            raise InvalidConfig(f"each objective is (name, direction), got {item!r}", "objectives")
        if item[1] not in _pareto.DIRECTIONS:
            raise InvalidConfig(
                f"direction of {item[0]!r} must be 'minimize' or 'maximize', got {item[1]!r}",
                "objectives",
            )
        out.append((item[0], item[1]))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise InvalidConfig(f"duplicate objective names {names}", "objectives")
    return out


def check_constraints(raw: Any) -> list[tuple[str, str, float]]:
    """``[(metric, op, bound), ...]`` with ``op`` in :data:`OPS` (mappings with ``metric`` /
    ``op`` / ``bound`` accepted; None: none); else :class:`InvalidConfig`."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise InvalidConfig("constraints must be a list of (metric, op, bound)", "constraints")
    out = []
    for item in raw:
        if isinstance(item, Mapping):
            item = (item.get("metric"), item.get("op"), item.get("bound"))
        if (
            not isinstance(item, (list, tuple))
            or len(item) != 3
            or not isinstance(item[0], str)
            or item[1] not in OPS
            or isinstance(item[2], bool)
            or not isinstance(item[2], (int, float))
        ):
            raise InvalidConfig(
                f"each constraint is (metric, op in {list(OPS)}, number), got {item!r}",
                "constraints",
            )
        out.append((item[0], item[1], float(item[2])))
    return out
