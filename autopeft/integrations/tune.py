"""autopeft's optimisers inside Ray Tune: :class:`MoboSearcher`, :class:`MOASHAScheduler` and
:class:`MOPBTScheduler` / :class:`PBTScheduler`.

>>> from ray import tune
>>> from autopeft.integrations.tune import MoboSearcher, MOASHAScheduler
>>> tuner = tune.Tuner(
...     trainable,
...     param_space={"lr": tune.loguniform(1e-5, 1e-2), "rank": tune.choice([4, 8, 16])},
...     tune_config=tune.TuneConfig(
...         search_alg=MoboSearcher(metric=["acc", "params"], mode=["max", "min"], seed=0),
...         scheduler=MOASHAScheduler(metric=["acc", "params"], mode=["max", "min"], max_t=9),
...         num_samples=20,
...     ),
... )

* :class:`MoboSearcher` — a Tune :class:`~ray.tune.search.Searcher` around any autopeft
  optimiser (default ``mobo``), multi-objective with ``metric=[...]`` and ``mode=[...]``. The
  space is an autopeft :class:`~autopeft.space.SearchSpace` (suggestions are its flat configs)
  or Tune's ``param_space`` (``tune.uniform``, ``loguniform``, ``quniform``, ``randint``,
  ``lograndint``, ``qrandint``, ``choice``; nested dicts allowed). Each Tune domain becomes an
  Optuna distribution and then an autopeft parameter, exactly as
  :class:`~autopeft.integrations.optuna.MoboSampler` maps them (quantised values stay on their
  grid); ``tune.randn``, ``sample_from`` and ``grid_search`` are refused, naming the key.
* :class:`MOASHAScheduler` — a Tune :class:`~ray.tune.schedulers.TrialScheduler` that takes
  the stop decisions of autopeft's MO-ASHA (``early_stopping={"kind": "moasha"}``; ASHA for a
  single metric) on every result: rungs at ``grace_period * reduction_factor ** k`` below
  ``max_t``, counted in ``time_attr``; a trial at or past ``max_t`` is stopped as finished (as
  Tune's ASHA does), never as pruned.

* :class:`MOPBTScheduler` (``mopbt``) and :class:`PBTScheduler` (``pbt``) — Tune's
  ``PopulationBasedTraining`` (checkpoint transfer on exploit) with autopeft's ranking and
  explore; defined in :mod:`autopeft.integrations.tune_pbt`, re-exported here.

Needs the ``ray`` extra (``pip install 'autopeft[ray]'``); importing this module without Ray
raises an ImportError that says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import Searcher
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "autopeft.integrations.tune needs Ray Tune: pip install 'autopeft[ray]'"
    ) from exc

from autopeft.errors import InvalidConfig
from autopeft.integrations.tune_pbt import MOPBTScheduler, PBTScheduler, tune_objectives
from autopeft.optim import create_optimizer
from autopeft.space import SearchSpace

__all__ = ["MOASHAScheduler", "MOPBTScheduler", "MoboSearcher", "PBTScheduler", "space_from_tune"]

_PAD = "_constant"  # second objective of a single-objective mobo search (always 0)


def _values(result: Mapping | None, names: Sequence[str]) -> dict | None:
    """The finite values of ``names`` in ``result``, or ``None`` when one is missing."""
    if not result:
        return None
    out = {}
    for name in names:
        v = result.get(name)
        if v is None or isinstance(v, (bool, str)):
            return None
        try:
            v = float(v)  # numbers and numpy scalars
        except (TypeError, ValueError):
            return None
        if not math.isfinite(v):
            return None
        out[name] = v
    return out


def space_from_tune(param_space: Mapping) -> tuple[SearchSpace, dict]:
    """An autopeft space over the Tune domains of ``param_space`` (keys of nested dicts joined
    with ``/``) and the codecs that map its values back (see the module docstring)."""
    import optuna.distributions as D
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Quantized, Uniform
    from ray.tune.search.variant_generator import parse_spec_vars
    from ray.tune.utils.util import flatten_dict

    from autopeft.integrations.optuna import space_from_distributions

    _, domain_vars, grid_vars = parse_spec_vars(dict(param_space))
    if grid_vars:
        raise InvalidConfig(
            "grid_search is not supported by MoboSearcher", "/".join(grid_vars[0][0])
        )
    flat = flatten_dict(dict(param_space), prevent_delimiter=True)
    _, domain_vars, _ = parse_spec_vars(flat)
    dists = {}
    for path, domain in domain_vars:
        key = "/".join(path)
        sampler = domain.get_sampler()
        q = None
        if isinstance(sampler, Quantized):
            q, sampler = sampler.q, sampler.sampler
        log = isinstance(sampler, LogUniform)
        if isinstance(domain, Float) and isinstance(sampler, (Uniform, LogUniform)):
            step = None if log or q is None else q
            dists[key] = D.FloatDistribution(domain.lower, domain.upper, log=log, step=step)
        elif isinstance(domain, Integer) and isinstance(sampler, (Uniform, LogUniform)):
            # Tune: randint's upper bound is exclusive, qrandint's inclusive
            high = domain.upper if q else domain.upper - 1
            dists[key] = D.IntDistribution(domain.lower, high, log=log, step=1 if log else q or 1)
        elif isinstance(domain, Categorical):
            dists[key] = D.CategoricalDistribution(list(domain.categories))
        else:
            raise InvalidConfig(
                f"cannot map {domain.domain_str} ({type(sampler).__name__}) to an autopeft "
                "parameter; use uniform, loguniform, quniform, randint, lograndint, qrandint "
                "or choice",
                key,
            )
    return space_from_distributions(dists)


class MoboSearcher(Searcher):
    """An autopeft optimiser (default ``mobo``) as a Tune searcher.

    Args:
        space: an autopeft :class:`SearchSpace`, or a Tune param dict; ``None`` takes
            ``param_space`` from the Tuner.
        metric, mode: a metric name and ``"min"``/``"max"``, or lists of them (multi-objective).
            ``None`` takes them from ``TuneConfig``.
        seed: the optimiser's seed.
        optimizer: an autopeft optimiser name (``mobo``, ``sobol``, ``random``, ``tpe``, ...).
        **options: options of that optimiser (e.g. ``n_initial``, ``reference_point``).

    Each :meth:`suggest` asks the optimiser for one config; :meth:`on_trial_complete` tells it
    the trial's last result: complete when every metric is present and finite (failed
    otherwise, and on errors). ``optimizer`` is the autopeft optimiser (its ``trials`` hold
    what it was told). With ``mobo`` and a single metric a constant second objective is added
    (mobo needs two; hypervolume improvement is then improvement of the metric).
    """

    def __init__(
        self,
        space: SearchSpace | Mapping | None = None,
        metric: str | Sequence[str] | None = None,
        mode: str | Sequence[str] | None = None,
        *,
        seed: int = 0,
        optimizer: str = "mobo",
        **options: Any,
    ):
        if isinstance(metric, tuple):
            metric = list(metric)
        if isinstance(mode, tuple):
            mode = list(mode)
        super().__init__(metric=metric, mode=mode)
        self._seed = seed
        self._name = optimizer
        self._options = dict(options)
        self._space: SearchSpace | None = None
        self._codecs: dict | None = None
        if space is not None:
            self._set_space(space)
        self._ids: dict[str, int] = {}
        self.optimizer = None

    def _set_space(self, space) -> None:
        if isinstance(space, SearchSpace):
            self._space, self._codecs = space, None
        else:
            self._space, self._codecs = space_from_tune(space)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if self.optimizer is not None:
            return False
        if self._space is not None and config:
            from ray.tune.search.variant_generator import _has_unresolved_values

            if _has_unresolved_values(config):
                return False  # two search spaces: Tune raises its own error
        if metric is not None and self._metric is None:
            self._metric = metric
        if mode is not None and self._mode is None:
            self._mode = mode
        if self._space is None and config:
            self._set_space(config)
        return True

    def _ensure_optimizer(self):
        if self.optimizer is None:
            if self._space is None or not self._metric or not self._mode:
                raise RuntimeError(
                    "MoboSearcher needs a search space, metric and mode: pass them to the "
                    "searcher or set param_space and TuneConfig(metric=..., mode=...)"
                )
            objectives = tune_objectives(self._metric, self._mode)
            options = dict(self._options)
            if self._name == "mobo" and len(objectives) == 1:
                objectives.append((_PAD, "minimize"))
                options["known_objectives"] = {
                    **(options.get("known_objectives") or {}),
                    _PAD: _zero,
                }
            self.optimizer = create_optimizer(
                self._name, self._space, objectives, seed=self._seed, **options
            )
        return self.optimizer

    @property
    def _metric_names(self) -> list[str]:
        return [self._metric] if isinstance(self._metric, str) else list(self._metric)

    def suggest(self, trial_id: str) -> dict | None:
        opt = self._ensure_optimizer()
        (s,) = opt.ask()
        self._ids[trial_id] = s.id
        if self._codecs is None:
            return dict(s.config)
        from ray.tune.utils.util import unflatten_dict

        flat = {key: self._codecs[key].to_external(v) for key, v in s.config.items()}
        return unflatten_dict(flat)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id not in self._ids or self.optimizer is None:
            return
        id = self._ids.pop(trial_id)
        values = None if error else _values(result, self._metric_names)
        if values is None:
            self.optimizer.tell(id, None, "failed")
        else:
            self.optimizer.tell(id, values, "complete")


def _zero(config: dict) -> float:
    return 0.0


class MOASHAScheduler(FIFOScheduler):
    """Multi-objective ASHA (autopeft's ``moasha`` early stopping) as a Tune scheduler.

    Args:
        metric, mode: a metric and ``"min"``/``"max"``, or lists (multi-objective; one metric
            is plain ASHA). ``None`` takes them from ``TuneConfig``.
        time_attr: the result key that counts progress (an integer step).
        grace_period: the first rung (``min_step``); reduction_factor: keep the best
            ``1 / reduction_factor`` at each rung (non-dominated sorting + crowding distance;
            with ``keep_front`` a rung's first non-dominated front always continues).
        max_t: the last step: rungs are below it, and a trial reaching it is stopped as done.

    ``stopped`` maps each early-stopped Tune trial id to the step it was stopped at;
    ``optimizer`` is the autopeft optimiser whose ``report`` takes the decisions (its trials
    end ``"pruned"`` when stopped early, ``"complete"`` otherwise).
    """

    def __init__(
        self,
        metric: str | Sequence[str] | None = None,
        mode: str | Sequence[str] | None = None,
        *,
        time_attr: str = "training_iteration",
        grace_period: int = 1,
        reduction_factor: int = 3,
        max_t: int | None = None,
        keep_front: bool = True,
    ):
        super().__init__()
        self._metric = list(metric) if isinstance(metric, (list, tuple)) else metric
        self._mode = list(mode) if isinstance(mode, (list, tuple)) else mode
        self._time_attr = time_attr
        self._stopping = {
            "min_step": grace_period,
            "reduction_factor": reduction_factor,
            "max_step": max_t,
            "keep_front": keep_front,
        }
        self._max_t = max_t
        self._ids: dict[str, int] = {}
        self.stopped: dict[str, int] = {}
        self.optimizer = None
        if metric is not None and mode is not None:
            self._build()

    def _build(self):
        objectives = tune_objectives(self._metric, self._mode)
        kind = "moasha" if len(objectives) > 1 else "asha"
        self.optimizer = create_optimizer(
            "random",
            SearchSpace([], {}),  # trials are only registered (never asked): no parameters
            objectives,
            early_stopping={"kind": kind, **self._stopping},
        )

    @property
    def _metric_names(self) -> list[str]:
        return [self._metric] if isinstance(self._metric, str) else list(self._metric)

    @property
    def metric(self) -> str | None:
        """The first metric (Tune checks that results carry it; it expects one name)."""
        return self._metric_names[0] if self._metric else None

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self.optimizer is not None:
            return metric is None and mode is None
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        if self._metric is None or self._mode is None:
            return False
        self._build()
        return True

    def _id(self, trial) -> int | None:
        if self.optimizer is None:
            raise RuntimeError("MOASHAScheduler needs metric and mode")
        if trial.trial_id not in self._ids:
            self._ids[trial.trial_id] = self.optimizer.add_trial({}, state="running").id
        return self._ids[trial.trial_id]

    def _running(self, id: int) -> bool:
        return self.optimizer.trials[id].state == "running"

    def on_trial_add(self, tune_controller, trial):
        self._id(trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        id = self._id(trial)
        values = _values(result, self._metric_names)
        step = result.get(self._time_attr)
        if values is None or step is None or not self._running(id):
            return TrialScheduler.CONTINUE
        step = int(step)
        if self.optimizer.report(id, step, values) == "stop":
            self.stopped[trial.trial_id] = step
            self.optimizer.tell(id, values, "pruned")
            return TrialScheduler.STOP
        if self._max_t is not None and step >= self._max_t:
            return TrialScheduler.STOP  # budget reached: done, not pruned
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict):
        id = self._id(trial)
        if self._running(id):
            values = _values(result, self._metric_names)
            self.optimizer.tell(id, values, "complete" if values else "failed")

    def on_trial_error(self, tune_controller, trial):
        id = self._id(trial)
        if self._running(id):
            self.optimizer.tell(id, None, "failed")

    def on_trial_remove(self, tune_controller, trial):
        id = self._id(trial)
        if self._running(id):
            self.optimizer.tell(id, None, "pruned")

    def debug_string(self) -> str:
        return f"Using MO-ASHA: {len(self.stopped)} trials stopped early."
