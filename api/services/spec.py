"""Validating a study spec completely before it is stored, and rebuilding its parts.

Everything the scheduler will need is built once here, so a study that is answered 201
cannot fail later for a reason visible at submission: the space loads (presets only by name,
inline mappings via ``SearchSpace.from_dict``), the workload validates, and the optimiser is
constructed with its options.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.api.errors import ApiError
from autopeft.errors import InvalidConfig


@dataclass
class SpecContext:
    """Who submits the spec and under which rules (the operator's settings, the user's datasets)."""
    user: Any            # deps.UserRef
    settings: Any        # settings.Settings
    session: Any = None  # a read session, for workload.dataset_id
    datasets: Any = None  # services.datasets.DatasetStore


def check_python_allowed(workload: dict[str, Any], ctx: SpecContext) -> None:
    """Python workloads run the user's code on the server: only when the operator opted in."""
    if not isinstance(workload, dict) or workload.get("kind") != "python":
        return
    mode = ctx.settings.python_workloads
    if mode == "off" or (mode == "admins" and not ctx.user.is_admin):
        who = "" if mode == "off" else " for admins only"
        raise ApiError(403, "forbidden", f"python workloads are disabled on this server{who}: they run your code "
                       "on the server. The operator enables them with AUTOPEFT_PYTHON_WORKLOADS=admins (admins "
                       "only) or =all (every user), optionally limited by AUTOPEFT_PYTHON_MODULES", "workload.kind")
    prefixes = ctx.settings.python_module_prefixes()
    entry = workload.get("entrypoint")
    module = entry.split(":")[0] if isinstance(entry, str) else ""
    if prefixes and not any(module == p or module.startswith(p + ".") for p in prefixes):
        raise ApiError(403, "forbidden", f"entrypoint module {module[:100]!r} is not allowed here: this server runs "
                       f"python workloads from {', '.join(prefixes)} only (AUTOPEFT_PYTHON_MODULES)",
                       "workload.entrypoint")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_not_server_state(workload: dict[str, Any], ctx: SpecContext) -> None:
    """A dataset named by path is never one of the server's own files (uploads, artifacts, the
    database): uploads are used by ``dataset_id``, with their owner checked."""
    from autopeft.trials.data import BUILTIN_DATASETS

    dataset = workload.get("dataset") if isinstance(workload, dict) else None
    if workload.get("kind") != "peft" or not isinstance(dataset, str) or dataset in BUILTIN_DATASETS \
            or "dataset_id" in workload:
        return
    try:
        path = Path(dataset).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return   # check_server_path reports it
    settings = ctx.settings
    roots = [Path(settings.artifacts_dir).expanduser().resolve(), Path(settings.datasets_path).expanduser().resolve()]
    if settings.db_url.startswith("sqlite:///"):
        db = Path(settings.db_url[len("sqlite:///"):]).expanduser().resolve()
        roots += [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
    if any(_inside(path, r) for r in roots):
        raise InvalidConfig(f"dataset {dataset[:200]!r} is not allowed: the server's own files are never datasets; "
                            "upload your file (POST /api/v1/datasets) and give workload.dataset_id",
                            "workload.dataset")


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


def validate_spec(spec: dict[str, Any], ctx: SpecContext | None = None) -> dict[str, Any]:
    """Check every part of a (schema-valid) spec; returns it with the workload normalised.

    With a ``ctx`` (every REST request): python workloads only when the operator allows them, an
    uploaded dataset by ``workload.dataset_id`` (the user's own), no dataset path into the
    server's own files. Raises ``InvalidConfig`` naming the field (``ApiError`` 403 for a python
    workload that is not allowed); an unexpected exception from a part's validator (a malformed
    mapping it did not anticipate) is reported against that part, not as a 500.
    """
    spec = dict(spec)
    part = "workload"
    dataset = None
    workload = spec["workload"]
    if ctx is not None:
        check_python_allowed(workload, ctx)
        check_not_server_state(workload, ctx)
        if ctx.datasets is not None:
            workload, dataset = ctx.datasets.resolve_for_validation(ctx.session, ctx.user.id, workload)
    try:
        try:
            spec["workload"] = normalise_workload(workload)
        except InvalidConfig as err:
            if dataset is None:
                raise
            # about the stored file: name the dataset, never its server path
            message = err.message.replace(workload["dataset"], f"dataset {dataset.id}")
            raise InvalidConfig(message, err.field) from None
        if dataset is not None:
            spec["workload"] = ctx.datasets.stored_workload(spec["workload"], dataset)
        part = "space"
        space = build_space(spec)
        part = "optimizer"
        build_optimizer(spec, space)
    except InvalidConfig:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as err:
        raise InvalidConfig(f"invalid {part}: {type(err).__name__}: {err}", part) from None
    return spec
