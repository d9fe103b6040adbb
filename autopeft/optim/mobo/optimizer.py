"""``MOBOOptimizer``: the ask/tell optimiser over the GP (:mod:`.gp`), acquisition (:mod:`.acqf`)
and acquisition search (:mod:`.optim_mixed`) of ``mobo``."""

from __future__ import annotations

import importlib.util
import math

import numpy as np

from autopeft.errors import InvalidConfig
from autopeft.optim import pareto as _pareto
from autopeft.optim._simple import sobol_configs
from autopeft.optim.base import BaseOptimizer, config_key, derive_seed
from autopeft.optim.mobo import acqf as _acqf
from autopeft.optim.mobo import gp as _gp
from autopeft.optim.mobo.optim_mixed import (
    lengthscales,
    optimize_continuous,
    optimize_discrete,
    trust_region,
)
from autopeft.optim.mobo.search_space import Codec

_POSITIVE_INTS = (
    "max_train",
    "mc_samples",
    "pool_size",
    "local_search_starts",
    "num_restarts",
    "raw_samples",
)


class MOBOOptimizer(BaseOptimizer):
    """Multi-objective Bayesian optimisation: GP surrogates and qLogNEHVI (BoTorch).

    * Trials ``0 .. n_initial - 1`` (default ``clip(2 * (p + 1), 6, 20)`` for ``p`` searchable
      parameters) come from :func:`~autopeft.optim._simple.sobol_configs`; so does every
      trial while fewer than two trials have finite modelled objectives, or when every
      objective is known.
    * Then each suggestion fits one GP output per objective not in ``known_objectives`` and
      per constraint on a metric that is not known (``model``: ``"gp"`` with
      ``lengthscale_prior``, or ``"saas"``), on complete trials and, with ``use_pruned``, pruned
      ones at the values they were stopped with; at most ``max_train`` trials (the best half by
      :func:`~autopeft.optim.pareto.rank_order`, the rest a seeded sample).
    * The acquisition's reference point is the ``reference_point`` option, else
      :func:`~autopeft.optim.pareto.acquisition_reference_point` of ``ref_rule`` over the
      feasible trials; its baseline is the best ``max_baseline`` training points by rank;
      running trials and earlier members of the batch are pending. With ``far_streak``, a
      ``far`` turn whose trial set a new best value of some objective is followed by another
      ``far`` turn (:meth:`_far_streak`), so the front keeps extending towards that extreme.
    * Purely continuous spaces without known objectives or known constraints use L-BFGS-B
      from ``num_restarts`` starts plus up to ``pareto_starts`` Pareto points; others the
      candidate pool (``pool_size``) and local search (``local_search_starts`` x
      ``local_search_steps``).
    * ``trust_region`` (continuous spaces): each suggestion searches a box around one Pareto
      point drawn by the trial number, of half-width ``trust_region_size`` scaled per dimension
      by the GP's lengthscales (:func:`~autopeft.optim.mobo.optim_mixed.trust_region`), as
      TuRBO / MORBO do, so the search exploits in many dimensions instead of chasing the
      variance of a GP that ~100 points cannot cover. ``true``: always; ``"alternate"``: odd
      suggestions; ``"stall"``: while the search stalls (none of the last ``STALL_TRIALS``
      model-chosen trials is on the front of every trial: the global search keeps choosing
      points the front already dominates), global again once one of them reaches the front;
      ``"auto"``: ``true`` with more than ``TRUST_REGION_MIN_DIM`` parameters, else
      ``"stall"``.

    Every random draw is seeded by ``(seed, trial number)``, so suggestions depend only on the
    trial numbers and the told data. ``warm_start_hypers`` starts each GP fit from the previous
    fit's hyper-parameters (then the suggestions also depend on the order of the calls).
    ``ask`` runs torch with ``torch_threads`` threads and restores the caller's setting.

    ``last_info``: diagnostics of the last suggestion — ``n_train``, ``n_pruned`` (training
    trials, of them pruned), ``method``, ``fit_error`` (the GP fit failed and kept its initial
    hyper-parameters) or ``fallback`` (why the Sobol design was used after ``n_initial``).
    Measurements behind the defaults: ``docs/mobo.md``.
    """

    name = "mobo"
    REBUILDS_BY_ADD = True  # its state is a function of the trials told, by number
    OPTIONS = {
        "n_initial": None,
        "model": "gp",
        "max_train": 160,
        "mc_samples": 64,
        "pool_size": 512,
        "local_search_starts": 3,
        "local_search_steps": 3,
        "num_restarts": 4,
        "raw_samples": 256,
        "fit_maxiter": 75,
        "torch_threads": 1,
        "pareto_starts": 5,
        "lengthscale_prior": "auto",
        "max_baseline": 48,
        "ref_rule": "cycle",
        "far_streak": True,
        "warm_start_hypers": False,
        "use_pruned": True,
        "trust_region": "auto",
        "trust_region_size": 0.2,
    }
    TRUST_REGION_MIN_DIM = 6  # "auto" searches globally up to this many parameters, unless stalled
    STALL_TRIALS = 3  # "stall": this many model-chosen trials in a row off the front
    TRUST_REGION_MODES = ("auto", "alternate", "stall")

    def __init__(self, space, objectives, seed=0, **options):
        super().__init__(space, objectives, seed, **options)
        o = self.options
        _gp.check_priors(o["lengthscale_prior"])
        rules = o["ref_rule"] if isinstance(o["ref_rule"], (list, tuple)) else [o["ref_rule"]]
        for rule in rules:
            if rule not in _pareto.ACQUISITION_RULES and rule not in _pareto.RULE_TURNS:
                names = ", ".join(
                    repr(r) for r in (*_pareto.RULE_TURNS, *_pareto.ACQUISITION_RULES)
                )
                raise InvalidConfig(
                    f"must be one of {names} (or a list of them), got {rule!r}", "ref_rule"
                )
        if not isinstance(o["far_streak"], bool):
            raise InvalidConfig(f"must be true or false, got {o['far_streak']!r}", "far_streak")
        if o["model"] not in ("gp", "saas"):
            raise InvalidConfig(f"model must be 'gp' or 'saas', got {o['model']!r}", "model")
        if o["model"] == "saas" and not all(
            importlib.util.find_spec(m) for m in ("jax", "numpyro")
        ):
            raise InvalidConfig(
                "model 'saas' needs JAX and NumPyro (BoTorch's fully Bayesian models): "
                "pip install 'autopeft[saas]'",
                "model",
            )
        for key in _POSITIVE_INTS:
            if not isinstance(o[key], int) or o[key] < 1:
                raise InvalidConfig(f"must be a positive integer, got {o[key]!r}", key)
        if not isinstance(o["pareto_starts"], int) or o["pareto_starts"] < 0:
            raise InvalidConfig(
                f"must be a non-negative integer, got {o['pareto_starts']!r}", "pareto_starts"
            )
        if o["n_initial"] is None:
            o["n_initial"] = int(min(max(2 * (len(space.params) + 1), 6), 20))
        elif not isinstance(o["n_initial"], int) or o["n_initial"] < 1:
            raise InvalidConfig(f"must be a positive integer, got {o['n_initial']!r}", "n_initial")
        self._modelled = [k for k in self.objective_names if k not in self.known_objectives]
        self._known = [k for k in self.objective_names if k in self.known_objectives]
        # maximisation form (BoTorch's convention): user value times this sign
        self._max_sign = {
            k: -_pareto.minimization_sign(d) for k, d in zip(self.objective_names, self.directions)
        }
        self._modelled_constraints = [
            i for i, (m, _, _) in enumerate(self.constraints) if m not in self.known_objectives
        ]
        known_constraint = any(m in self.known_objectives for m, _, _ in self.constraints)
        self._continuous = (
            all(p.kind == "float" and not p.active_if for p in space.params)
            and not self._known
            and not known_constraint
        )
        self._trust_region = self._check_trust_region(space)
        self.last_info: dict = {}
        self._hypers: dict[str, dict] = {}  # per prior, the last fit's (warm_start_hypers)
        self._codec = Codec(space)

    def _check_trust_region(self, space) -> bool | str:
        o = self.options
        if o["trust_region"] not in self.TRUST_REGION_MODES and not isinstance(
            o["trust_region"], bool
        ):
            raise InvalidConfig(
                f"must be 'auto', 'alternate', 'stall', true or false, got {o['trust_region']!r}",
                "trust_region",
            )
        size = o["trust_region_size"]
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size <= 0.5:
            raise InvalidConfig(
                f"must be a number in (0, 0.5] (a half-width in the unit cube), got {size!r}",
                "trust_region_size",
            )
        if o["trust_region"] in (True, "alternate", "stall") and not self._continuous:
            raise InvalidConfig(
                "applies only to purely continuous spaces without known objectives or known "
                "constraints (other spaces use the candidate pool and local search)",
                "trust_region",
            )
        if o["trust_region"] == "auto":
            if not self._continuous:
                return False
            return True if space.dim > self.TRUST_REGION_MIN_DIM else "stall"
        if o["trust_region"] in ("alternate", "stall"):
            return o["trust_region"]
        return bool(o["trust_region"])

    def _in_region(self, number: int, stalled: bool = False) -> bool:
        """Whether suggestion ``number`` searches a trust region (``"alternate"``: odd ones;
        ``"stall"``: when ``stalled``, what :meth:`_stalled` says of the suggestion's data)."""
        if self._trust_region == "alternate":
            return number % 2 == 1
        if self._trust_region == "stall":
            return stalled
        return bool(self._trust_region)

    def _stalled(self, done) -> bool:
        """Whether none of the last ``STALL_TRIALS`` model-chosen trials of ``done`` (by id) is
        non-dominated among all of ``done``."""
        chosen = sorted((r for r in done if r.id >= self.options["n_initial"]), key=lambda r: r.id)
        recent = {r.id for r in chosen[-self.STALL_TRIALS :]}
        if len(recent) < self.STALL_TRIALS:
            return False
        front = _pareto.is_non_dominated(self._Y(done))
        return not any(done[i].id in recent for i in np.flatnonzero(front))

    def _suggest(self, n, first_number):
        states = ("complete", "pruned") if self.options["use_pruned"] else ("complete",)
        done = [
            r
            for r in self._records_in(*states)
            if r.values is not None
            and all(math.isfinite(r.values.get(k, float("nan"))) for k in self._modelled)
        ]
        if first_number < self.options["n_initial"] or len(done) < 2 or not self._modelled:
            if not self._modelled and first_number >= self.options["n_initial"]:
                self.last_info = {
                    "fallback": "every objective is known exactly: nothing to model, Sobol design"
                }
            configs = sobol_configs(self.space, self.seed, n, first_number)
            return [(c, None, None) for c in configs]
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(self.options["torch_threads"])
        try:
            with torch.random.fork_rng():
                torch.manual_seed(derive_seed(self.seed, first_number, "mobo") % (2**31))
                return [(c, None, None) for c in self._bo(done, n, first_number)]
        finally:
            torch.set_num_threads(threads)

    def _training_set(self, done, first_number):
        cap = self.options["max_train"]
        if len(done) <= cap:
            return done
        order = _pareto.rank_order(self._Y(done))
        best = [done[i] for i in order[: cap // 2]]
        rest = [done[i] for i in order[cap // 2 :]]
        rng = self.rng(first_number, "subsample")
        pick = rng.choice(len(rest), size=cap - len(best), replace=False)
        return best + [rest[i] for i in sorted(pick)]

    def _fit(self, X, Y, number=0):
        """The surrogate of ``Y (n, k)`` (maximisation form) at ``X (n, d)`` for suggestion
        ``number``."""
        if self.options["model"] == "saas":
            return _gp.fit_saas(X, Y)
        o = self.options
        prior = _gp.resolve_prior(o["lengthscale_prior"], number, self._continuous)
        start = self._hypers.get(prior) if o["warm_start_hypers"] else None
        model, error = _gp.fit_gp(X, Y, prior, o["fit_maxiter"], start)
        if error is not None:
            self.last_info["fit_error"] = error
        if o["warm_start_hypers"]:
            self._hypers[prior] = _gp.hyperparameters(model)
        return model

    def _acq_reference_point(self, Yf, number, ids=None):
        """Reference point ``(m,)`` (minimisation form) of the acquisition for suggestion
        ``number``, from the feasible trials' ``Yf (n, m)``; ``ids``: their trial numbers, for
        ``far_streak`` (:meth:`_far_streak`)."""
        if self.reference_point_min is not None:
            return np.asarray(self.reference_point_min, float)
        rule = _pareto.acquisition_rule_at(self.options["ref_rule"], number)
        if rule != "far" and ids is not None and self._far_streak(number, ids, Yf):
            rule = "far"
        self.last_info["ref_rule"] = rule
        return _pareto.ACQUISITION_RULES[rule](Yf)

    def _far_streak(self, number, ids, Y) -> bool:
        """Whether suggestion ``number`` continues a streak of ``far`` turns (``far_streak``),
        given the trial numbers ``ids (n,)`` and values ``Y (n, m)`` (minimisation form) of the
        feasible done trials: trial ``number - 1`` is one of them, model-chosen, took the
        ``far`` turn (by ``ref_rule`` or by this rule) and set a new best value of some
        objective over the trials numbered before it — the front reached further towards an
        objective's extreme, so the next suggestion rewards that again."""
        if not self.options["far_streak"]:
            return False
        ids = np.asarray(ids)
        k = number - 1
        while k >= self.options["n_initial"] and np.any(ids == k):
            before = ids < k
            if not before.any() or not np.any(Y[ids == k][0] < Y[before].min(axis=0)):
                return False
            if _pareto.acquisition_rule_at(self.options["ref_rule"], k) == "far":
                return True
            k -= 1  # trial k took the far turn only if it continued a streak itself
        return False

    def _bo(self, done, n, first_number):
        import torch

        o = self.options
        dtype = torch.double
        train = self._training_set(done, first_number)
        self.last_info = {
            "n_train": len(train),
            "n_pruned": sum(r.state == "pruned" for r in train),
        }
        X = torch.tensor(self._codec.encode([r.config for r in train]), dtype=dtype)
        cols = [[self._max_sign[k] * r.values[k] for r in train] for k in self._modelled]
        for i in self._modelled_constraints:
            cols.append([float(self.violation(r.values)[i]) for r in train])
        Y = torch.tensor(np.array(cols).T, dtype=dtype)
        model = self._fit(X, Y, first_number)
        known = None
        if self._known:
            known = _acqf.KnownObjectives(
                self.space,
                [self.known_objectives[k] for k in self._known],
                [self._max_sign[k] for k in self._known],
            )
        objective = _acqf.mc_objective(self.objective_names, self._modelled, self._known, known)
        constraints = _acqf.constraint_outputs(len(self._modelled), len(self._modelled_constraints))
        feasible = [r for r in done if self.is_feasible(r.values)] or done
        ref_min = self._acq_reference_point(
            self._Y(feasible), first_number, [r.id for r in feasible]
        )
        ref_max = (-torch.tensor(ref_min, dtype=dtype)).tolist()
        # baseline of the noisy Pareto front: the best `max_baseline` training points by
        # non-dominated rank (BoTorch's prune_baseline does this by MC, at ~1 s for 160 points)
        base_idx = _pareto.rank_order(self._Y(train))[: o["max_baseline"]]
        X_base = X[torch.as_tensor(np.sort(base_idx))]
        running = [r.config for r in self._records_in("running")]
        sampler_seed = derive_seed(self.seed, first_number, "qmc") % (2**31)

        def make_acqf(pending_configs):
            X_pending = None
            if pending_configs:
                X_pending = torch.tensor(self._codec.encode(pending_configs), dtype=dtype)
            return _acqf.log_nehvi(
                model,
                ref_max,
                X_base,
                objective,
                constraints,
                X_pending,
                o["mc_samples"],
                sampler_seed,
            )

        chosen: list[dict] = []
        if self._continuous:
            self.last_info["method"] = "optimize_acqf"
            ok = [i for i, r in enumerate(train) if self.is_feasible(r.values)] or list(
                range(len(train))
            )
            Yok = self._Y([train[i] for i in ok])
            front_X = X[
                torch.as_tensor([ok[i] for i in np.flatnonzero(_pareto.is_non_dominated(Yok))])
            ]
            stalled = self._trust_region == "stall" and self._stalled(done)
            regional = any(self._in_region(first_number + j, stalled) for j in range(n))
            ls = lengthscales(model, self.space.dim) if regional else None
            if regional:
                self.last_info["method"] = "optimize_acqf in a trust region"
            for j in range(n):
                chosen.append(
                    self._optimize_continuous(
                        make_acqf(running + chosen), front_X, first_number + j, ls, stalled
                    )
                )
            return chosen
        self.last_info["method"] = "pool+local search"
        front = [
            feasible[i].config
            for i in _pareto.rank_order(self._Y(feasible))[: max(4, o["pool_size"] // 40)]
        ]
        for j in range(n):
            number = first_number + j
            config = optimize_discrete(
                make_acqf(running + chosen),
                self.space,
                self._codec,
                self.rng(number, "pool"),
                front,
                self._seen | {config_key(c) for c in chosen},
                self.config_is_feasible,
                known,
                o["pool_size"],
                o["local_search_starts"],
                o["local_search_steps"],
            )
            chosen.append(self._random_config(number) if config is None else config)
        return chosen

    def _optimize_continuous(self, acqf, front_X, number, ls=None, stalled=False):
        """The config at the best point of :func:`optimize_continuous` for suggestion
        ``number``, starting also from rows of ``front_X (p, d)`` (encoded Pareto points); in a
        :func:`trust_region` (lengthscales ``ls``) around one of them when that is on
        (``stalled``: the ``"stall"`` mode's state for this suggestion's data)."""
        o = self.options
        region = None
        if self._in_region(number, stalled):
            rng = self.rng(number, "trust_region")
            region = trust_region(front_X, ls, rng, float(o["trust_region_size"]))
        x = optimize_continuous(
            acqf,
            self.space.dim,
            front_X,
            self.rng(number, "starts"),
            o["num_restarts"],
            o["raw_samples"],
            o["pareto_starts"],
            region,
        )
        return self.space.decode(x.numpy())
