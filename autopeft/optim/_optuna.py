"""``tpe`` and ``nsga2``: Optuna's samplers behind our interface.

An in-memory Optuna study mirrors our trials: ``ask`` asks the study (define-by-run, so
conditional parameters are suggested only when active), ``tell`` tells it. Ordinal parameters
are suggested as integer indices (so TPE keeps their order); categorical ones as categories.
The sampler is re-created at every ask with a seed derived from ``(seed, trial number)``, so
replaying the same ask/tell sequence reproduces every suggestion. When our base class replaces
a suggestion (duplicate in a batch, infeasible for a known constraint, warm start), the Optuna
trial is told ``FAIL`` and a trial with the actual config is enqueued in its place, so the
study always holds exactly the configs we evaluate.
"""

from __future__ import annotations

import warnings
from typing import Any

from autopeft.optim.base import BaseOptimizer, config_key, derive_seed

_CONSTRAINT_ATTR = "autopeft_constraints"


def _suggest_config(otrial, space) -> dict:
    config = dict(space.constants)
    for p in space.params:
        if not p.is_active(config):
            continue
        if p.kind == "float":
            v = otrial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
        elif p.kind == "int":
            v = otrial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        elif p.kind == "ordinal":
            v = p.choices[otrial.suggest_int(p.name, 0, len(p.choices) - 1)]
        else:
            v = otrial.suggest_categorical(p.name, list(p.choices))
        config[p.name] = v
    return config


def _to_params(config: dict, space) -> dict:
    params = {}
    for p in space.params:
        if p.name in config:
            params[p.name] = p.index(config[p.name]) if p.kind == "ordinal" else config[p.name]
    return params


class _OptunaOptimizer(BaseOptimizer):
    REBUILDS_BY_ADD = False  # every ask changes the sampler's study: replay real asks

    def __init__(self, space, objectives, seed=0, **options):
        super().__init__(space, objectives, seed, **options)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        directions = list(self.directions)
        self._study = optuna.create_study(directions=directions, sampler=self._make_sampler(0))
        self._by_number: dict[int, Any] = {}
        self._pending: dict[int, tuple[Any, tuple]] = {}

    def _constraints_func(self):
        if not self.constraints:
            return None
        k = len(self.constraints)
        return lambda ft: ft.user_attrs.get(_CONSTRAINT_ATTR, [1.0] * k)

    def _make_sampler(self, number: int):
        raise NotImplementedError

    def _suggest(self, n, first_number):
        out = []
        for j in range(n):
            number = first_number + j
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
                self._study.sampler = self._make_sampler(number)
            otrial = self._study.ask()
            config = _suggest_config(otrial, self.space)
            self._pending[number] = (otrial, config_key(self.space.validate(config)))
            out.append((config, None, None))
        return out

    def _on_ask(self, record):
        pending = self._pending.pop(record.id, None)
        if pending is not None and pending[1] == config_key(record.config):
            self._by_number[record.id] = pending[0]
            return
        if pending is not None:
            self._study.tell(pending[0], state=self._optuna.trial.TrialState.FAIL)
        self._study.enqueue_trial(_to_params(record.config, self.space))
        otrial = self._study.ask()
        _suggest_config(otrial, self.space)
        self._by_number[record.id] = otrial

    def _on_tell(self, record):
        otrial = self._by_number.pop(record.id)
        TrialState = self._optuna.trial.TrialState
        if record.state == "complete":
            if self.constraints:
                otrial.set_user_attr(_CONSTRAINT_ATTR, self.violation(record.values).tolist())
            self._study.tell(otrial, [record.values[k] for k in self.objective_names])
        else:
            state = TrialState.PRUNED if record.state == "pruned" else TrialState.FAIL
            self._study.tell(otrial, state=state)


class TPEOptimizer(_OptunaOptimizer):
    """Optuna's ``TPESampler`` (multivariate, grouped for conditional spaces, constant liar for
    parallel workers). Options: ``n_startup_trials`` (default 10), ``multivariate`` (True)."""

    name = "tpe"
    OPTIONS = {"n_startup_trials": 10, "multivariate": True}

    def _make_sampler(self, number):
        multivariate = bool(self.options["multivariate"])
        return self._optuna.samplers.TPESampler(
            seed=derive_seed(self.seed, number, "tpe") % (2**32),
            n_startup_trials=self.options["n_startup_trials"],
            multivariate=multivariate,
            group=multivariate,
            constant_liar=True,
            constraints_func=self._constraints_func(),
        )


class NSGA2Optimizer(_OptunaOptimizer):
    """Optuna's ``NSGAIISampler``. Options: ``population_size`` (default 50),
    ``mutation_prob``, ``crossover_prob`` (0.9)."""

    name = "nsga2"
    OPTIONS = {"population_size": 50, "mutation_prob": None, "crossover_prob": 0.9}

    def _make_sampler(self, number):
        return self._optuna.samplers.NSGAIISampler(
            seed=derive_seed(self.seed, number, "nsga2") % (2**32),
            population_size=self.options["population_size"],
            mutation_prob=self.options["mutation_prob"],
            crossover_prob=self.options["crossover_prob"],
            constraints_func=self._constraints_func(),
        )


class GPOptimizer(_OptunaOptimizer):
    """Optuna's ``GPSampler`` (a Gaussian process with log-EHVI for several objectives, mixed
    spaces). Options: ``n_startup_trials`` (default 10), ``deterministic_objective`` (False)."""

    name = "gp"
    OPTIONS = {"n_startup_trials": 10, "deterministic_objective": False}

    def _make_sampler(self, number):
        return self._optuna.samplers.GPSampler(
            seed=derive_seed(self.seed, number, "gp") % (2**32),
            n_startup_trials=self.options["n_startup_trials"],
            deterministic_objective=bool(self.options["deterministic_objective"]),
            constraints_func=self._constraints_func(),
            warn_independent_sampling=False,
        )
