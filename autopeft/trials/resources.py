"""What one trial asks of the executor: ``workload["resources"]`` (cpus, gpus, memory, custom
resources, labels), checked and normalised."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from autopeft.errors import InvalidConfig

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_RESOURCE_KEYS = ("cpus", "gpus", "memory", "custom", "labels", "workers", "gpus_per_worker")
#: the largest data-parallel gang one trial may ask for
MAX_WORKERS = 64


def parse_memory(value: Any, key: str = "workload.resources.memory") -> int:
    """Bytes from an int or a string such as ``"512MiB"``, ``"4GB"``, ``"2G"`` (powers of 1024)."""
    if isinstance(value, bool):
        raise InvalidConfig(
            f"{key} must be a number of bytes or a size such as '4GiB', got {value!r}", field=key
        )
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    match = _MEMORY.match(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise InvalidConfig(
            f"{key} must be a number of bytes or a size such as '4GiB', got {value!r}", field=key
        )
    unit = (match.group(2) or "B")[0].upper()
    return int(float(match.group(1)) * 1024 ** "BKMGT".index(unit))


def validate_resources(resources: Any) -> dict[str, Any]:
    """What one trial asks of the executor: ``{"cpus": 2, "gpus": 0.5 | "auto", "memory": "4GiB" |
    bytes | "auto", "custom": {"name": amount}, "labels": {"key": "value"}, "workers": 2}`` (all
    optional).

    ``gpus: "auto"`` and ``memory: "auto"`` are derived by the executor from the predicted
    memory of the trial (peft workloads). ``workers: n`` (> 1) makes the trial data-parallel
    over ``n`` Ray Train workers (``autopeft.trials.parallel``); ``cpus``, ``gpus``, ``memory``,
    ``custom`` and ``labels`` are then what *each worker* asks for, and ``gpus_per_worker`` is
    another name for ``gpus`` (give one of them). Returns the normalised mapping (memory in bytes,
    ``gpus_per_worker`` folded into ``gpus``, ``workers`` only when above 1).
    """
    if not isinstance(resources, Mapping):
        raise InvalidConfig(
            f"resources must be a mapping such as {{'cpus': 2, 'gpus': 0.5}}, got {resources!r}",
            field="workload.resources",
        )
    unknown = sorted(set(resources) - set(_RESOURCE_KEYS))
    if unknown:
        raise InvalidConfig(
            f"unknown key {unknown[0]!r} in workload.resources (known: "
            f"{', '.join(_RESOURCE_KEYS)})",
            field=f"workload.resources.{unknown[0]}",
        )
    out: dict[str, Any] = {}
    workers = resources.get("workers")
    if workers is not None:
        if (
            isinstance(workers, bool)
            or not isinstance(workers, (int, float))
            or not float(workers).is_integer()
            or not 1 <= workers <= MAX_WORKERS
        ):
            raise InvalidConfig(
                f"workload.resources.workers must be a whole number of data-parallel workers from "
                f"1 to {MAX_WORKERS}, got {workers!r}",
                field="workload.resources.workers",
            )
        if int(workers) > 1:
            out["workers"] = int(workers)
    per_worker = resources.get("gpus_per_worker") is not None
    if per_worker:
        if resources.get("gpus") is not None:
            raise InvalidConfig(
                "workload.resources.gpus_per_worker is another name for gpus (each worker's "
                "GPUs): give one of them",
                field="workload.resources.gpus_per_worker",
            )
        resources = {**resources, "gpus": resources["gpus_per_worker"]}
    for name in ("cpus", "gpus"):
        value = resources.get(name)
        if value is None:
            continue
        key = f"workload.resources.{name}"
        if name == "gpus" and per_worker:
            key = "workload.resources.gpus_per_worker"
        if name == "gpus" and value == "auto":
            out[name] = value
        elif (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
            or (name == "cpus" and value == 0)
        ):
            raise InvalidConfig(
                f"{key} must be a number {'>' if name == 'cpus' else '>='} 0"
                f"{' or auto' if name == 'gpus' else ''}, got {value!r}",
                field=key,
            )
        elif name == "gpus" and value > 1 and not float(value).is_integer():
            raise InvalidConfig(
                f"{key}: a fraction of a GPU must be below 1 (Ray packs fractions onto one "
                f"GPU), got {value!r}",
                field=key,
            )
        else:
            out[name] = value
    memory = resources.get("memory")
    if memory is not None:
        out["memory"] = "auto" if memory == "auto" else parse_memory(memory)
    custom = resources.get("custom")
    if custom is not None:
        if not isinstance(custom, Mapping) or not all(
            isinstance(k, str)
            and k
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and v > 0
            for k, v in custom.items()
        ):
            raise InvalidConfig(
                f"workload.resources.custom must map resource names to amounts > 0, got {custom!r}",
                field="workload.resources.custom",
            )
        out["custom"] = {k: float(v) for k, v in custom.items()}
    labels = resources.get("labels")
    if labels is not None:
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()
        ):
            raise InvalidConfig(
                f"workload.resources.labels must map label names to strings, got {labels!r}",
                field="workload.resources.labels",
            )
        out["labels"] = dict(labels)
    return out
