"""autopeft's population-based training inside Ray Tune: :class:`MOPBTScheduler` and
:class:`PBTScheduler`.

>>> from ray import tune
>>> from autopeft.integrations.tune import MOPBTScheduler
>>> scheduler = MOPBTScheduler(
...     metric=["acc", "params"], mode=["max", "min"], time_attr="epoch",
...     perturbation_interval=2, max_t=10,
...     hyperparam_mutations={"lr": tune.loguniform(1e-5, 1e-2), "dropout": [0.0, 0.1, 0.2]},
... )

Both are Tune's own :class:`~ray.tune.schedulers.PopulationBasedTraining` (its perturbation
timing, checkpointing and checkpoint transfer: an exploiting trial is paused, takes the donor's
config and resumes from the donor's latest checkpoint) with autopeft's decisions:

* *who exploits whom*: at a trial's perturbation the population (unfinished trials with a
  finite value for every metric at their last perturbation) is ranked by the ``mopbt``
  optimiser (non-dominated sorting, ties in a front by crowding distance or, with
  ``tie_break="hv"``, hypervolume contribution) or the ``pbt`` one (one metric, or with
  ``weights`` a weighted sum of min-max normalised objectives). The bottom
  ``quantile_fraction`` exploits a random member of the first non-dominated front (``mopbt``)
  or of the top quantile (``pbt``), never one of the bottom.
* *explore*: autopeft's :func:`~autopeft.optim.pbt.explore` on ``hyperparam_mutations``
  (Tune domains or lists, nested dicts allowed): each knob is resampled with
  ``resample_probability``, else scaled by 0.8 or 1.2 and clipped to its bounds (quantised
  values stay on their grid), or moved to a neighbouring choice. A donor value outside its
  domain is resampled. Explore draws are seeded by ``(seed, trial id, exploit number)``; the
  donor is drawn with Python's ``random``, as in Tune.

With ``max_t`` a trial reaching it is stopped as finished and never exploits there.
``lineage`` lists every exploit. Tune's ``synch=True`` mode is not offered.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
    from ray.tune.search.sample import Domain
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autopeft.integrations.tune_pbt needs Ray Tune: pip install 'autopeft[ray]'"
    ) from exc

from autopeft.errors import InvalidConfig
from autopeft.optim import create_optimizer
from autopeft.optim.pbt import explore, quantiles
from autopeft.optim.records import derive_seed

__all__ = ["MOPBTScheduler", "PBTScheduler", "tune_objectives"]

_MODES = {"min": "minimize", "max": "maximize"}


def tune_objectives(metric: Any, mode: Any) -> list[tuple[str, str]]:
    """Tune's ``metric`` / ``mode`` (one or several) as ``[(name, "minimize" | "maximize")]``."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(metrics) != len(modes) or not metrics:
        raise InvalidConfig(f"metric {metric!r} and mode {mode!r} differ in length", "mode")
    bad = [m for m in modes if m not in _MODES]
    if bad:
        raise InvalidConfig(f"mode must be 'min' or 'max', got {bad[0]!r}", "mode")
    return [(m, _MODES[d]) for m, d in zip(metrics, modes)]


def _mutation_domains(mutations: Mapping, prefix: str = "") -> dict:
    """``hyperparam_mutations`` with lists turned into ``tune.choice`` (nested dicts kept)."""
    from ray import tune

    out = {}
    for key, value in mutations.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out[key] = _mutation_domains(value, path + "/")
        elif isinstance(value, (list, tuple)) and value:
            out[key] = tune.choice(list(value))
        elif isinstance(value, Domain):
            out[key] = value
        else:
            raise InvalidConfig(
                f"hyperparam_mutations values must be Tune domains, non-empty lists or dicts of "
                f"them, got {value!r}",
                path,
            )
    return out


