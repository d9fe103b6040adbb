"""A study's parts, built from its stored spec: the one module the scheduler (and the services)
take them from.

:class:`StudySpec` types a validated spec (``services.spec.validate_spec`` checks a request once,
at the API's boundary; the stored JSON is that result) and builds what a runner needs: the search
space, a fresh optimiser (seeded, no history), the objectives, the constraints, and the objectives
known exactly from a config (``trainable_params``, ``predicted_memory_mb``).

Constraints are declared in ``optimizer.options.constraints`` as ``(metric, op, bound)`` (or
``{"metric", "op", "bound"}``; op one of ``<=, <, >=, >, ==``), the form every optimiser takes
(``autopeft.optim.base``). The optimiser uses them to steer the search; the service stores, per
trial, whether its values satisfy every one (``trials.feasible``, with ``infeasible_reason``),
computed when the trial ends. ``/pareto``, ``/hypervolume``, the client, the CLI and the
dashboard's front use feasible trials only. A metric a trial did not report is taken from the
study's exactly known costs when there is one (``trainable_params`` of a peft search trial, see
:func:`known_objectives`); else the trial is infeasible ("not reported"). Trials stored before
feasibility was (rows with ``feasible`` null) are judged from their values on read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autopeft.errors import InvalidConfig


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec (the stored JSON), typed for the runner."""

    data: Mapping[str, Any]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return objectives_of(self.data)

    @property
    def constraints(self) -> list[tuple[str, str, float]]:
        return constraints_of(self.data)

    @property
    def max_parallel(self) -> int:
        return int(self.data["max_parallel"])

    def space(self):
        return build_space(self.data)

    def optimizer(self, space=None):
        return build_optimizer(self.data, space)

    def known(self) -> dict[str, Any]:
        return known_objectives(self.data)


#: metrics every peft trial ends with besides those it reports at every step (autopeft.trials.train)
PEFT_FINAL_METRICS = (
    "trainable_params",
    "params_pct",
    "base_params",
    "train_time_s",
    "eval_time_s",
    "wall_time_s",
    "peak_memory_mb",
    "examples_per_s",
    "train_examples",
    "eval_examples",
    "epochs_trained",
)


