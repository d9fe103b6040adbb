"""Constraints, warm starting across layer counts, and exactly known objectives."""

from __future__ import annotations

import math

import pytest

from autopeft import InvalidConfig
from autopeft.optim import create_optimizer
from autopeft.optim.warmstart import map_config
from autopeft.space import SearchSpace

from .conftest import FAST_OPTIONS, MIXED, lora_params, toy_values

OBJ = [("accuracy", "maximize"), ("params", "minimize")]


@pytest.mark.parametrize("name", ["random", "sobol", "tpe", "mobo"])
def test_known_constraint_is_never_violated_by_suggestions(name, mixed_space):
    opt = create_optimizer(
        name,
        mixed_space,
        OBJ,
        seed=0,
        constraints=[("params", "<=", 3000)],
        known_objectives={"params": lora_params},
        **FAST_OPTIONS.get(name, {}),
    )
    for _ in range(4):
        for s in opt.ask(2):
            assert lora_params(s.config) <= 3000
            opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})  # params computed
    assert all(t.values["params"] == lora_params(t.config) for t in opt.trials)


def test_pareto_excludes_infeasible_and_missing_constraint_metric_is_named(mixed_space):
    opt = create_optimizer("random", mixed_space, OBJ, constraints=[("memory", "<=", 1.0)])
    a, b = opt.ask(2)
    opt.tell(a.id, {"accuracy": 0.9, "params": 1.0, "memory": 2.0})  # best but infeasible
    opt.tell(b.id, {"accuracy": 0.5, "params": 5.0, "memory": 0.5})
    assert [t.id for t in opt.pareto()] == [b.id]
    (c,) = opt.ask()
    with pytest.raises(InvalidConfig, match="memory"):
        opt.tell(c.id, {"accuracy": 0.5, "params": 5.0})
    with pytest.raises(InvalidConfig, match="constraints"):
        create_optimizer("random", mixed_space, OBJ, constraints=[("memory", "~", 1.0)])


def test_mobo_models_an_unknown_constraint(mixed_space):
    opt = create_optimizer(
        "mobo",
        mixed_space,
        OBJ,
        seed=0,
        constraints=[("memory", "<=", 1.0)],
        known_objectives={"params": lora_params},
        **FAST_OPTIONS["mobo"],
    )
    for _ in range(3):
        for s in opt.ask(2):
            v = toy_values(s.config)
            opt.tell(s.id, {"accuracy": v["accuracy"], "memory": s.config["epochs"] / 2})
    assert len(opt.trials) == 6 and all(
        mixed_space.validate(t.config) == t.config for t in opt.trials
    )


def test_warm_start_maps_per_layer_values_by_relative_depth():
    target = SearchSpace.from_dict(MIXED, num_layers=12)
    source = SearchSpace.from_dict(MIXED, num_layers=3)
    config = source.validate(
        {
            "lr": 1e-3,
            "epochs": 2,
            "sched": "cosine",
            "dropout": 0.1,
            "layers.0": True,
            "layers.1": False,
            "layers.2": True,
            "lora.rank.0": 2,
            "lora.rank.2": 8,
        }
    )
    mapped = map_config(config, target)
    # layer i of 12 takes source layer round(i * 2 / 11)
    assert [mapped[f"layers.{i}"] for i in range(12)] == [True] * 3 + [False] * 6 + [True] * 3
    assert mapped["lora.rank.0"] == 2 and mapped["lora.rank.11"] == 8
    assert "lora.rank.5" not in mapped  # layer 5 is off
    back = map_config(mapped, source)
    assert back == config


def test_warm_start_configs_are_asked_first(mixed_space):
    other = SearchSpace.from_dict(MIXED, num_layers=6)
    warm = other.sample(3, seed=1)
    opt = create_optimizer("tpe", mixed_space, OBJ, seed=0, warm_start=warm)
    asked = opt.ask(4)
    assert [s.config for s in asked[:3]] == [map_config(c, mixed_space) for c in warm]
    with pytest.raises(InvalidConfig, match="warm_start"):
        create_optimizer("random", mixed_space, OBJ, warm_start=["not a config"])


def test_warm_start_snaps_to_the_nearest_valid_value():
    space = SearchSpace.from_dict(
        {
            "params": {
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2},
                "r": {"choices": [2, 4, 8]},
            }
        }
    )
    assert map_config({"lr": 1.0, "r": 5, "extra": 1}, space) == {"lr": 1e-2, "r": 4}


