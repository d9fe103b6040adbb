"""Python workloads used by the tests (entry points ``tests.trials.workloads:<fn>``)."""

from __future__ import annotations

from autopeft.trials import TrialContext


def quadratic(config: dict, trial: TrialContext) -> dict:
    """(x - 2)^2 reported over a few steps; stops when told to."""
    x = float(config.get("x", 0.0))
    steps = int(config.get("steps", 3))
    for step in range(1, steps + 1):
        if not trial.report(step, {"loss": (x - 2.0) ** 2 / step}):
            return {"loss": (x - 2.0) ** 2 / step, "steps": step}
    return {"loss": (x - 2.0) ** 2 / steps, "steps": steps}


def not_a_dict(config: dict, trial: TrialContext):
    return [1.0]


def text_value(config: dict, trial: TrialContext):
    return {"loss": "low"}


NOT_CALLABLE = 3
