"""Validating a study spec completely before it is stored, and rebuilding its parts.

Everything the scheduler will need is built once here, so a study that is answered 201
cannot fail later for a reason visible at submission: the space loads (presets only by name,
inline mappings via ``SearchSpace.from_dict``), the workload validates, and the optimiser is
constructed with its options.
"""

from __future__ import annotations

import functools
from typing import Any

from autopeft.errors import InvalidConfig


@functools.lru_cache(maxsize=16)
def _model_config(model: str):
    from autopeft.models import load_model_config

    return load_model_config(model, field="workload.model")


def normalise_workload(workload: dict[str, Any]) -> dict[str, Any]:
    from autopeft.trials import validate_workload

    return validate_workload(workload)


def build_space(spec: dict[str, Any]):
    """The study's ``SearchSpace``; per-layer spaces use the workload's model or ``num_layers``."""
    from autopeft.space import list_presets, load_space

    ref = spec["space"]
    if isinstance(ref, str) and ref not in list_presets():
        raise InvalidConfig(f"unknown space preset {ref!r}; presets: {', '.join(list_presets())} "
                            "(or give the space inline as a mapping)", "space")
    model_config = None
    num_layers = spec.get("num_layers")
    workload = spec.get("workload") or {}
    if num_layers is None and workload.get("kind") == "peft" and isinstance(workload.get("model"), str):
        model_config = _model_config(workload["model"])
    try:
        return load_space(ref, model_config=model_config, num_layers=num_layers)
    except InvalidConfig as err:
        field = err.field if err.field and err.field.startswith("space") else f"space.{err.field}" if err.field else "space"
        raise InvalidConfig(err.message, field) from None


def objectives_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["name"], o["direction"]) for o in spec["objectives"]]


def num_labels_of(workload: dict[str, Any]) -> int | None:
    """Label count of a peft workload's task when it is known without reading the data."""
    if workload.get("labels"):
        return len(workload["labels"])
    from autopeft.trials.data import BUILTIN_DATASETS

    if workload.get("dataset") in BUILTIN_DATASETS:
        labels = BUILTIN_DATASETS[workload["dataset"]]().labels
        return len(labels) if labels else None
    return None


def known_objectives(spec: dict[str, Any]) -> dict[str, Any]:
    """Objectives computed exactly from the config instead of being modelled: for a peft
    workload (not full fine-tuning), ``trainable_params`` is ``autopeft.count_trainable``."""
    workload = spec.get("workload") or {}
    names = {o["name"] for o in spec["objectives"]}
    if workload.get("kind") != "peft" or workload.get("full_finetune") or "trainable_params" not in names:
        return {}
    import autopeft

    model_config = _model_config(workload["model"])
    num_labels = num_labels_of(workload)
    return {"trainable_params": lambda config: float(autopeft.count_trainable(config, model_config, num_labels))}


def build_optimizer(spec: dict[str, Any], space=None):
    """A fresh optimiser for the study (seeded, no history). For peft workloads the exactly
    known objectives (see :func:`known_objectives`) are handed to it as ``known_objectives``."""
    from autopeft.optim import create_optimizer

    space = space if space is not None else build_space(spec)
    opt = spec["optimizer"]
    options = dict(opt.get("options") or {})
    known = known_objectives(spec)
    if known and "known_objectives" not in options:
        options["known_objectives"] = known
    try:
        return create_optimizer(opt["name"], space, objectives_of(spec), seed=spec.get("seed", 0), **options)
    except InvalidConfig as err:
        field = err.field or "optimizer"
        if not field.startswith("optimizer"):
            field = f"optimizer.options.{field}"
        raise InvalidConfig(err.message, field) from None
    except (TypeError, ValueError, KeyError) as err:
        raise InvalidConfig(f"invalid optimizer {opt['name']!r} or options: {err}", "optimizer") from None


def validate_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Check every part of a (schema-valid) spec; returns it with the workload normalised.

    Raises ``InvalidConfig`` naming the field; an unexpected exception from a part's validator
    (a malformed mapping it did not anticipate) is reported against that part, not as a 500.
    """
    spec = dict(spec)
    part = "workload"
    try:
        spec["workload"] = normalise_workload(spec["workload"])
        part = "space"
        space = build_space(spec)
        part = "optimizer"
        build_optimizer(spec, space)
    except InvalidConfig:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as err:
        raise InvalidConfig(f"invalid {part}: {type(err).__name__}: {err}", part) from None
    return spec
