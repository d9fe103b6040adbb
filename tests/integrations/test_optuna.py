"""MoboSampler on real Optuna studies (in-memory and SQLite storages): search quality against
RandomSampler, and the contract of an Optuna sampler (values inside their distributions, on
the step grid, categorical choices from the list, reproducible by seed, enqueued trials,
failed and pruned trials, constraints, dynamic spaces)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from autopeft.integrations.optuna import MoboSampler, space_from_distributions
from autopeft.optim import pareto

optuna.logging.set_verbosity(optuna.logging.ERROR)

# cheaper acquisition settings: the tests check behaviour, not the last bit of quality
FAST = {"num_restarts": 2, "raw_samples": 64, "fit_maxiter": 40, "mc_samples": 32}


def zdt1(trial):
    x1 = trial.suggest_float("x1", 0.0, 1.0)
    x2 = trial.suggest_float("x2", 0.0, 1.0)
    g = 1.0 + 9.0 * x2
    return x1, g * (1.0 - math.sqrt(x1 / g))


def _hv(study, ref):
    Y = np.array([t.values for t in study.trials if t.state == TrialState.COMPLETE])
    return pareto.hypervolume(pareto.to_minimization(Y, ["minimize", "minimize"]), ref)


def mixed(trial):
    """Every distribution kind: categorical of mixed types, int (log, step), float (log, step)."""
    c = trial.suggest_categorical("c", [None, True, "a", 2.5])
    n = trial.suggest_int("n", 1, 64, log=True)
    k = trial.suggest_int("k", 2, 20, step=3)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    q = trial.suggest_float("q", 0.0, 1.0, step=0.1)
    bonus = {None: 0.3, True: 0.0, "a": 0.1, 2.5: 0.2}[c]
    return (math.log10(lr) + 3) ** 2 + (q - 0.4) ** 2 + abs(math.log2(n) - 3) / 6 + k / 40 + bonus


def _check_in_distributions(study):
    for t in study.trials:
        for name, value in t.params.items():
            dist = t.distributions[name]
            assert dist._contains(dist.to_internal_repr(value)), (name, value, dist)
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                assert any(
                    value is c or (value == c and type(value) is type(c)) for c in dist.choices
                )
            elif dist.step is not None:
                k = (value - dist.low) / dist.step
                assert abs(k - round(k)) < 1e-8, (name, value)
            if isinstance(dist, optuna.distributions.IntDistribution):
                assert isinstance(value, int)


def test_mobo_beats_random_on_zdt1():
    """25 trials of a 2-objective ZDT1 (2-D): hypervolume of MoboSampler > RandomSampler, same
    seed and budget (measured: 11.72 vs 10.47 with reference point (1.1, 11))."""
    ref = [1.1, 11.0]
    results = {}
    for name, sampler in [
        ("mobo", MoboSampler(seed=0, **FAST)),
        ("random", optuna.samplers.RandomSampler(seed=0)),
    ]:
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        study.optimize(zdt1, n_trials=25)
        assert len(study.trials) == 25
        results[name] = _hv(study, ref)
    assert results["mobo"] > results["random"], results
    assert results["mobo"] > 11.0, results  # a good front: the true front's HV is about 11.6


def test_sqlite_storage_and_resume(tmp_path):
    """An RDB (SQLite) study, optimised, reloaded with a fresh sampler and continued; maximise
    and minimise mixed (directions come from the study)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = optuna.storages.RDBStorage(url)

    def objective(trial):
        x = trial.suggest_float("x", -2.0, 2.0)
        y = trial.suggest_int("y", 0, 10)
        return -((x - 0.5) ** 2) - y / 10, abs(x) + y

    study = optuna.create_study(
        study_name="s",
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=MoboSampler(seed=1, n_initial=3, **FAST),
    )
    study.optimize(objective, n_trials=6, n_jobs=1)
    again = optuna.load_study(
        study_name="s", storage=url, sampler=MoboSampler(seed=1, n_initial=3, **FAST)
    )
    again.optimize(objective, n_trials=2, n_jobs=1)
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    opt = again.sampler.last_optimizer
    # the latest sample saw all 7 earlier trials, complete, with the study's directions
    assert [t.state for t in opt.trials[:7]] == ["complete"] * 7
    assert opt.directions == ["maximize", "minimize"]
    _check_in_distributions(again)


def test_single_objective_converges():
    def objective(trial):
        x = trial.suggest_float("x", -3.0, 3.0)
        y = trial.suggest_float("y", -3.0, 3.0)
        return (x - 0.3) ** 2 + (y + 0.2) ** 2

    study = optuna.create_study(sampler=MoboSampler(seed=0, n_initial=4, **FAST))
    study.optimize(objective, n_trials=14)
    initial_best = min(t.value for t in study.trials[:4])
    assert study.best_value < initial_best
    assert study.best_value < 0.05, study.best_value