def test_mobo_does_not_model_a_known_objective(mixed_space):
    calls = []

    def count(config):
        calls.append(1)
        return lora_params(config)

    opt = create_optimizer(
        "mobo", mixed_space, OBJ, seed=0, known_objectives={"params": count}, **FAST_OPTIONS["mobo"]
    )
    for _ in range(3):
        for s in opt.ask(2):
            opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})
    n_told = len(calls)
    opt.ask(1)
    assert len(calls) > n_told  # candidates were scored with the exact function
    assert opt._modelled == ["accuracy"]


def test_mobo_batch_encoder_matches_space_encode(mixed_space):
    import numpy as np

    from autopeft.optim.mobo.search_space import Codec

    configs = [mixed_space.validate(c) for c in mixed_space.sample(50, seed=3)]
    expected = np.stack([mixed_space.encode(c) for c in configs])
    assert np.array_equal(Codec(mixed_space).encode(configs), expected)


@pytest.mark.slow
def test_mobo_saas_model_runs(mixed_space):
    opt = create_optimizer(
        "mobo",
        mixed_space,
        OBJ,
        seed=0,
        model="saas",
        known_objectives={"params": lora_params},
        **FAST_OPTIONS["mobo"],
    )
    for _ in range(3):
        for s in opt.ask(2):
            opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})
    assert len(opt.trials) == 6


def test_mobo_option_values_are_checked(mixed_space):
    with pytest.raises(InvalidConfig, match="ref_rule"):
        create_optimizer("mobo", mixed_space, OBJ, ref_rule="nadir")
    with pytest.raises(InvalidConfig, match="model"):
        create_optimizer("mobo", mixed_space, OBJ, model="forest")
    with pytest.raises(InvalidConfig, match="reference_point"):
        create_optimizer("mobo", mixed_space, OBJ, reference_point=[1.0])


@pytest.mark.parametrize("rule", ["expanding", "front", "observed", "far", "alternate", "cycle"])
def test_mobo_reference_rules_give_valid_suggestions(rule, mixed_space):
    opt = create_optimizer(
        "mobo",
        mixed_space,
        OBJ,
        seed=0,
        ref_rule=rule,
        known_objectives={"params": lora_params},
        **FAST_OPTIONS["mobo"],
    )
    for _ in range(3):
        for s in opt.ask(2):
            assert mixed_space.validate(s.config) == s.config
            opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})


def test_mobo_reference_and_prior_options_are_checked(mixed_space):
    for bad in ("lognormal:", "lognormal:-1", "lognormal:x", "wide"):
        with pytest.raises(InvalidConfig, match="lengthscale_prior"):
            create_optimizer("mobo", mixed_space, OBJ, lengthscale_prior=bad)
    with pytest.raises(InvalidConfig, match="lengthscale_prior"):
        create_optimizer("mobo", mixed_space, OBJ, lengthscale_prior=["gamma", "narrow"])
    with pytest.raises(InvalidConfig, match="ref_rule"):
        create_optimizer("mobo", mixed_space, OBJ, ref_rule=["expanding", "nadir"])
    with pytest.raises(InvalidConfig, match="pareto_starts"):
        create_optimizer("mobo", mixed_space, OBJ, pareto_starts=-1)
    create_optimizer(
        "mobo",
        mixed_space,
        OBJ,
        lengthscale_prior=["gamma", "lognormal:0.5", "dim_scaled"],
        ref_rule=["front", "observed"],
    )


def test_mobo_auto_prior_uses_botorch_default_on_mixed_spaces(mixed_space):
    import torch

    opt = create_optimizer(
        "mobo", mixed_space, OBJ, **FAST_OPTIONS["mobo"]
    )  # lengthscale_prior="auto"
    X = torch.rand(
        8, mixed_space.dim, dtype=torch.double, generator=torch.Generator().manual_seed(0)
    )
    model = opt._fit(X, torch.stack([X.sum(-1), X[:, 0]], -1))
    median = float(model.covar_module.lengthscale_prior.icdf(torch.tensor(0.5)))
    assert median == pytest.approx(math.exp(math.sqrt(2)) * math.sqrt(mixed_space.dim), rel=1e-4)


