"""Optimisers behind one ask/tell/report interface, and Pareto maths.

>>> opt = create_optimizer("mobo", space, [("accuracy", "maximize"), ("trainable_params", "minimize")],
...                        seed=0, known_objectives={"trainable_params": count_fn})
>>> (s,) = opt.ask()
>>> opt.tell(s.id, {"accuracy": 0.83})

Names: ``random``, ``sobol``, ``tpe``, ``nsga2``, ``gp`` (Optuna's GPSampler), ``mobo``, ``pbt``,
``mopbt``; prefix one
with ``asha+`` or ``moasha+`` for multi-fidelity early stopping (same as the
``early_stopping`` option). Importing this package imports neither torch, BoTorch nor Optuna;
the optimiser that needs them imports them when created.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from autopeft.errors import InvalidConfig
from autopeft.optim.base import BaseOptimizer, Exploit, Suggestion, Trial

_REGISTRY = {
    "random": "autopeft.optim._simple:RandomOptimizer",
    "sobol": "autopeft.optim._simple:SobolOptimizer",
    "tpe": "autopeft.optim._optuna:TPEOptimizer",
    "nsga2": "autopeft.optim._optuna:NSGA2Optimizer",
    "gp": "autopeft.optim._optuna:GPOptimizer",
    "mobo": "autopeft.optim.mobo:MOBOOptimizer",
    "pbt": "autopeft.optim.pbt:PBTOptimizer",
    "mopbt": "autopeft.optim.pbt:MOPBTOptimizer",
}
_STOPPERS = ("asha", "moasha")

OPTIMIZERS = tuple(_REGISTRY)


def optimizer_class(name: str) -> type[BaseOptimizer]:
    """The class registered under ``name`` (imports its module)."""
    if name not in _REGISTRY:
        raise InvalidConfig(
            f"unknown optimiser {name!r}; known: {', '.join(_REGISTRY)} "
            f"(optionally prefixed by {' or '.join(s + '+' for s in _STOPPERS)})",
            "optimizer",
        )
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_optimizer(
    name: str, space, objectives: Sequence[tuple[str, str]], seed: int = 0, **options: Any
) -> BaseOptimizer:
    """Create the optimiser ``name`` over ``space`` for ``objectives`` ``[(name, "minimize" |
    "maximize"), ...]``. ``"asha+random"`` = ``random`` with ``early_stopping={"kind": "asha"}``.
    Unknown names and options raise :class:`autopeft.InvalidConfig` naming them."""
    if not isinstance(name, str):
        raise InvalidConfig(f"optimiser name must be a string, got {name!r}", "optimizer")
    if "+" in name:
        stopper, _, base = name.partition("+")
        if stopper not in _STOPPERS:
            raise InvalidConfig(
                f"unknown early-stopping prefix {stopper!r}; known: {', '.join(_STOPPERS)}",
                "optimizer",
            )
        if "early_stopping" in options:
            raise InvalidConfig(
                f"{name!r} already sets early stopping; drop the option or the prefix",
                "early_stopping",
            )
        options["early_stopping"] = {"kind": stopper}
        name = base
    return optimizer_class(name)(space, objectives, seed, **options)


def __getattr__(name: str):
    if name == "pareto":
        return importlib.import_module("autopeft.optim.pareto")
    raise AttributeError(f"module 'autopeft.optim' has no attribute {name!r}")


__all__ = [
    "BaseOptimizer",
    "Exploit",
    "OPTIMIZERS",
    "Suggestion",
    "Trial",
    "create_optimizer",
    "optimizer_class",
]
