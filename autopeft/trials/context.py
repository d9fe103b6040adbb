"""The handle a running trial gets: report progress, find its checkpoint folders, read its budget.

This is the contract between a workload (``fn(config, trial)`` or the built-in ``peft``
workload) and whatever runs it (the local executor, the Ray executor, the CLI, a test).
It deliberately imports nothing heavy (no torch) so that executors can build one cheaply.

Reporter protocol
-----------------
``reporter(step, metrics)`` is the executor's callback. It returns the optimiser's
decision for the trial:

* ``"continue"`` (or ``None`` / ``True``): go on;
* ``"stop"`` (or ``False``): stop now (early stopping, study stopped);
* anything else (e.g. an ``Exploit`` object from PBT): stop now as well; the executor
  that returned it knows what to do next (typically restart the trial with
  ``restore_dir`` pointing at another trial's checkpoint and a perturbed config).

``TrialContext.report`` turns that into a ``bool`` (False: stop now) and remembers the
raw decision in ``last_decision``. A workload must return soon after ``report`` returned
False, with the metrics it has.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopeft.errors import InvalidConfig

Reporter = Callable[[int, dict[str, float]], Any]

_BUDGET_KEYS = ("epochs", "step", "fraction")


@dataclass
class TrialContext:
    """What a workload knows about the trial it runs.

    Attributes:
        trial_id: the trial's id (string or int, opaque to workloads).
        number: the trial's 0-based number within its study.
        checkpoint_dir: folder the workload writes its checkpoints into (created on
            demand), or ``None`` when nobody will ever resume this trial.
        restore_dir: folder of a checkpoint to start from, or ``None`` to start fresh.
            Set when PBT cloned another trial, or when a trial is continued at a higher
            fidelity (then it is usually the trial's own ``checkpoint_dir``).
        reporter: the executor's callback (see the module docstring), or ``None``.
        budget: the fidelity of this run, or ``None`` for the full budget:
            ``{"epochs": e}`` trains until e epochs have been completed in total
            (counting those of the restored checkpoint); ``{"step": n}`` until the report
            of step n (the peft workload reports ``evals_per_epoch`` times an epoch, so a
            step is a fraction of an epoch); ``{"fraction": f}`` trains on
            the fraction ``f`` in (0, 1] of the training data. Both may be given.
        resources: what the executor granted, e.g. ``{"cpus": 2, "gpus": 0}``; the peft
            workload sets its torch thread count from ``cpus`` and uses CUDA only when
            ``gpus`` is not 0.
        last_decision: the reporter's last raw answer (read-only for workloads).
    """

    trial_id: Any
    number: int = 0
    checkpoint_dir: str | Path | None = None
    restore_dir: str | Path | None = None
    reporter: Reporter | None = None
    budget: Mapping[str, float] | None = None
    resources: Mapping[str, float] | None = None
    last_decision: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = Path(self.checkpoint_dir)
        if self.restore_dir is not None:
            self.restore_dir = Path(self.restore_dir)
        self.budget = _check_budget(self.budget)
        self.resources = dict(self.resources) if self.resources else {}

    def report(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Report intermediate ``metrics`` after ``step`` (an epoch for the peft workload).

        Returns True to go on, False to stop now. Without a reporter, always True.
        """
        values = {str(k): float(v) for k, v in metrics.items()}
        if self.reporter is None:
            self.last_decision = "continue"
            return True
        decision = self.reporter(int(step), values)
        self.last_decision = decision
        if decision is None or decision is True:
            return True
        return isinstance(decision, str) and decision == "continue"

    @property
    def cpus(self) -> int | None:
        """Number of CPU threads granted, or None when the executor did not say."""
        cpus = self.resources.get("cpus") if self.resources else None
        return max(1, int(cpus)) if cpus else None

    @property
    def gpus(self) -> float | None:
        """Number of GPUs granted (may be fractional), or None when not said."""
        return self.resources.get("gpus") if self.resources else None


def _check_budget(budget: Mapping[str, float] | None) -> dict[str, float] | None:
    """The budget normalised (``epochs`` int, ``fraction`` float), or InvalidConfig."""
    if budget is None:
        return None
    if not isinstance(budget, Mapping):
        raise InvalidConfig(
            f"budget must be a mapping such as {{'epochs': 2}}, got {budget!r}", field="budget"
        )
    unknown = sorted(set(budget) - set(_BUDGET_KEYS))
    if unknown:
        raise InvalidConfig(
            f"budget: unknown key(s) {unknown}; known: {list(_BUDGET_KEYS)}", field="budget"
        )
    out: dict[str, float] = {}
    for key in ("epochs", "step"):
        value = budget.get(key)
        if value is not None:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not float(value).is_integer()
                or value < 1
            ):
                raise InvalidConfig(
                    f"budget.{key} must be an integer >= 1, got {value!r}", field="budget"
                )
            out[key] = int(value)
    fraction = budget.get("fraction")
    if fraction is not None:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or math.isnan(fraction)
            or not 0.0 < fraction <= 1.0
        ):
            raise InvalidConfig(
                f"budget.fraction must be in (0, 1], got {fraction!r}", field="budget"
            )
        out["fraction"] = float(fraction)
    return out or None