def test_mobo_reference_rules_take_turns(mixed_space):
    import numpy as np

    # minimisation form: a front of two points and one dominated point far out
    Y = np.array([[0.0, 1.0], [1.0, 0.0], [9.0, 9.0]])
    expanding, observed, far = [1.9, 1.9], [9.9, 9.9], [2.0, 2.0]
    # expanding: front nadir (1, 1) + 10% of the observed range (9); observed: worst observed (9, 9)
    # + 10% of the range; far: front nadir + the front's whole range (1)
    opt = create_optimizer("mobo", mixed_space, OBJ)  # default ref_rule: "cycle"
    assert opt.options["ref_rule"] == "cycle"
    got = [opt._acq_reference_point(Y, n).tolist() for n in range(6, 12)]
    assert got == [pytest.approx(r) for r in (expanding, expanding, far) * 2]
    alt = create_optimizer("mobo", mixed_space, OBJ, ref_rule="alternate")
    assert [alt._acq_reference_point(Y, n).tolist() for n in (4, 5)] == [
        pytest.approx(expanding),
        pytest.approx(observed),
    ]
    listed = create_optimizer("mobo", mixed_space, OBJ, ref_rule=["far", "observed"])
    assert [listed._acq_reference_point(Y, n).tolist() for n in (0, 1, 2)] == [
        pytest.approx(r) for r in (far, observed, far)
    ]
    given = create_optimizer("mobo", mixed_space, OBJ, reference_point=[0.1, 5.0])
    assert given._acq_reference_point(Y, 5).tolist() == pytest.approx(
        [-0.1, 5.0]
    )  # accuracy is maximised


@pytest.mark.parametrize(
    "prior,kernel,median",
    [
        ("lognormal:0.3", "RBFKernel", 0.3),
        ("auto", "RBFKernel", 0.3),
        ("gamma", "ScaleKernel", None),
    ],
)
def test_mobo_lengthscale_prior_builds_that_gp(prior, kernel, median):
    import torch

    space = SearchSpace.from_dict(
        {
            "params": {
                "a": {"type": "float", "low": 0.0, "high": 1.0},
                "b": {"type": "float", "low": 0.0, "high": 1.0},
            }
        }
    )
    opt = create_optimizer(
        "mobo",
        space,
        [("f", "minimize"), ("g", "minimize")],
        lengthscale_prior=prior,
        **FAST_OPTIONS["mobo"],
    )
    X = torch.rand(8, 2, dtype=torch.double, generator=torch.Generator().manual_seed(0))
    model = opt._fit(X, torch.stack([X.sum(-1), (1 - X).prod(-1)], -1))
    assert type(model.covar_module).__name__ == kernel
    if median is not None:
        assert float(model.covar_module.lengthscale_prior.icdf(torch.tensor(0.5))) == pytest.approx(
            median
        )


@pytest.mark.parametrize("pareto_starts", [0, 5])
def test_mobo_continuous_search_starts_from_pareto_points(pareto_starts):
    """A needle-shaped acquisition next to a Pareto point: random starts see a zero gradient,
    a local search started from the Pareto point climbs to it."""
    import torch
    from botorch.acquisition import AcquisitionFunction

    class Needle(AcquisitionFunction):
        def __init__(self, centre):
            torch.nn.Module.__init__(self)
            self.centre = centre

        def forward(self, X):  # X: (b, q=1, d)
            return torch.exp(-((X[..., 0, :] - self.centre) ** 2).sum(-1) / 1e-4)

    space = SearchSpace.from_dict(
        {"params": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(4)}}
    )
    opt = create_optimizer(
        "mobo",
        space,
        [("f1", "minimize"), ("f2", "minimize")],
        seed=0,
        pareto_starts=pareto_starts,
        raw_samples=64,
        num_restarts=4,
    )
    centre = torch.tensor([0.31, 0.0, 0.0, 0.0], dtype=torch.double)
    front = torch.tensor([[0.9, 0.5, 0.5, 0.5], [0.30, 0.01, 0.0, 0.02]], dtype=torch.double)
    config = opt._optimize_continuous(Needle(centre), front, number=7)
    reached = abs(config["x0"] - 0.31) < 1e-3 and config["x1"] + config["x2"] + config["x3"] < 1e-3
    assert reached == (pareto_starts > 0)


