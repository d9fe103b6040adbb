"""``POST /studies/plan``: what a study will cost before it runs (nothing is stored or started).

From the validated spec alone: the compute of a full trial and of each baseline in training
epochs (what ``max_epochs`` counts), how many full search trials the budget buys after the
baselines, the optimiser's initial design (the trials before its model chooses any), and the
predicted peak training memory of the cheapest and the costliest config of the space
(``autopeft.peft.memory``, the number placement packs GPUs by). Time is measured, never guessed:
seconds per epoch are the median over this user's earlier complete trials of the same model,
data and sizes (train + evaluation time over epochs trained); without such trials they are
null. Warnings say when the budget cannot reach the optimiser's model, or when the time budget
ends the study before the epoch budget does.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from autopeft.api.models import Study, Trial
from autopeft.api.study import build_optimizer, build_space, model_config_of, num_labels_of

#: workload fields that must match for an earlier trial's speed to count
SAME_SPEED = ("model", "dataset", "dataset_id", "max_train", "max_length", "batch_size", "device")
OPTUNA_STARTUP = {"tpe": 10, "gp": 10}  # Optuna's n_startup_trials defaults
MEASURED_TRIALS = 50


def _epochs(config: dict[str, Any], workload: dict[str, Any]) -> float:
    from autopeft.api.scheduling.values import planned_epochs
    from autopeft.workers.base import TrialSpec

    return planned_epochs(
        TrialSpec(trial_id=0, study_id=0, number=0, workload=workload, config=config)
    )


def _initial_design(spec: dict[str, Any], space) -> int | None:
    opt = spec["optimizer"]
    name, options = opt["name"], opt.get("options") or {}
    if name == "mobo":
        return int(build_optimizer(spec, space).options["n_initial"])
    if name in OPTUNA_STARTUP:
        return int(options.get("n_startup_trials", OPTUNA_STARTUP[name]))
    return None


def _memory(space, workload: dict[str, Any]) -> dict[str, float] | None:
    from autopeft.peft.memory import predicted_memory_mb
    from autopeft.space.bounds import extreme_configs

    model_config = model_config_of(workload["model"])
    labels = num_labels_of(workload) or 2
    if workload.get("full_finetune"):
        configs = [{}]
    else:
        configs = list(extreme_configs(space))
    mbs = [predicted_memory_mb(c, model_config, workload, num_labels=labels) for c in configs]
    return {"min": min(mbs), "max": max(mbs)}


def _trainable(space, workload: dict[str, Any]) -> dict[str, int] | None:
    """The exact range of trainable parameters over the space (the cost model at its extremes)."""
    from autopeft.space.bounds import trainable_range

    if workload.get("full_finetune"):
        return None
    lo, hi = trainable_range(space, model_config_of(workload["model"]), num_labels_of(workload))
    return {"min": int(lo), "max": int(hi)}


def _seconds_per_epoch(
    session: Session, user_id: int, workload: dict[str, Any]
) -> tuple[float | None, int]:
    studies = session.scalars(select(Study).where(Study.user_id == user_id)).all()
    same = [
        s.id
        for s in studies
        if all((s.spec.get("workload") or {}).get(k) == workload.get(k) for k in SAME_SPEED)
    ]
    if not same:
        return None, 0
    rows = session.scalars(
        select(Trial)
        .where(Trial.study_id.in_(same), Trial.state == "complete", Trial.kind == "search")
        .order_by(Trial.id.desc())
        .limit(MEASURED_TRIALS)
    ).all()
    rates = []
    for t in rows:
        v = t.values or {}
        epochs = float(v.get("epochs_trained") or t.epochs_trained or 0.0)
        busy = float(v.get("train_time_s") or 0.0) + float(v.get("eval_time_s") or 0.0)
        if epochs > 0 and busy > 0:
            rates.append(busy / epochs)
    return (statistics.median(rates) if rates else None), len(rates)


def plan(session: Session, user_id: int, spec: dict[str, Any]) -> dict[str, Any]:
    """The plan of a validated spec (see the module docstring)."""
    from autopeft.trials.baselines import baseline_trial

    workload = spec["workload"]
    space = build_space(spec)
    peft = workload.get("kind") == "peft"
    out: dict[str, Any] = {
        "optimizer": spec["optimizer"]["name"],
        "max_trials": spec["max_trials"],
        "max_epochs": spec.get("max_epochs"),
        "max_seconds": spec.get("max_seconds"),
        "max_parallel": spec["max_parallel"],
        "epochs_per_trial": None,
        "baselines": [],
        "full_trials": None,
        "initial_design": _initial_design(spec, space),
        "memory_mb": None,
        "trainable_params": None,
        "seconds_per_epoch": None,
        "measured_trials": 0,
        "estimated_seconds": None,
        "warnings": [],
    }
    slots = max(0, spec["max_trials"] - len(spec.get("baselines") or []))
    full = slots
    if peft:
        per_trial = _epochs({}, workload)
        out["epochs_per_trial"] = per_trial
        for b in spec.get("baselines") or []:
            name = b if isinstance(b, str) else b["name"]
            config, wl = baseline_trial(name, workload, spec.get("baselines"))
            out["baselines"].append({"name": name, "epochs": _epochs(config, wl)})
        spent = sum(b["epochs"] for b in out["baselines"])
        if spec.get("max_epochs"):
            left = max(0.0, float(spec["max_epochs"]) - spent)
            full = min(full, int(math.floor(left / per_trial + 1e-9)))
        out["memory_mb"] = _memory(space, workload)
        out["trainable_params"] = _trainable(space, workload)
        spe, n = _seconds_per_epoch(session, user_id, workload)
        out["seconds_per_epoch"], out["measured_trials"] = spe, n
        if spe is not None:
            epochs = spent + full * per_trial
            out["estimated_seconds"] = epochs * spe / spec["max_parallel"]
            if spec.get("max_seconds") and out["estimated_seconds"] > spec["max_seconds"]:
                in_time = max(
                    0,
                    int((spec["max_seconds"] * spec["max_parallel"] / spe - spent) // per_trial),
                )
                out["warnings"].append(
                    f"max_seconds ends the study first: about {in_time} full trials fit in "
                    f"{spec['max_seconds']:g} s at the measured {spe:.1f} s an epoch "
                    f"({spec['max_parallel']} in parallel), not {full}"
                )
                full = min(full, in_time)
    out["full_trials"] = full
    design = out["initial_design"]
    if design is not None and full < design:
        out["warnings"].append(
            f"the budget runs about {full} full trials, fewer than {out['optimizer']}'s initial "
            f"design of {design}: its model never chooses a trial (set optimizer.options."
            f"{'n_initial' if out['optimizer'] == 'mobo' else 'n_startup_trials'} lower, or raise "
            "the budget)"
        )
    return out
