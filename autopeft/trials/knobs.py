"""Training knobs: their defaults and checks, how a trial resolves them, and what they make a
peft trial report.

A training knob is read from the trial's config first, then from the workload, then from
``KNOBS``' default (a config's value wins: it is what the optimiser searches).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from autopeft.trials.checks import choice, integer, number, optional

SCHEDULERS = ("linear", "cosine", "constant")

# Training knobs: name -> (default, checker). Aliases used by some spaces map onto them.
KNOBS: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {
    "lr": (5e-4, number(0.0, 10.0, open_low=True)),
    "weight_decay": (0.0, number(0.0, 10.0)),
    "warmup_ratio": (0.06, number(0.0, 1.0, open_high=True)),
    # None: SMALL_DATA_BATCH for small training sets (more steps per epoch), else 32
    "batch_size": (None, optional(integer(1, 65536))),
    "eval_batch_size": (64, integer(1, 65536)),
    "epochs": (1, integer(1, 10000)),
    "scheduler": ("linear", choice(SCHEDULERS)),
    "max_length": (128, integer(8, 100000)),
    "seed": (0, integer(0)),
    "max_grad_norm": (1.0, number(0.0)),  # 0 = no clipping
    "dropout": (None, optional(number(0.0, 1.0, open_high=True))),  # None: the model's own
    # the task head's own learning rate (None: HEAD_LR, or lr when that is higher)
    "head_lr": (None, optional(number(0.0, 10.0, open_low=True))),
    # evaluations (reports) per epoch: the resolution of learning curves, rungs and PBT intervals
    "evals_per_epoch": (2, integer(1, 1000)),
}
SMALL_DATA = 2000  # training sets up to this size train at SMALL_DATA_BATCH by default
SMALL_DATA_BATCH = 16


def default_batch_size(n_train: int) -> int:
    """The batch size when neither the config nor the workload sets one."""
    return SMALL_DATA_BATCH if n_train <= SMALL_DATA else 32


KNOB_ALIASES = {"learning_rate": "lr", "sched": "scheduler", "warmup": "warmup_ratio"}


def checked_knobs(source: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The training knobs ``source`` sets (aliases resolved to their knob), each checked; an
    invalid value is ``InvalidConfig`` naming ``prefix + key``. Other keys are left to the
    caller."""
    out: dict[str, Any] = {}
    for key, value in source.items():
        name = KNOB_ALIASES.get(key, key)
        if name in KNOBS:
            out[name] = KNOBS[name][1](value, f"{prefix}{key}")
    return out


def resolve_knobs(workload: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Training knobs for one trial: config, else workload, else default (checked)."""
    knobs: dict[str, Any] = {}
    for name, (default, check) in KNOBS.items():
        aliases = [name, *(a for a, n in KNOB_ALIASES.items() if n == name)]
        for source in (config, workload):
            key = next((a for a in aliases if a in source), None)
            if key is not None:
                value = source[key]
                knobs[name] = None if value is None and default is None else check(value, key)
                break
        else:
            knobs[name] = default
    return knobs


#: metrics a peft trial reports at every step (besides the optimiser's exactly known objectives)
REPORTED_METRICS = ("epoch", "train_loss", "accuracy", "macro_f1", "loss")
#: ... of the causal_lm task (``accuracy`` is its exact match: ``autopeft.trials.causal``)
CAUSAL_LM_METRICS = ("epoch", "train_loss", "accuracy", "exact_match", "loss", "perplexity")


def reported_metrics(workload: Mapping[str, Any]) -> tuple[str, ...]:
    """The metrics a peft trial of ``workload`` reports at every evaluation."""
    return CAUSAL_LM_METRICS if workload.get("task") == "causal_lm" else REPORTED_METRICS


def _knob_range(name: str, workload: Mapping[str, Any], space) -> tuple[Any, Any]:
    """(lowest, highest) value of a training knob over the space's configs (config, else workload,
    else default: see ``resolve_knobs``)."""
    aliases = [name, *(a for a, n in KNOB_ALIASES.items() if n == name)]
    for alias in aliases:
        if space is not None and alias in space:
            p = space[alias]
            values = [p.low, p.high] if p.kind in ("int", "float") else list(p.values())
            return min(values), max(values)
        if space is not None and alias in space.constants:
            return space.constants[alias], space.constants[alias]
    for alias in aliases:
        if alias in workload:
            return workload[alias], workload[alias]
    return KNOBS[name][0], KNOBS[name][0]


def final_report_steps(workload: Mapping[str, Any], space=None) -> tuple[int, int]:
    """(fewest, most) report steps a peft trial of this workload and space makes when trained to
    the end: ``epochs`` x ``evals_per_epoch`` (fewer only when an epoch has fewer optimiser steps
    than ``evals_per_epoch``)."""
    e_lo, e_hi = _knob_range("epochs", workload, space)
    r_lo, r_hi = _knob_range("evals_per_epoch", workload, space)
    return int(e_lo) * int(r_lo), int(e_hi) * int(r_hi)