@pytest.mark.parametrize("use_pruned", [True, False])
def test_mobo_learns_from_pruned_trials(mixed_space, use_pruned):
    """With early stopping most trials end pruned: mobo models them at the values they were
    stopped with (``use_pruned``, the default), so BO starts once two trials are done either way."""
    from tests.optim.conftest import FAST_OPTIONS

    opt = create_optimizer(
        "mobo",
        mixed_space,
        [("accuracy", "maximize"), ("loss", "minimize")],
        seed=0,
        **{**FAST_OPTIONS["mobo"], "n_initial": 3, "use_pruned": use_pruned},
    )
    first = opt.ask(3)
    opt.tell(first[0].id, {"accuracy": 0.7, "loss": 0.5})
    opt.tell(first[1].id, {"accuracy": 0.4, "loss": 0.9}, state="pruned")
    opt.tell(first[2].id, {"accuracy": 0.5, "loss": 0.8}, state="pruned")
    opt.ask(1)
    if use_pruned:
        assert opt.last_info["n_train"] == 3 and opt.last_info["n_pruned"] == 2
    else:
        assert "n_train" not in opt.last_info  # one complete trial: still the Sobol design


def test_mobo_reports_a_failed_gp_fit_and_still_suggests(mixed_space, monkeypatch):
    import botorch.fit

    def fail(*args, **kwargs):
        raise RuntimeError("no convergence")

    monkeypatch.setattr(botorch.fit, "fit_gpytorch_mll", fail)
    opt = create_optimizer(
        "mobo",
        mixed_space,
        OBJ,
        seed=0,
        known_objectives={"params": lora_params},
        **FAST_OPTIONS["mobo"],
    )
    for _ in range(2):
        for s in opt.ask(2):
            opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})
    assert "fit_error" not in opt.last_info  # still the Sobol design: no fit yet
    (s,) = opt.ask()
    assert mixed_space.validate(s.config) == s.config
    assert opt.last_info["fit_error"] == "RuntimeError: no convergence"


def test_mobo_warm_start_hypers_starts_from_the_previous_fit(mixed_space):
    opt = create_optimizer(
        "mobo",
        mixed_space,
        OBJ,
        seed=0,
        warm_start_hypers=True,
        known_objectives={"params": lora_params},
        **FAST_OPTIONS["mobo"],
    )
    for _ in range(4):
        for s in opt.ask(2):
            opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})
    assert set(opt._hypers) == {"dim_scaled"} and "fit_error" not in opt.last_info


def _unit_space(d: int) -> SearchSpace:
    return SearchSpace.from_dict(
        {"params": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(d)}}
    )


def test_mobo_trust_region_options_are_checked_and_auto_follows_the_dimension(mixed_space):
    two = [("f1", "minimize"), ("f2", "minimize")]
    for bad in ("yes", 1, None):
        with pytest.raises(InvalidConfig, match="trust_region"):
            create_optimizer("mobo", _unit_space(8), two, trust_region=bad)
    for bad in (0, -0.1, 0.6, True, "0.2"):
        with pytest.raises(InvalidConfig, match="trust_region_size"):
            create_optimizer("mobo", _unit_space(8), two, trust_region_size=bad)
    # on a mixed space it could not act: refused rather than ignored
    with pytest.raises(InvalidConfig, match="trust_region"):
        create_optimizer("mobo", mixed_space, OBJ, trust_region=True)
    assert not create_optimizer("mobo", mixed_space, OBJ)._trust_region  # auto: off
    # auto: up to 6 parameters only while the search stalls
    assert create_optimizer("mobo", _unit_space(6), two)._trust_region == "stall"
    assert create_optimizer("mobo", _unit_space(7), two)._trust_region
    assert not create_optimizer("mobo", _unit_space(12), two, trust_region=False)._trust_region
    assert create_optimizer("mobo", _unit_space(2), two, trust_region=True)._trust_region
    with pytest.raises(InvalidConfig, match="trust_region"):
        create_optimizer("mobo", mixed_space, OBJ, trust_region="alternate")
    alternate = create_optimizer("mobo", _unit_space(4), two, trust_region="alternate")
    assert [alternate._in_region(n) for n in range(4)] == [False, True, False, True]