def constraints_of(spec: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """The study's constraints as ``(metric, op, bound)`` (empty without any)."""
    from autopeft.optim.checks import check_constraints as _check_constraints

    options = (spec.get("optimizer") or {}).get("options") or {}
    return _check_constraints(options.get("constraints"))


def peft_metrics(workload: Mapping[str, Any]) -> set[str]:
    """Every metric a trial of this peft workload can end with."""
    from autopeft.trials.knobs import reported_metrics

    return set(reported_metrics(workload)) | set(PEFT_FINAL_METRICS)


def check_constraints(spec: Mapping[str, Any]) -> None:
    """Refuse constraints that could never be evaluated: on a peft workload, a metric no trial
    reports (python workloads define their own metrics: unchecked)."""
    try:
        constraints = constraints_of(spec)
    except InvalidConfig as err:
        raise InvalidConfig(err.message, "optimizer.options.constraints") from None
    workload = spec.get("workload") or {}
    if workload.get("kind") != "peft":
        return
    known = peft_metrics(workload)
    for i, (metric, _, _) in enumerate(constraints):
        if metric not in known:
            raise InvalidConfig(
                f"constraint {i} is on metric {metric!r}, which no trial of this workload reports, so "
                f"it could never be evaluated; metrics: {', '.join(sorted(known))}",
                f"optimizer.options.constraints.{i}.metric",
            )


def _show(x: float) -> str:
    return f"{x:.6g}"


def feasibility(
    constraints: list[tuple[str, str, float]],
    values: Mapping[str, Any] | None,
    known: Mapping[str, Callable[[dict], float]] | None = None,
    config: dict | None = None,
) -> tuple[bool | None, str | None]:
    """``(feasible, reason)`` of a trial's final ``values``: ``(None, None)`` without values (a
    failed trial); ``(False, "trainable_params = 2.1e+06 violates <= 1e+06; ...")``
    naming every violated constraint; ``(True, None)`` otherwise (always, without constraints)."""
    from autopeft.optim.checks import OPS as _OPS

    if values is None:
        return None, None
    reasons = []
    for metric, op, bound in constraints:
        value = values.get(metric)
        if value is None and known and metric in known and config is not None:
            value = float(known[metric](config))
        if metric not in values and value is None:
            reasons.append(f"{metric} not reported (constraint {metric} {op} {_show(bound)})")
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            reasons.append(f"{metric} is not finite (constraint {metric} {op} {_show(bound)})")
        elif not _OPS[op](float(value), bound):
            reasons.append(f"{metric} = {_show(float(value))} violates {op} {_show(bound)}")
    return (False, "; ".join(reasons)) if reasons else (True, None)


def trial_feasible(trial, constraints: list[tuple[str, str, float]]) -> bool:
    """Whether a stored trial counts for the front: its stored verdict, else (older rows) one
    judged from its values now."""
    if trial.feasible is not None:
        return bool(trial.feasible)
    return feasibility(constraints, trial.values)[0] is not False


def objectives_of(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """``[(name, direction)]`` of a study spec's objectives."""
    return [(o["name"], o["direction"]) for o in spec["objectives"]]


@functools.lru_cache(maxsize=16)
def model_config_of(model: str):
    from autopeft.models import load_model_config

    return load_model_config(model, field="workload.model")


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
        model_config = model_config_of(workload["model"])
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

    if getattr(model_config_of(model), "model_type", None) not in MAPPED_TYPES:
        # torch: imported only for a model type found by structure
        from autopeft.peft.modelmap import check_structure

        check_structure(model_config_of(model), workload.get("task") or "classification")
    layers = describe_config(model_config_of(model)).num_layers
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

        model_type = describe_config(model_config_of(model)).model_type
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

    model_config = model_config_of(workload["model"])
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


def adapter_free_exclusion(spec: dict[str, Any]) -> Callable[[dict], bool] | None:
    """For a peft workload whose study runs the ``linear_probe`` baseline, a predicate true of
    configs that train no adapter (every method's count 0: the head alone). The probe already
    holds that point at a third of an epoch where such a trial trains two: on the real-run table
    (MiniLM, BENCHMARKS.md) the trained head scored 0.682 validation / 0.692 test on tweets
    against the probe's 0.688 / 0.699 at the same 1,155 parameters (bbc_news: 0.940 / 0.955
    against 0.949 / 0.950), and the default asked it in 28 of 30 replayed 24-epoch studies.
    Replayed without those asks, its true HV is +199 to +298 on tweets and -49 to -1 on bbc_news,
    and the demo's criterion at 12 epochs holds in 80% / 93% of studies against 70% / 70%. None
    otherwise: without the probe the head-only point is the study's cheapest candidate, and on a
    causal LM (no probe, no head) the config that trains nothing is the base model, evaluated
    once."""
    workload = spec.get("workload") or {}
    if workload.get("kind") != "peft" or workload.get("full_finetune"):
        return None
    from autopeft.trials.baselines import baseline_name

    if not any(baseline_name(b) == "linear_probe" for b in spec.get("baselines") or []):
        return None
    num_labels = num_labels_of(workload)
    from autopeft.optim.records import config_key
    from autopeft.peft.cost import count_by_method

    model_config = model_config_of(workload["model"])
    cache: dict[tuple, bool] = {}

    def adapter_free(config: dict) -> bool:
        key = config_key(config)
        if key not in cache:
            try:
                counts = count_by_method(config, model_config, num_labels)
            except InvalidConfig:
                cache[key] = False  # not ours to refuse: the trial says why
            else:
                cache[key] = not any(v for k, v in counts.items() if k != "head")
        return cache[key]

    return adapter_free


def build_optimizer(spec: dict[str, Any], space=None):
    """A fresh optimiser for the study (seeded, no history). For peft workloads the exactly
    known objectives (see :func:`known_objectives`) are handed to it as ``known_objectives``, and
    adapter-free configs are kept out of its suggestions where :func:`adapter_free_exclusion`
    says so (``exclude``)."""
    from autopeft.optim import create_optimizer

    space = space if space is not None else build_space(spec)
    opt = spec["optimizer"]
    options = dict(opt.get("options") or {})
    known = known_objectives(spec)
    if known and "known_objectives" not in options:
        options["known_objectives"] = known
    exclude = adapter_free_exclusion(spec)
    if exclude is not None and "exclude" not in options:
        options["exclude"] = exclude
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
