"""Validating a study spec completely before it is stored (its parts are built by ``api.study``).

Everything the scheduler will need is built once here, so a study that is answered 201
cannot fail later for a reason visible at submission: the space loads (presets only by name,
inline mappings via ``SearchSpace.from_dict``), the workload validates, and the optimiser is
constructed with its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.api.errors import ApiError
from autopeft.api.study import (
    build_optimizer,
    build_space,
    check_layers,
    known_objectives,
    model_config_of,
)
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


def normalise_workload(workload: dict[str, Any]) -> dict[str, Any]:
    from autopeft.trials import validate_workload

    return validate_workload(workload)


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
            model_config_of(model)
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
        from autopeft.api.study import check_constraints

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