@pytest.mark.parametrize("on", [True, False, "alternate"])
def test_mobo_trust_region_keeps_the_search_in_a_box_around_a_pareto_point(on):
    """An acquisition that grows towards the corner (1, ..., 1): the global search goes there,
    the trust-region search stops at the corner of the box around the Pareto point it drew
    (``"alternate"``: odd suggestions in the box, even ones global)."""
    import torch
    from botorch.acquisition import AcquisitionFunction

    class Corner(AcquisitionFunction):
        def __init__(self):
            torch.nn.Module.__init__(self)

        def forward(self, X):  # X: (b, q=1, d)
            return X[..., 0, :].sum(-1)

    d = 8
    opt = create_optimizer(
        "mobo",
        _unit_space(d),
        [("f1", "minimize"), ("f2", "minimize")],
        seed=0,
        trust_region=on,
        trust_region_size=0.2,
        raw_samples=64,
        num_restarts=4,
    )
    front = torch.tensor([[0.1] * d, [0.5] * d], dtype=torch.double)
    for number in range(8, 14):
        config = opt._optimize_continuous(Corner(), front, number=number)
        x = [config[f"x{i}"] for i in range(d)]
        if on is True or (
            on == "alternate" and number % 2
        ):  # equal widths (no lengthscales): the box corner of one of the two centres
            assert any(x == pytest.approx([float(c[0]) + 0.2] * d, abs=1e-6) for c in front)
        else:
            assert x == pytest.approx([1.0] * d, abs=1e-6)


def test_trust_region_widths_follow_the_lengthscales():
    import numpy as np
    import torch

    from autopeft.optim.mobo.optim_mixed import trust_region

    front = torch.full((1, 3), 0.5, dtype=torch.double)
    ls = torch.tensor([0.5, 1.0, 2.0], dtype=torch.double)  # geometric mean 1
    lo, hi, centre = trust_region(front, ls, np.random.default_rng(0), 0.1)
    assert (hi - lo).tolist() == pytest.approx([0.1, 0.2, 0.4])
    assert centre.tolist() == [0.5] * 3
    lo, hi, _ = trust_region(front, torch.tensor([1e-3, 1.0, 1e3]), np.random.default_rng(0), 0.2)
    assert lo.tolist() == pytest.approx([0.45, 0.3, 0.0]) and hi.tolist()[2] == 1.0  # clipped


def test_mobo_searches_a_trust_region_on_a_many_dimensional_problem():
    """Through ask/tell on a 10-d problem (auto: on): every BO suggestion lies in the box of
    some Pareto point of the trials told so far, widths at most 4 x the half-width."""
    import numpy as np

    d = 10
    opt = create_optimizer(
        "mobo",
        _unit_space(d),
        [("f1", "minimize"), ("f2", "minimize")],
        seed=1,
        n_initial=6,
        raw_samples=32,
        num_restarts=2,
        mc_samples=16,
        fit_maxiter=15,
    )
    from autopeft.optim import pareto as pm

    def f(x):
        g = float(((np.asarray(x[1:]) - 0.5) ** 2).sum())
        return {"f1": (1 + g) * x[0], "f2": (1 + g) * (1 - x[0])}

    told = []
    for _ in range(10):
        (s,) = opt.ask()
        x = np.array([s.config[f"x{i}"] for i in range(d)])
        if len(told) >= 6:
            assert "trust region" in opt.last_info["method"]
            Y = np.array([[v["f1"], v["f2"]] for _, v in told])
            front = [told[i][0] for i in np.flatnonzero(pm.is_non_dominated(Y))]
            assert any(np.all(np.abs(x - c) <= 4 * 0.2 + 1e-9) for c in front)
        v = f(x)
        opt.tell(s.id, v)
        told.append((x, v))


def test_mobo_stall_trust_region_turns_on_when_recent_trials_miss_the_front():
    """``"stall"`` (``"auto"`` up to 6 parameters): the search is stalled when none of the last
    three model-chosen trials is on the front of all trials, and no longer once one is."""
    two = [("f1", "minimize"), ("f2", "minimize")]
    opt = create_optimizer("mobo", _unit_space(2), two, seed=0, n_initial=2)
    assert opt._trust_region == "stall"
    front = [(0.1, 0.9), (0.9, 0.1)]  # the initial design: the front
    for i, (a, b) in enumerate(front):
        opt.add_trial({"x0": 0.1 * i, "x1": 0.5}, {"f1": a, "f2": b})
    for i in range(2):
        opt.add_trial({"x0": 0.5, "x1": 0.1 * i}, {"f1": 0.95, "f2": 0.95})  # dominated
    done = list(opt._records)
    assert not opt._stalled(done)  # two model-chosen trials only
    opt.add_trial({"x0": 0.6, "x1": 0.6}, {"f1": 0.92, "f2": 0.92})
    assert opt._stalled(list(opt._records))
    opt.add_trial({"x0": 0.7, "x1": 0.7}, {"f1": 0.05, "f2": 0.95})  # a new front point
    assert not opt._stalled(list(opt._records))
    # the search in a box follows: a stalled suggestion is made in a trust region
    for _ in range(3):
        opt.add_trial({"x0": 0.2, "x1": 0.9}, {"f1": 0.99, "f2": 0.99})
    (s,) = opt.ask()
    assert opt.last_info["method"] == "optimize_acqf in a trust region"
    opt.tell(s.id, {"f1": 0.01, "f2": 0.01})  # dominates everything: the search is global again
    opt.ask()
    assert opt.last_info["method"] == "optimize_acqf"


