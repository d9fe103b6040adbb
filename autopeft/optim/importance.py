"""Which searched parameters matter, per objective: Optuna's importance evaluators over a study's
complete trials (fANOVA by default: Hutter et al. 2014, as ``optuna.importance`` implements it;
``ped_anova`` and ``mdi`` on request), never a home-made ANOVA.

The trials are mirrored into an in-memory Optuna study with this space's distributions (floats
and ints with their bounds and log scale, ordinals as their index, categoricals as categories).
Optuna considers the parameters every complete trial has: a conditional parameter that was
inactive in some trial (a per-layer rank under a layer mask, say) is left out and named in
``excluded``. Importances of one objective sum to 1 (Optuna's normalisation); with fewer than
``MIN_TRIALS`` complete trials, or when an objective never varies, nothing is computed for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from autopeft.errors import InvalidConfig

MIN_TRIALS = 4
EVALUATORS = ("fanova", "ped_anova", "mdi")


def _distribution(p):
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if p.kind == "float":
        return FloatDistribution(float(p.low), float(p.high), log=bool(p.log))
    if p.kind == "int":
        return IntDistribution(int(p.low), int(p.high), log=bool(p.log))
    if p.kind == "ordinal":
        return IntDistribution(0, len(p.choices) - 1)
    return CategoricalDistribution(list(p.choices))


def _evaluator(name: str, seed: int):
    import optuna.importance as oi

    if name == "fanova":
        return oi.FanovaImportanceEvaluator(seed=seed)
    if name == "ped_anova":
        return oi.PedAnovaImportanceEvaluator()
    if name == "mdi":
        return oi.MeanDecreaseImpurityImportanceEvaluator(seed=seed)
    raise InvalidConfig(
        f"evaluator must be one of {', '.join(EVALUATORS)}, got {name!r}", "evaluator"
    )


def param_importances(
    space,
    trials: Sequence[tuple[Mapping[str, Any], Mapping[str, float]]],
    objectives: Sequence[Mapping[str, str]],
    evaluator: str = "fanova",
    seed: int = 0,
) -> dict[str, Any]:
    """``trials``: ``(config, values)`` of complete trials. Returns ``{"evaluator", "n_trials",
    "objectives": {name: {param: importance} | None}, "excluded": [params], "reason": str |
    None}``, the parameters of each objective most important first."""
    import optuna

    if evaluator not in EVALUATORS:
        _evaluator(evaluator, seed)  # raises, naming the field
    names = [o["name"] for o in objectives]
    rows = [
        (config, values)
        for config, values in trials
        if all(isinstance(values.get(n), (int, float)) for n in names)
    ]
    out: dict[str, Any] = {
        "evaluator": evaluator,
        "n_trials": len(rows),
        "objectives": {n: None for n in names},
        "excluded": [],
        "reason": None,
    }
    if len(rows) < MIN_TRIALS:
        out["reason"] = f"needs at least {MIN_TRIALS} complete trials with every objective"
        return out
    searched = list(space.params)
    active = [p for p in searched if all(p.name in config for config, _ in rows)]
    out["excluded"] = [p.name for p in searched if p not in active]
    varied = [p for p in active if len({_param_value(p, config[p.name]) for config, _ in rows}) > 1]
    if not varied:
        out["reason"] = "no searched parameter varies across the complete trials"
        return out
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p.name: _distribution(p) for p in varied}
    for name in names:
        ys = [float(values[name]) for _, values in rows]
        if max(ys) - min(ys) <= 0:
            continue
        study = optuna.create_study(direction="minimize")
        for (config, _), y in zip(rows, ys):
            study.add_trial(
                optuna.trial.create_trial(
                    params={p.name: _param_value(p, config[p.name]) for p in varied},
                    distributions=dists,
                    value=y,
                )
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks some evaluators experimental
            imp = optuna.importance.get_param_importances(
                study, evaluator=_evaluator(evaluator, seed), normalize=True
            )
        out["objectives"][name] = {k: float(v) for k, v in imp.items()}
    return out


def _param_value(p, value):
    return p.index(value) if p.kind == "ordinal" else value
