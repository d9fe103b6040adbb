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
from autopeft.api.services.constraints import objectives_of
from autopeft.errors import InvalidConfig


@dataclass
class SpecContext:
    """Who submits the spec and under which rules (the operator's settings, the user's datasets)."""

    user: Any  # deps.UserRef
    settings: Any  # settings.Settings
    session: Any = None  # a read session, for workload.dataset_id
    datasets: Any = None  # services.datasets.DatasetStore


def check_python_allowed(workload: dict[str, Any], ctx: SpecContext) -> None:
    """Python workloads run the user's code on the server: only when the operator opted in."""
    if not isinstance(workload, dict) or workload.get("kind") != "python":
        return
    mode = ctx.settings.python_workloads
    if mode == "off" or (mode == "admins" and not ctx.user.is_admin):
        who = "" if mode == "off" else " for admins only"
        raise ApiError(
            403,
            "forbidden",
            f"python workloads are disabled on this server{who}: they run your code "
            "on the server. The operator enables them with AUTOPEFT_PYTHON_WORKLOADS=admins (admins "
            "only) or =all (every user), optionally limited by AUTOPEFT_PYTHON_MODULES",
            "workload.kind",
        )
    prefixes = ctx.settings.python_module_prefixes()
    entry = workload.get("entrypoint")
    module = entry.split(":")[0] if isinstance(entry, str) else ""
    if prefixes and not any(module == p or module.startswith(p + ".") for p in prefixes):
        raise ApiError(
            403,
            "forbidden",
            f"entrypoint module {module[:100]!r} is not allowed here: this server runs "
            f"python workloads from {', '.join(prefixes)} only (AUTOPEFT_PYTHON_MODULES)",
            "workload.entrypoint",
        )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_not_server_state(workload: dict[str, Any], ctx: SpecContext) -> None:
    """A dataset named by path is never one of the server's own files (uploads, artifacts, the
    database): uploads are used by ``dataset_id``, with their owner checked."""
    from autopeft.trials.data import BUILTIN_DATASETS

    dataset = workload.get("dataset") if isinstance(workload, dict) else None
    if (
        workload.get("kind") != "peft"
        or not isinstance(dataset, str)
        or dataset in BUILTIN_DATASETS
        or "dataset_id" in workload
    ):
        return
    try:
        path = Path(dataset).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return  # check_server_path reports it
    settings = ctx.settings
    roots = [
        Path(settings.artifacts_dir).expanduser().resolve(),
        Path(settings.datasets_path).expanduser().resolve(),
    ]
    if settings.db_url.startswith("sqlite:///"):
        db = Path(settings.db_url[len("sqlite:///") :]).expanduser().resolve()
        roots += [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
    if any(_inside(path, r) for r in roots):
        raise InvalidConfig(
            f"dataset {dataset[:200]!r} is not allowed: the server's own files are never datasets; "
            "upload your file (POST /api/v1/datasets) and give workload.dataset_id",
            "workload.dataset",
        )


def check_no_cache_dir(workload: dict[str, Any]) -> None:
    """The trials' cache is the server's (``AUTOPEFT_CACHE_DIR`` of the operator): a study
    cannot point it anywhere."""
    if isinstance(workload, dict) and workload.get("cache_dir") is not None:
        raise InvalidConfig(
            "the server keeps the trials' data cache in its own folder (shared by content hash, "
            "counted in your quota); leave workload.cache_dir out",
            "workload.cache_dir",
        )


def check_workers(workload: dict[str, Any], ctx: SpecContext) -> None:
    """A data-parallel trial (``workload.resources.workers`` > 1) runs on Ray Train: only on a
    server whose executor is ``ray``, and only for the peft workload (whose loop shards the batch;
    a python workload's loop is the user's)."""
    resources = workload.get("resources") if isinstance(workload, dict) else None
    workers = resources.get("workers") if isinstance(resources, dict) else None
    if not isinstance(workers, int) or isinstance(workers, bool) or workers <= 1:
        return
    if workload.get("kind") != "peft":
        raise InvalidConfig(
            "workload.resources.workers runs the peft workload's trainer on several workers "
            "(data parallel); a python workload runs its own loop: leave workers out",
            "workload.resources.workers",
        )
    if ctx.settings.executor != "ray":
        raise InvalidConfig(
            f"workload.resources.workers {workers} needs the ray executor (data-parallel trials "
            f"run on Ray Train); this server runs trials with the {ctx.settings.executor!r} "
            "executor (AUTOPEFT_EXECUTOR=ray)",
            "workload.resources.workers",
        )


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
        raise InvalidConfig(
            f"unknown space preset {ref!r}; presets: {', '.join(list_presets())} "
            "(or give the space inline as a mapping)",
            "space",
        )
    model_config = None
    num_layers = spec.get("num_layers")
    workload = spec.get("workload") or {}
    if (
        num_layers is None
        and workload.get("kind") == "peft"
        and isinstance(workload.get("model"), str)
    ):
        model_config = _model_config(workload["model"])
    try:
        return load_space(ref, model_config=model_config, num_layers=num_layers)
    except InvalidConfig as err:
        field = (
            err.field
            if err.field and err.field.startswith("space")
            else f"space.{err.field}"
            if err.field
            else "space"
        )
        raise InvalidConfig(err.message, field) from None


def check_layers(spec: dict[str, Any], space) -> None:
    """Every layer the space names exists in the workload's model: ``num_layers`` no larger than
    its layer count, and no per-layer key of the space (an inline space's ``lora.rank.7``) past
    it. Raises ``InvalidConfig`` naming ``num_layers`` or ``space.<key>``."""
    workload = spec.get("workload") or {}
    model = workload.get("model")
    if workload.get("kind") != "peft" or not isinstance(model, str):
        return
    from autopeft.peft.arch import MAPPED_TYPES, describe_config
    from autopeft.peft.config import parse_peft_config

    if getattr(_model_config(model), "model_type", None) not in MAPPED_TYPES:
        # torch: imported only for a model type found by structure
        from autopeft.peft.modelmap import check_structure

        check_structure(_model_config(model), workload.get("task") or "classification")
    layers = describe_config(_model_config(model)).num_layers
    wanted = spec.get("num_layers")
    if wanted is not None and wanted > layers:
        raise InvalidConfig(
            f"num_layers {wanted} is more than the {layers} layers of {model!r} (leave it out: "
            "per-layer spaces take the model's own count)",
            "num_layers",
        )
    try:
        parse_peft_config(space.default_config(), layers)
    except InvalidConfig as err:
        raise InvalidConfig(err.message, f"space.{err.field}" if err.field else "space") from None
    if workload.get("task") == "causal_lm" and _can_sample(space, "prompt.length"):
        raise InvalidConfig(
            "prompt tuning is for sequence classification: on a causal LM the virtual tokens "
            "shift the positions the completion loss reads (remove prompt.length from the space)",
            "space.prompt.length",
        )
    if _can_sample(space, "prefix.length"):
        from autopeft.peft.attention import routes_attention

        model_type = describe_config(_model_config(model)).model_type
        if routes_attention(model_type) is False:
            raise InvalidConfig(
                f"model type {model_type!r} computes its attention itself, not through "
                "transformers' attention interface, so prefix-tuning cannot reach it (remove "
                "prefix.length from the space)",
                "space.prefix.length",
            )


def _can_sample(space, key: str) -> bool:
    """Whether ``space`` can sample a config with ``key`` (or a per-layer ``key.{i}``) > 0."""

    def named(name: str) -> bool:
        return name == key or (name.startswith(f"{key}.") and name[len(key) + 1 :].isdigit())

    if any(named(k) and v for k, v in space.constants.items()):
        return True
    for param in space.params:
        if not named(param.name):
            continue
        if param.choices:
            if any(param.choices):
                return True
        elif (param.high or 0) > 0:
            return True
    return False


def num_labels_of(workload: dict[str, Any]) -> int | None:
    """Label count of a peft workload's task when it is known without reading the data (None for
    causal_lm: no classification head; the LM head is pretrained and frozen)."""
    if workload.get("task") == "causal_lm":
        return None
    if workload.get("labels"):
        return len(workload["labels"])
    from autopeft.trials.data import BUILTIN_DATASETS

    if workload.get("dataset") in BUILTIN_DATASETS:
        labels = BUILTIN_DATASETS[workload["dataset"]]().labels
        return len(labels) if labels else None
    return None


def known_objectives(spec: dict[str, Any]) -> dict[str, Any]:
    """Objectives computed exactly from the config instead of being modelled: for a peft
    workload (not full fine-tuning), ``trainable_params`` is ``autopeft.count_trainable`` and
    ``predicted_memory_mb`` is :func:`autopeft.peft.memory.predicted_memory_mb` (what the trainer reports)."""
    workload = spec.get("workload") or {}
    names = {o["name"] for o in spec["objectives"]} & {"trainable_params", "predicted_memory_mb"}
    if workload.get("kind") != "peft" or workload.get("full_finetune") or not names:
        return {}
    import autopeft
    from autopeft.peft.memory import predicted_memory_mb

    model_config = _model_config(workload["model"])
    num_labels = num_labels_of(workload)
    known = {
        "trainable_params": lambda config: float(
            autopeft.count_trainable(config, model_config, num_labels)
        ),
        "predicted_memory_mb": lambda config: predicted_memory_mb(
            config, model_config, workload, num_labels=num_labels or 2
        ),
    }
    return {name: known[name] for name in sorted(names)}


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
        return create_optimizer(
            opt["name"], space, objectives_of(spec), seed=spec.get("seed", 0), **options
        )
    except InvalidConfig as err:
        field = err.field or "optimizer"
        if not field.startswith("optimizer"):
            field = f"optimizer.options.{field}"
        raise InvalidConfig(err.message, field) from None
    except (TypeError, ValueError, KeyError) as err:
        raise InvalidConfig(
            f"invalid optimizer {opt['name']!r} or options: {err}", "optimizer"
        ) from None


#: what a study that names no optimiser gets: mobo from a 5-point Sobol design (the baselines run
#: beside it) with MO-ASHA and promotions (a paused trial resumes from its rung checkpoint).
#: Chosen on the real-run table (BENCHMARKS.md, "Search on the real-run table"): against mobo's
#: own 16-point design with MO-ASHA (the earlier default) it finds a searched point as accurate as
#: LoRA r8 (within 0.01) at half its parameters in 26/30 and 29/30 replayed 12-epoch studies
#: (tweets, bbc_news) against 11/30 and 7/30; promotions are >= the same without them on both tasks
#: at 12, 24 and 48 epochs (paired true hypervolume)
DEFAULT_OPTIMIZER = {
    "name": "mobo",
    "options": {"n_initial": 5, "early_stopping": {"kind": "moasha", "promotions": True}},
}
#: python workloads report steps of their own meaning: no early stopping unless asked for
DEFAULT_OPTIMIZER_PYTHON = {"name": "mobo", "options": {}}
_STOPPER_PREFIXES = ("asha", "moasha")
_PBT = ("pbt", "mopbt")


def default_optimizer(workload: dict[str, Any]) -> dict[str, Any]:
    import copy

    return copy.deepcopy(
        DEFAULT_OPTIMIZER if workload.get("kind") == "peft" else DEFAULT_OPTIMIZER_PYTHON
    )


def normalise_optimizer(
    optimizer: dict[str, Any] | None, workload: dict[str, Any]
) -> dict[str, Any]:
    """The optimiser part with the default filled in and an ``asha+`` / ``moasha+`` prefix moved
    into ``options.early_stopping`` (one place for the scheduler and the checks to read)."""
    if optimizer is None:
        return default_optimizer(workload)
    optimizer = {"name": optimizer["name"], "options": dict(optimizer.get("options") or {})}
    stopper, plus, base = optimizer["name"].partition("+")
    if plus and stopper in _STOPPER_PREFIXES:
        if "early_stopping" in optimizer["options"]:
            raise InvalidConfig(
                f"{optimizer['name']!r} already sets early stopping; drop the option or the prefix",
                "optimizer.options.early_stopping",
            )
        optimizer["name"], optimizer["options"]["early_stopping"] = base, {"kind": stopper}
    return optimizer


def check_fidelity(spec: dict[str, Any], space, defaulted: bool = False) -> None:
    """Refuse (naming the field) multi-fidelity settings that could never act on this workload,
    and give early stopping the workload's last report as ``max_step`` (no rung there: a trial
    trained to the end is never pruned). Python workloads report steps of their own: unchecked.
    ``defaulted``: the optimiser is the default, not the user's: its early stopping is dropped
    where it could not act (trials that report once), instead of refusing what nobody asked for."""
    from autopeft.trials.knobs import final_report_steps, reported_metrics

    workload = spec["workload"]
    if workload.get("kind") != "peft":
        return
    options = spec["optimizer"]["options"]
    name = spec["optimizer"]["name"]
    fewest, most = final_report_steps(workload, space)
    rankable = set(reported_metrics(workload)) | set(known_objectives(spec))
    late = [o["name"] for o in spec["objectives"] if o["name"] not in rankable]
    stopper = options.get("early_stopping")
    if isinstance(stopper, str):
        stopper = options["early_stopping"] = {"kind": stopper}
    if defaulted and isinstance(stopper, dict) and most <= stopper.get("min_step", 1):
        options.pop("early_stopping")  # nothing it could stop: the default runs without it
        stopper = None
    if isinstance(stopper, dict):
        if late:
            raise InvalidConfig(
                f"objective {late[0]!r} is known only when a trial ends, so early stopping cannot "
                f"rank trials by it at a rung (reported at every step: {', '.join(sorted(rankable))}); "
                "drop early stopping or that objective",
                "optimizer.options.early_stopping",
            )
        min_step = stopper.get("min_step", 1)
        if isinstance(min_step, int) and min_step >= most:
            raise InvalidConfig(
                f"trials report {most} time(s) (epochs x evals_per_epoch); a first rung at step "
                f"{min_step} would never stop anything: use min_step below {most}",
                "optimizer.options.early_stopping.min_step",
            )
        stopper.setdefault("max_step", most)
    if name in _PBT:
        if late:
            raise InvalidConfig(
                f"objective {late[0]!r} is known only when a trial ends, so PBT cannot rank members "
                f"by it mid-training",
                "objectives",
            )
        interval = options.get("perturbation_interval", 4)
        if isinstance(interval, int) and interval >= fewest:
            raise InvalidConfig(
                f"trials report {fewest} time(s) (epochs x evals_per_epoch = "
                f"{fewest}): with perturbation_interval {interval} no member ever reaches a "
                f"perturbation before its last report, so PBT could never exploit; use an interval "
                f"below {fewest} or train longer",
                "optimizer.options.perturbation_interval",
            )
        options.setdefault("max_step", fewest)  # no exploit at a member's last report
        size = options.get("population_size", 8)
        if isinstance(size, int) and size > spec["max_trials"]:
            raise InvalidConfig(
                f"population_size {size} is above max_trials {spec['max_trials']}: the "
                "population could never be filled",
                "optimizer.options.population_size",
            )


def validate_spec(spec: dict[str, Any], ctx: SpecContext | None = None) -> dict[str, Any]:
    """Check every part of a (schema-valid) spec; returns it normalised: the workload's defaults
    filled in, the default optimiser when none is named, baselines expanded.

    With a ``ctx`` (every REST request): python workloads only when the operator allows them, an
    uploaded dataset by ``workload.dataset_id`` (the user's own), no dataset path into the
    server's own files. Raises ``InvalidConfig`` naming the field (``ApiError`` 403 for a python
    workload that is not allowed); an unexpected exception from a part's validator (a malformed
    mapping it did not anticipate) is reported against that part, not as a 500.
    """
    from autopeft.trials.baselines import check_baselines

    spec = dict(spec)
    part = "workload"
    dataset = None
    workload = spec["workload"]
    if ctx is not None:
        check_python_allowed(workload, ctx)
        check_not_server_state(workload, ctx)
        check_no_cache_dir(workload)
        check_workers(workload, ctx)
        if spec.get("tracking") is not None:
            from autopeft.api.tracking.rules import TrackingRules, check_tracking

            check_tracking(spec, TrackingRules.from_settings(ctx.settings))
        if spec.get("webhook") is not None:
            from autopeft.api.webhooks.rules import WebhookRules, check_webhook

            check_webhook(spec, WebhookRules.from_settings(ctx.settings))
        if ctx.datasets is not None:
            workload, dataset = ctx.datasets.resolve_for_validation(
                ctx.session, ctx.user.id, workload
            )
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
        part = "optimizer"
        defaulted = spec.get("optimizer") is None
        spec["optimizer"] = normalise_optimizer(spec.get("optimizer"), spec["workload"])
        part = "baselines"
        given = spec.get("baselines")
        model = spec["workload"].get("model")
        spec["baselines"] = check_baselines(
            given,
            spec["workload"],
            _model_config(model)
            if given and spec["workload"].get("kind") == "peft" and isinstance(model, str)
            else None,
        )
        if given is None and len(spec["baselines"]) >= spec["max_trials"]:
            spec["baselines"] = []  # an implicit probe never takes a study's only trial
        if len(spec["baselines"]) >= spec["max_trials"]:
            raise InvalidConfig(
                f"max_trials {spec['max_trials']} leaves no trial for the search beside "
                f"{len(spec['baselines'])} baseline(s) (they count in the budget)",
                "max_trials",
            )
        if int(spec.get("replicates") or 1) > 1 and spec["workload"].get("kind") != "peft":
            raise InvalidConfig(
                "replicates re-train the front's configs with other training seeds: they need a "
                "peft workload (a python workload's seeds are its own)",
                "replicates",
            )
        part = "space"
        space = build_space(spec)
        check_layers(spec, space)
        part = "optimizer"
        from autopeft.api.services.warmstart import resolve_warm_start

        resolve_warm_start(spec, space, ctx)
        check_fidelity(spec, space, defaulted)
        opt = build_optimizer(spec, space)
        from autopeft.api.services.constraints import check_constraints

        check_constraints(spec)
        if spec["optimizer"]["name"] in _PBT and not opt.mutable:
            raise InvalidConfig(
                "no parameter of this space can change mid-training (lr, weight_decay, dropout, "
                "warmup_ratio): PBT could only copy members, never explore; search lr or name "
                "mutable parameters",
                "optimizer.options.mutable",
            )
    except InvalidConfig:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as err:
        raise InvalidConfig(f"invalid {part}: {type(err).__name__}: {err}", part) from None
    return spec