def test_mobo_far_streak_repeats_a_far_turn_while_it_reaches_new_extremes():
    """``far_streak``: a ``far`` turn whose trial sets a new best value of some objective is
    followed by another ``far`` turn, for as long as the streak keeps doing so; an ``expanding``
    turn that sets one starts no streak."""
    two = [("f1", "minimize"), ("f2", "minimize")]

    def rules(opt, numbers):
        recs = list(opt._records)
        out = []
        for n in numbers:
            opt._acq_reference_point(opt._Y(recs), n, [r.id for r in recs])
            out.append(opt.last_info["ref_rule"])
        return out

    def told(**options):  # n_initial=2; "cycle": numbers 2, 5, 8 take the far turn
        opt = create_optimizer("mobo", _unit_space(2), two, seed=0, n_initial=2, **options)
        for i, (a, b) in enumerate([(0.1, 0.9), (0.9, 0.1)]):
            opt.add_trial({"x0": 0.1 * i, "x1": 0.5}, {"f1": a, "f2": b})
        opt.add_trial({"x0": 0.9, "x1": 0.1}, {"f1": 0.95, "f2": 0.05})  # far turn: best f2
        return opt

    opt = told()
    assert rules(opt, [3]) == ["far"]
    (s,) = opt.ask()  # suggestion 3 takes it too
    assert opt.last_info["ref_rule"] == "far"
    opt.tell(s.id, {"f1": 0.97, "f2": 0.02})  # the streak's far turn sets a new best again
    assert rules(opt, [4]) == ["far"]
    opt.add_trial({"x0": 0.5, "x1": 0.5}, {"f1": 0.5, "f2": 0.5})  # 4: no new best
    assert rules(opt, [5, 6]) == ["far", "expanding"]  # 5 by the cycle; the streak has ended
    opt.add_trial({"x0": 0.6, "x1": 0.6}, {"f1": 0.6, "f2": 0.6})  # 5 (far): no new best
    opt.add_trial({"x0": 1.0, "x1": 0.0}, {"f1": 0.99, "f2": 0.0})  # 6 (expanding): best f2
    assert rules(opt, [7]) == ["expanding"]
    assert rules(told(far_streak=False), [3]) == ["expanding"]
    assert rules(told(ref_rule="expanding"), [3]) == ["expanding"]  # no far turn to repeat
    with pytest.raises(InvalidConfig, match="far_streak"):
        create_optimizer("mobo", _unit_space(2), two, far_streak="yes")


@pytest.mark.parametrize("name", ["random", "sobol", "tpe", "nsga2", "mobo"])
def test_excluded_configs_are_never_suggested(name, mixed_space):
    """``exclude`` (the service's adapter-free configs while the probe runs) holds for the
    initial design, the model's choices and the replacements of duplicates. A quarter of this
    space trains no LoRA, and the same optimiser without the option asks such configs."""

    def adapter_free(config):
        return lora_params(config) == 0

    def run(**extra):
        opt = create_optimizer(
            name,
            mixed_space,
            OBJ,
            seed=0,
            known_objectives={"params": lora_params},
            **FAST_OPTIONS.get(name, {}),
            **extra,
        )
        asked = []
        for _ in range(8):
            for s in opt.ask(2):
                asked.append(s.config)
                opt.tell(s.id, {"accuracy": toy_values(s.config)["accuracy"]})
        return asked

    assert not any(adapter_free(c) for c in run(exclude=adapter_free))
    if name != "nsga2":  # its 16 asks may miss the corner by chance; the others reach it
        assert any(adapter_free(c) for c in run())
    with pytest.raises(InvalidConfig, match="exclude"):
        create_optimizer(name, mixed_space, OBJ, exclude=True)