class MOPBTScheduler(PopulationBasedTraining):
    """autopeft's MO-PBT (``mopbt``) as a Tune scheduler.

    Args:
        metric, mode: lists of metric names and ``"min"``/``"max"`` (one each is allowed);
            ``None`` takes a single metric from ``TuneConfig``.
        hyperparam_mutations: the knobs that change on explore, as Tune domains (``uniform``,
            ``loguniform``, ``quniform``, ``randint``, ``choice``, ...) or lists of choices.
        time_attr: the result key counting progress; perturbation_interval: time between two
            perturbations of a trial; burn_in_period: no perturbation before it.
        max_t: the last step: a trial reaching it is stopped as done (perturbations only
            before it); quantile_fraction: the share that exploits (0, 0.5].
        seed: seeds explore; **options: options of the ranking optimiser (``tie_break``,
            ``reference_point`` for ``mopbt``; ``weights`` for ``pbt``).

    ``lineage`` holds every exploit; ``optimizer`` is the autopeft optimiser that ranks.
    """

    _OPTIMIZER = "mopbt"

    def __init__(
        self,
        metric: str | Sequence[str] | None = None,
        mode: str | Sequence[str] | None = None,
        *,
        hyperparam_mutations: Mapping,
        time_attr: str = "training_iteration",
        perturbation_interval: float = 4,
        burn_in_period: float = 0,
        max_t: float | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        seed: int = 0,
        log_config: bool = False,
        require_attrs: bool = True,
        **options: Any,
    ):
        if not perturbation_interval or perturbation_interval <= 0:
            raise InvalidConfig(
                f"must be > 0, got {perturbation_interval!r}", "perturbation_interval"
            )
        self._first_perturbation = max(perturbation_interval, burn_in_period)
        if max_t is not None and self._first_perturbation >= max_t:
            raise InvalidConfig(
                f"no trial can be perturbed before max_t={max_t!r}: the first perturbation is at "
                f"{time_attr} = {self._first_perturbation!r} (perturbation_interval, "
                "burn_in_period)",
                "perturbation_interval",
            )
        if not hyperparam_mutations:
            raise InvalidConfig("name at least one knob to explore", "hyperparam_mutations")
        mutations = _mutation_domains(hyperparam_mutations)
        from autopeft.integrations.tune import space_from_tune

        self._space, self._codecs = space_from_tune(mutations)
        super().__init__(
            time_attr=time_attr,
            perturbation_interval=perturbation_interval,
            burn_in_period=burn_in_period,
            hyperparam_mutations=mutations,
            quantile_fraction=quantile_fraction,
            resample_probability=resample_probability,
            log_config=log_config,
            require_attrs=require_attrs,
        )
        self._metrics = list(metric) if isinstance(metric, (list, tuple)) else metric
        self._modes = list(mode) if isinstance(mode, (list, tuple)) else mode
        self._max_t = max_t
        self._seed = seed
        self._options = {
            "quantile_fraction": quantile_fraction,
            "resample_probability": resample_probability,
            **options,
        }
        self._vectors: dict = {}  # trial -> minimisation-form objective vector (or None)
        self._lineage: list[dict] = []
        self._changes: dict = {}
        self.optimizer = None
        if metric is not None and mode is not None:
            self._build()

    def _build(self):
        objectives = tune_objectives(self._metrics, self._modes)
        self.optimizer = create_optimizer(
            self._OPTIMIZER,
            self._space,
            objectives,
            seed=self._seed,
            mutable=[p.name for p in self._space.params],
            **self._options,
        )
        first, direction = objectives[0]
        self._metric = first  # Tune checks that results carry it
        self._mode = "max" if direction == "maximize" else "min"
        self._metric_op = 1.0 if self._mode == "max" else -1.0
        self._signs = np.array([1.0 if d == "minimize" else -1.0 for _, d in objectives])

    @property
    def _metric_names(self) -> list[str]:
        return [self._metrics] if isinstance(self._metrics, str) else list(self._metrics or [])

    @property
    def metric(self) -> str | None:
        return self._metric

    @property
    def lineage(self) -> list[dict]:
        """Every exploit in order: ``trial``, ``source`` (Tune trial ids), ``step`` and
        ``source_step`` (``time_attr`` of both), ``values`` and ``source_values`` (the metrics
        ranked), ``old_config``, ``config`` (after explore) and ``changes``
        ``{flat key: (old, new, how)}`` relative to the donor (copies)."""
        return copy.deepcopy(self._lineage)

    # ------------------------------------------------------------------ Tune hooks
    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self.optimizer is not None:
            return metric is None and mode is None
        self._metrics = self._metrics or metric
        self._modes = self._modes or mode
        if self._metrics is None or self._modes is None:
            return False
        self._build()
        return True

    def on_trial_add(self, tune_controller, trial):
        stop = (getattr(trial, "stopping_criterion", None) or {}).get(self._time_attr)
        if isinstance(stop, (int, float)) and self._first_perturbation >= stop:
            raise InvalidConfig(
                f"trials stop at {self._time_attr} = {stop!r}, before the first perturbation at "
                f"{self._first_perturbation!r}: no exploit can happen",
                "perturbation_interval",
            )
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        missing = [m for m in self._metric_names if m not in result]
        if missing and self._require_attrs:
            raise RuntimeError(
                f"Cannot find metric {missing[0]!r} in the result of trial {trial}: report "
                f"every metric of {self._metric_names} (or set require_attrs=False)"
            )
        step = result.get(self._time_attr)
        if self._max_t is not None and step is not None and step >= self._max_t:
            return TrialScheduler.STOP  # budget reached: done, no exploit at the last step
        if missing:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._vectors.pop(trial, None)
        super().on_trial_remove(tune_controller, trial)

    # ------------------------------------------------------------------ PBT overrides
    def _save_trial_state(self, state, time, result, trial):
        score = super()._save_trial_state(state, time, result, trial)
        try:
            y = np.array([float(result[m]) for m in self._metric_names]) * self._signs
        except (KeyError, TypeError, ValueError):
            y = None
        self._vectors[trial] = y if y is not None and np.isfinite(y).all() else None
        return score

    def _quantiles(self):
        """``(lower, upper)``: the bottom quantile of autopeft's ranking, and the allowed
        donors (first front for ``mopbt``, top quantile for ``pbt``) outside it."""
        trials = [
            t
            for t, s in self._trial_state.items()
            if s.last_score is not None and not t.is_finished() and self._vectors.get(t) is not None
        ]
        if len(trials) < 2:
            return [], []
        Y = np.stack([self._vectors[t] for t in trials])
        order, sources = self.optimizer._order(Y)
        _, bottom = quantiles(order.tolist(), self._options["quantile_fraction"])
        upper = [trials[i] for i in sources if i not in bottom]
        if not upper:
            return [], []
        return [trials[i] for i in bottom], upper

    def _get_new_config(self, trial, trial_to_clone):
        from ray.tune.utils.util import flatten_dict, unflatten_dict

        flat = flatten_dict(copy.deepcopy(trial_to_clone.config), prevent_delimiter=True)
        rng = np.random.default_rng(
            derive_seed(self._seed, trial.trial_id, len(self._lineage), "explore")
        )
        internal = {}
        for p in self._space.params:
            try:
                internal[p.name] = p.check(self._codecs[p.name].to_internal(flat[p.name]))
            except (KeyError, TypeError, ValueError):  # InvalidConfig is a ValueError
                internal[p.name] = p.sample(rng)  # outside its domain: resample
        new, changes = explore(
            internal,
            self._space,
            [p.name for p in self._space.params],
            rng,
            self._options["resample_probability"],
        )
        flat.update({k: self._codecs[k].to_external(v) for k, v in new.items()})
        out = self._codecs
        self._changes = {
            k: (out[k].to_external(a), out[k].to_external(b), how)
            for k, (a, b, how) in changes.items()
        }
        ops = unflatten_dict({k: how for k, (_, _, how) in self._changes.items()})
        return unflatten_dict(flat), ops

    def _exploit(self, tune_controller, trial, trial_to_clone):
        state, donor = self._trial_state[trial], self._trial_state[trial_to_clone]
        entry = {
            "trial": trial.trial_id,
            "source": trial_to_clone.trial_id,
            "step": state.last_train_time,
            "source_step": donor.last_train_time,
            "values": self._named(state.last_result),
            "source_values": self._named(donor.last_result),
            "old_config": copy.deepcopy(trial.config),
        }
        self._changes = {}
        super()._exploit(tune_controller, trial, trial_to_clone)
        entry["config"] = copy.deepcopy(trial.config)
        entry["changes"] = dict(self._changes)
        self._lineage.append(entry)

    def _named(self, result: Mapping | None) -> dict:
        return {m: (result or {}).get(m) for m in self._metric_names}

    def debug_string(self) -> str:
        return (
            f"Using {type(self).__name__}: {self._num_checkpoints} checkpoints, "
            f"{len(self._lineage)} exploits."
        )


class PBTScheduler(MOPBTScheduler):
    """autopeft's scalar ``pbt`` as a Tune scheduler: ranked by the first metric or, with
    ``weights=[...]``, by a weighted sum of the objectives min-max
    normalised over the population; the bottom quantile exploits the top quantile. Arguments
    as :class:`MOPBTScheduler`."""

    _OPTIMIZER = "pbt"
