"""A study's constraints and the feasibility of its trials.

Constraints are declared in ``optimizer.options.constraints`` as ``(metric, op, bound)`` (or
``{"metric", "op", "bound"}``; op one of ``<=, <, >=, >, ==``), the form every optimiser takes
(``autopeft.optim.base``). The optimiser uses them to steer the search; the service stores, per
trial, whether its values satisfy every one (``trials.feasible``, with ``infeasible_reason``),
computed when the trial ends. ``/pareto``, ``/hypervolume``, the client, the CLI and the
dashboard's front use feasible trials only.

A metric a trial did not report is taken from the study's exactly known costs when there is one
(``trainable_params`` of a peft search trial, see ``services.spec.known_objectives``); else the
trial is infeasible ("not reported"). Trials stored before feasibility was (rows with
``feasible`` null) are judged from their values on read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from autopeft.errors import InvalidConfig

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
