"""Metric values and decisions as the scheduler stores and replays them."""

from __future__ import annotations

import math
from typing import Any

from autopeft.workers.base import TrialSpec


def finite_or_none(values: dict[str, float] | None) -> dict[str, float | None] | None:
    """What is stored (JSON has no NaN / inf): non-finite metrics become null."""
    if values is None:
        return None
    return {
        k: (v if isinstance(v, (int, float)) and math.isfinite(v) else None)
        for k, v in values.items()
    }


def exact(values: dict[str, float] | None) -> dict[str, Any] | None:
    """For the event log, which must replay exactly: non-finite floats as the strings nan / inf / -inf."""
    if values is None:
        return None
    return {
        k: (repr(float(v)) if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in values.items()
    }


def unexact(values: dict[str, Any] | None) -> dict[str, float] | None:
    if values is None:
        return None
    return {k: (float(v) if isinstance(v, str) else v) for k, v in values.items()}


def trial_budget(budget: Any) -> dict[str, float] | None:
    """An optimiser's ``Suggestion.budget`` as a ``TrialContext.budget``: a number is a budget in
    epochs (steps of ``trial.report``), a mapping is passed as is."""
    if budget is None:
        return None
    if isinstance(budget, dict):
        return dict(budget)
    return {"epochs": max(1, int(round(float(budget))))}


def planned_epochs(spec: TrialSpec) -> float:
    """Epochs a peft run is planned to reach (its budget, else the trial's ``epochs``); 0 for
    python workloads (their steps are their own)."""
    workload = spec.workload
    if workload.get("kind") != "peft":
        return 0.0
    if workload.get("linear_probe"):
        from autopeft.trials.probe import FORWARD_ONLY_EPOCHS

        return FORWARD_ONLY_EPOCHS
    from autopeft.trials.knobs import resolve_knobs

    knobs = resolve_knobs(workload, spec.config)
    budget = spec.budget or {}
    if "step" in budget:
        return float(budget["step"]) / knobs["evals_per_epoch"]
    return float(budget.get("epochs", knobs["epochs"]))


def decision_name(decision: Any) -> str:
    if decision is None or decision is True or decision == "continue":
        return "continue"
    if decision is False or decision == "stop":
        return "stop"
    if decision == "pause":
        return "pause"
    return "exploit"
