"""Trial runner: run one workload for one config and return its metrics.

Public surface (importing this package does not import torch):

* ``TrialContext``: what a running workload gets (report, checkpoint folders, budget,
  resources); see ``autopeft.trials.context``.
* ``validate_workload(workload) -> Workload``: cheap check + normalisation of a workload spec
  (raises ``autopeft.InvalidConfig`` with ``field="workload.<key>"``); the API calls it
  before accepting a study.
* ``run_workload(workload, config, trial) -> dict[str, float]``: run it.

Workload kinds: ``{"kind": "python", "entrypoint": "pkg.mod:fn"}`` calls
``fn(config, trial)``; ``{"kind": "peft", "model": ..., "dataset": ..., ...}`` fine-tunes
a model (``autopeft.trials.train``; keys in ``autopeft.trials.workload``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.trials.context import TrialContext
from autopeft.trials.knobs import KNOBS
from autopeft.trials.workload import Workload, as_workload, resolve_model_dir, validate_workload

__all__ = [
    "KNOBS",
    "TrialContext",
    "Workload",
    "resolve_model_dir",
    "run_workload",
    "validate_workload",
]


def run_workload(
    workload: Mapping[str, Any], config: Mapping[str, Any], trial: TrialContext
) -> dict[str, float]:
    """Run ``workload`` for ``config`` and return its final metrics (name -> float).

    This is where a worker takes a trial's workload: a plain mapping is validated here, once
    (``InvalidConfig`` if it is bad); a :class:`Workload` (validated at its own boundary, e.g.
    the ``autopeft trial`` command) is taken as it is. Exceptions of the workload itself
    propagate: the executor marks the trial failed.
    """
    spec = as_workload(workload)  # a Workload (validated at its boundary) is taken as it is
    if spec["kind"] == "peft":
        from autopeft.trials.train import run_peft

        return run_peft(spec, dict(config), trial)
    module_name, fn_name = spec["entrypoint"].split(":")
    fn = getattr(importlib.import_module(module_name), fn_name, None)
    if not callable(fn):
        raise InvalidConfig(
            f"entrypoint {spec['entrypoint']!r}: {module_name} has no function {fn_name!r}",
            field="workload.entrypoint",
        )
    return _as_metrics(fn(dict(config), trial), spec["entrypoint"])


def _as_metrics(result: Any, where: str) -> dict[str, float]:
    if not isinstance(result, Mapping):
        raise TypeError(
            f"{where} must return a dict of metric name -> number, got {type(result).__name__}"
        )
    out: dict[str, float] = {}
    for key, value in result.items():
        if not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy scalars, 0-d tensors
            except (TypeError, ValueError):
                raise TypeError(
                    f"{where} returned a non-numeric value for {key!r}: {value!r}"
                ) from None
        out[str(key)] = float(value)
    return out