def test_every_distribution_kind_stays_in_bounds_and_on_grid():
    sampler = MoboSampler(seed=3, n_initial=3, **FAST)
    study = optuna.create_study(sampler=sampler)
    study.optimize(mixed, n_trials=8)
    _check_in_distributions(study)
    opt = sampler.last_optimizer
    # the last sample's optimiser holds the 7 trials before it, complete, and its own ask
    assert [t.state for t in opt.trials] == ["complete"] * 7 + ["running"]
    assert {p.name for p in opt.space.params} == {"c", "n", "k", "lr", "q"}


def test_space_mapping():
    D = optuna.distributions
    space, codecs = space_from_distributions(
        {
            "f": D.FloatDistribution(0.0, 1.0, step=0.25),
            "i": D.IntDistribution(2, 20, step=3),
            "l": D.IntDistribution(1, 64, log=True),
            "c": D.CategoricalDistribution(["x", None, 3]),
        }
    )
    assert (space["f"].kind, space["f"].low, space["f"].high) == ("int", 0, 4)
    assert (space["i"].kind, space["i"].high) == ("int", 6)
    assert space["l"].kind == "int" and space["l"].log
    assert space["c"].kind == "categorical" and space["c"].choices == (0, 1, 2)
    assert codecs["f"].to_external(3) == 0.75 and codecs["f"].to_internal(0.75) == 3
    assert codecs["i"].to_external(6) == 20 and codecs["i"].to_internal(5) == 1
    assert codecs["c"].to_external(1) is None and codecs["c"].to_internal(3) == 2


def test_same_seed_same_params_other_seed_differs():
    def run(seed):
        study = optuna.create_study(sampler=MoboSampler(seed=seed, n_initial=3, **FAST))
        study.optimize(mixed, n_trials=5)
        return [t.params for t in study.trials]

    first = run(7)
    assert run(7) == first
    assert run(8) != first


def test_enqueued_trials_are_evaluated_and_told():
    sampler = MoboSampler(seed=0, n_initial=2, **FAST)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.enqueue_trial({"x1": 0.5, "x2": 0.0})
    study.optimize(zdt1, n_trials=3)
    study.enqueue_trial({"x1": 0.25, "x2": 0.0})  # enqueued while the joint space is in use
    study.optimize(zdt1, n_trials=2)
    assert study.trials[0].params == {"x1": 0.5, "x2": 0.0}
    assert study.trials[3].params == {"x1": 0.25, "x2": 0.0}
    # the optimiser of the last sample registered trial 3 with the enqueued params, not its own
    told = sampler.last_optimizer.trials[3]
    assert told.state == "complete" and told.config == {"x1": 0.25, "x2": 0.0}
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_failed_and_pruned_trials_are_handled():
    sampler = MoboSampler(seed=0, n_initial=3, **FAST)
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 1:
            raise ValueError("boom")
        if trial.number == 2:
            return float("nan")  # Optuna records a failed trial
        trial.report(x, 0)
        if trial.number == 3:
            raise optuna.TrialPruned()
        return (x - 0.2) ** 2

    study.optimize(objective, n_trials=7, catch=(ValueError,))
    states = [t.state for t in study.trials]
    assert states[1:4] == [TrialState.FAIL, TrialState.FAIL, TrialState.PRUNED]
    assert states[4:] == [TrialState.COMPLETE] * 3
    told = sampler.last_optimizer.trials
    assert [t.state for t in told[1:4]] == ["failed", "failed", "pruned"]
    assert told[3].values["value_0"] == study.trials[3].intermediate_values[0]


def test_constraints_are_stored_and_modelled():
    def constraints(trial):
        return (trial.params["x1"] - 0.5,)  # feasible when x1 <= 0.5

    sampler = MoboSampler(seed=0, n_initial=4, constraints_func=constraints, **FAST)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(zdt1, n_trials=10)
    for t in study.trials:
        assert t.system_attrs["constraints"] == (t.params["x1"] - 0.5,)
    opt = sampler.last_optimizer
    assert opt.constraints == [("constraint_0", "<=", 0.0)]
    assert all("constraint_0" in t.values for t in opt.trials if t.state == "complete")
    feasible_after_design = sum(t.params["x1"] <= 0.5 for t in study.trials[4:])
    assert feasible_after_design >= 4, [t.params for t in study.trials]


def test_dynamic_space_falls_back_to_the_independent_sampler():
    sampler = MoboSampler(seed=0, n_initial=2, **FAST)
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        extra = trial.suggest_int("extra", 0, 3) if trial.number % 2 else 0  # odd trials only
        return x + extra

    study.optimize(objective, n_trials=6)
    _check_in_distributions(study)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert [p.name for p in sampler.last_optimizer.space.params] == ["x"]
    assert [("extra" in t.params) for t in study.trials] == [False, True] * 3


def test_reseed_rng_draws_a_new_seed():
    sampler = MoboSampler(seed=0)
    sampler.reseed_rng()
    assert sampler._seed != 0


def test_unknown_mobo_option_is_named():
    study = optuna.create_study(sampler=MoboSampler(seed=0, no_such_option=1))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # first trial: independent
    with pytest.raises(ValueError, match="no_such_option"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
