"""``mobo`` as an Optuna sampler: :class:`MoboSampler`.

>>> import optuna
>>> from autopeft.integrations.optuna import MoboSampler
>>> study = optuna.create_study(directions=["minimize", "minimize"], sampler=MoboSampler(seed=0))
>>> study.optimize(objective, n_trials=30)

How it works (the same split as Optuna's ``GPSampler``):

* **Joint space.** :meth:`MoboSampler.infer_relative_search_space` is the intersection of the
  distributions of the study's completed trials (single-valued distributions left out). Each
  Optuna distribution becomes one autopeft :class:`~autopeft.space.Param`: a float without step
  → ``float`` (``log`` kept); an int with step 1 → ``int`` (``log`` kept); a float or int *with a
  step* → ``int`` over the grid index ``0 .. (high - low) / step`` (so values stay on the grid);
  a categorical → ``categorical`` over the choice indices (one-hot; any choice type works).
* **Rebuild per sample.** :meth:`sample_relative` creates a ``mobo`` optimiser over that space
  (``create_optimizer("mobo", space, objectives, seed, **mobo_options)``) and registers the
  study's trials in number order with ``add_trial``: complete ones with their values (and
  constraint values), failed ones as failed, pruned ones as pruned (single-objective: at their
  last intermediate value), running ones — whose params cover the space — as pending; then it
  asks for one config. ``mobo``'s suggestions depend only on the trial numbers and the told
  data, so this is the same optimiser an incremental update would hold, and it is always in
  step with the storage (in-memory or RDB, several processes, ``enqueue_trial``, failed trials).
  Waiting trials (enqueued, not started) are not registered. While fewer trials than ``mobo``'s
  ``n_initial`` exist, its own scrambled Sobol design answers.
* **Independent sampling.** Params outside the joint space (the first trial, dynamic or
  conditional spaces, single-valued distributions) come from ``independent_sampler``
  (default ``RandomSampler(seed)``); a warning says so once complete trials exist.

Objectives: ``value_0, value_1, ...`` with the study's directions. ``mobo`` needs two or more
objectives, so a single-objective study adds a constant objective ``_constant`` (0, given as a
known objective, never modelled): hypervolume improvement then is improvement of ``value_0``.
Constraints: ``constraints_func(frozen_trial) -> sequence of floats`` (feasible when all are
``<= 0``), stored after each trial as Optuna's own samplers store them, and modelled by
``mobo`` as ``constraint_j <= 0``. A complete trial whose constraints are missing is told as
failed.

Reproducibility: with the same ``seed`` and a sequential study (``n_jobs=1``) the sampled
params are identical run to run. :meth:`reseed_rng` (Optuna calls it for ``n_jobs > 1``) draws a
fresh seed for ``mobo`` and reseeds the independent sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import InvalidConfig
from autopeft.optim import create_optimizer
from autopeft.space import Param, SearchSpace

__all__ = ["MoboSampler", "space_from_distributions"]

_logger = optuna.logging.get_logger(__name__)
_CONSTRAINTS_KEY = "constraints"  # where Optuna's samplers keep constraint values
_PAD = "_constant"  # the second objective of a single-objective study (always 0)


class _Codec:
    """Maps one Optuna distribution to an autopeft :class:`Param` and values both ways."""

    def __init__(self, name: str, dist: BaseDistribution):
        self.dist = dist
        if isinstance(dist, CategoricalDistribution):
            self.param = Param(name, "categorical", choices=tuple(range(len(dist.choices))))
            self.grid = None
        elif isinstance(dist, (FloatDistribution, IntDistribution)):
            step = dist.step
            if step is not None and not (isinstance(dist, IntDistribution) and step == 1):
                self.grid = (dist.low, step, int(round((dist.high - dist.low) / step)))
                self.param = Param(name, "int", low=0, high=self.grid[2])
            else:
                self.grid = None
                kind = "int" if isinstance(dist, IntDistribution) else "float"
                self.param = Param(name, kind, low=dist.low, high=dist.high, log=dist.log)
        else:
            raise InvalidConfig(
                f"unsupported Optuna distribution {type(dist).__name__}", "search_space"
            )

    def to_internal(self, value: Any) -> Any:
        if isinstance(self.dist, CategoricalDistribution):
            return int(self.dist.to_internal_repr(value))
        if self.grid is not None:
            low, step, n = self.grid
            return int(min(n, max(0, round((value - low) / step))))
        return int(value) if isinstance(self.dist, IntDistribution) else float(value)

    def to_external(self, value: Any) -> Any:
        d = self.dist
        if isinstance(d, CategoricalDistribution):
            return d.choices[int(value)]
        if self.grid is not None:
            low, step, _ = self.grid
            v = low + int(value) * step
            return int(min(d.high, v)) if isinstance(d, IntDistribution) else float(min(d.high, v))
        if isinstance(d, IntDistribution):
            return int(min(d.high, max(d.low, int(value))))
        return float(min(d.high, max(d.low, float(value))))


def space_from_distributions(
    search_space: dict[str, BaseDistribution],
) -> tuple[SearchSpace, dict[str, _Codec]]:
    """An autopeft space over ``search_space`` (Optuna distributions) and the value codecs."""
    codecs = {name: _Codec(name, dist) for name, dist in search_space.items()}
    return SearchSpace([c.param for c in codecs.values()], {}), codecs


class MoboSampler(BaseSampler):
    """autopeft's ``mobo`` (BoTorch GPs + qLogNEHVI) as an Optuna sampler.

    Args:
        seed: seeds ``mobo`` and the default independent sampler; ``None`` draws one.
        independent_sampler: samples params outside the joint space (default
            ``RandomSampler(seed=seed)``).
        constraints_func: ``fn(FrozenTrial) -> sequence of floats``; a trial is feasible when
            every value is ``<= 0``. Called after each complete or pruned trial.
        warn_independent_sampling: log a warning when a param is sampled independently although
            complete trials exist.
        **mobo_options: options of ``mobo`` (e.g. ``n_initial``, ``reference_point``,
            ``ref_rule``, ``fit_maxiter``); unknown ones raise :class:`autopeft.InvalidConfig`
            when first sampling.
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        constraints_func: Callable[[FrozenTrial], Sequence[float]] | None = None,
        warn_independent_sampling: bool = True,
        **mobo_options: Any,
    ):
        if seed is None:
            seed = _fresh_seed()
        self._seed = int(seed)
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)
        self._constraints_func = constraints_func
        self._warn_independent_sampling = warn_independent_sampling
        self._mobo_options = dict(mobo_options)
        self._intersection = IntersectionSearchSpace()
        #: the ``mobo`` optimiser of the latest :meth:`sample_relative` (for inspection)
        self.last_optimizer = None

    # ------------------------------------------------------------------ BaseSampler
    def reseed_rng(self) -> None:
        self._seed = _fresh_seed()
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {
            name: dist
            for name, dist in self._intersection.calculate(study).items()
            if not dist.single()
        }

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        space, codecs = space_from_distributions(search_space)
        objectives = [
            (f"value_{i}", "maximize" if d == StudyDirection.MAXIMIZE else "minimize")
            for i, d in enumerate(study.directions)
        ]
        trials = sorted(
            (t for t in _all_trials(study) if t.number != trial.number), key=lambda t: t.number
        )
        n_constraints = 0
        if self._constraints_func is not None:
            n_constraints = max((len(_constraints_of(t) or ()) for t in trials), default=0)
        options = dict(self._mobo_options)
        if len(objectives) == 1:
            # mobo models >= 2 objectives (qLogNEHVI); with a second, constant objective known
            # exactly, hypervolume improvement is improvement of the first (expected improvement)
            objectives.append((_PAD, "minimize"))
            known = dict(options.get("known_objectives") or {})
            known[_PAD] = _zero
            options["known_objectives"] = known
        if n_constraints:
            options["constraints"] = [(f"constraint_{j}", "<=", 0.0) for j in range(n_constraints)]
        opt = create_optimizer("mobo", space, objectives, seed=self._seed, **options)
        for t in trials:
            config = _config_of(t, search_space, codecs)
            if config is None:
                continue
            values, state = _outcome(t, len(study.directions), n_constraints)
            if state is None:
                continue
            opt.add_trial(config, values, state)
        (suggestion,) = opt.ask()
        self.last_optimizer = opt
        return {name: codecs[name].to_external(v) for name, v in suggestion.config.items()}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if self._warn_independent_sampling and not param_distribution.single():
            complete = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if complete:
                _logger.warning(
                    f"The parameter '{param_name}' in trial#{trial.number} is sampled "
                    f"independently by {type(self._independent_sampler).__name__} instead of "
                    "MoboSampler (it is outside the search space shared by every complete trial)."
                )
        return self._independent_sampler.sample_independent(
            study, trial, param_name, param_distribution
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self._constraints_func is not None:
            from optuna.samplers._base import _process_constraints_after_trial

            _process_constraints_after_trial(self._constraints_func, study, trial, state)
        self._independent_sampler.after_trial(study, trial, state, values)


# ---------------------------------------------------------------------- helpers
def _zero(config: dict) -> float:
    return 0.0


def _fresh_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def _all_trials(study: optuna.Study) -> list[FrozenTrial]:
    try:
        return study._get_trials(deepcopy=False, use_cache=True)
    except (AttributeError, TypeError):  # a future Optuna without the private fast path
        return study.get_trials(deepcopy=False)


def _config_of(
    t: FrozenTrial, search_space: dict[str, BaseDistribution], codecs: dict[str, _Codec]
) -> dict | None:
    """The internal config of ``t``, or ``None`` when its params do not cover the space (a
    running trial still sampling, or a trial from another space)."""
    config = {}
    for name, dist in search_space.items():
        if name not in t.params or t.distributions.get(name) != dist:
            return None
        config[name] = codecs[name].to_internal(t.params[name])
    return config


def _constraints_of(t: FrozenTrial) -> list[float] | None:
    raw = t.system_attrs.get(_CONSTRAINTS_KEY)
    if raw is not None:
        return [float(c) for c in raw]
    as_dict = getattr(t, "constraints", None)  # Optuna >= 5: also individually stored keys
    if isinstance(as_dict, dict) and as_dict:
        return [float(v) for v in as_dict.values()]
    return None


def _outcome(t: FrozenTrial, n_obj: int, n_con: int) -> tuple[dict | None, str | None]:
    """``(values, state)`` to register ``t`` with, or ``(None, None)`` to leave it out."""
    if t.state == TrialState.COMPLETE:
        if t.values is None or len(t.values) != n_obj:
            return None, "failed"
        values = {f"value_{i}": float(v) for i, v in enumerate(t.values)}
        if n_con:
            con = _constraints_of(t)
            if con is None or len(con) != n_con:
                return None, "failed"
            values.update({f"constraint_{j}": c for j, c in enumerate(con)})
        return values, "complete"
    if t.state == TrialState.FAIL:
        return None, "failed"
    if t.state == TrialState.PRUNED:
        if n_obj == 1 and t.intermediate_values:
            last = t.intermediate_values[max(t.intermediate_values)]
            if math.isfinite(last):
                return {"value_0": float(last)}, "pruned"
        return None, "pruned"
    if t.state == TrialState.RUNNING:
        return None, "running"
    return None, None  # WAITING: enqueued, not started
