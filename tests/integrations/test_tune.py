"""MoboSearcher and MOASHAScheduler in real Ray Tune runs (a private Ray on 127.0.0.1, function
trainables that report every step without sleeping)."""

from __future__ import annotations

import math
import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'autopeft[ray]')")
tune = pytest.importorskip("ray.tune")

from autopeft.errors import InvalidConfig  # noqa: E402
from autopeft.integrations.tune import MOASHAScheduler, MoboSearcher, space_from_tune  # noqa: E402
from autopeft.space import SearchSpace  # noqa: E402
from tests.integrations.ray_local import private_ray  # noqa: E402

MAX_T = 9
FAST = {"num_restarts": 2, "raw_samples": 64, "fit_maxiter": 40, "mc_samples": 32}


@pytest.fixture(scope="module")
def ray_local():
    with private_ray("ap-tune-", num_cpus=2) as d:
        yield d


def trainable(config):
    """Two objectives per step: ``err`` falls with steps towards a floor set by x (min),
    ``cost`` grows with the rank (min). Reports steps 1..MAX_T."""
    x, rank = config["x"], config["model"]["rank"]
    for step in range(1, MAX_T + 1):
        err = (x - 0.3) ** 2 + 1.0 / step + (0.05 if config["act"] == "relu" else 0.0)
        tune.report({"err": err, "cost": math.log2(rank) + config["lr"] * 10, "step": step})


PARAM_SPACE = {
    "x": tune.uniform(0.0, 1.0),
    "lr": tune.loguniform(1e-4, 1e-1),
    "model": {"rank": tune.choice([2, 4, 8, 16]), "depth": tune.randint(1, 4)},
    "act": tune.choice(["relu", "gelu"]),
    "q": tune.quniform(0.0, 1.0, 0.25),
    "fixed": 7,
}


def test_tuner_with_mobo_searcher_and_moasha(ray_local):
    metric, mode = ["err", "cost"], ["min", "min"]
    searcher = MoboSearcher(metric=metric, mode=mode, seed=0, n_initial=4, **FAST)
    scheduler = MOASHAScheduler(
        metric=metric, mode=mode, time_attr="step", grace_period=1, reduction_factor=3, max_t=MAX_T
    )
    tuner = tune.Tuner(
        trainable,
        param_space=PARAM_SPACE,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=12, max_concurrent_trials=2
        ),
        run_config=tune.RunConfig(
            storage_path=os.path.join(ray_local, "results"), verbose=0, name="moasha"
        ),
    )
    results = tuner.fit()
    assert len(results) == 12 and not results.errors
    steps = {r.metrics["trial_id"]: r.metrics["step"] for r in results}
    # MO-ASHA stopped some trials early, each at a rung below max_t; the others ran to MAX_T
    assert scheduler.stopped, steps
    for trial_id, step in steps.items():
        if trial_id in scheduler.stopped:
            assert scheduler.stopped[trial_id] == step and step in (1, 3)
        else:
            assert step == MAX_T
    assert len(scheduler.stopped) < 12
    # every config was suggested by the searcher, within the space, with the constant kept
    for r in results:
        c = r.config
        assert 0 <= c["x"] <= 1 and 1e-4 <= c["lr"] <= 1e-1 and c["fixed"] == 7
        assert c["model"]["rank"] in (2, 4, 8, 16) and c["model"]["depth"] in (1, 2, 3)
        assert c["q"] in (0.0, 0.25, 0.5, 0.75, 1.0) and c["act"] in ("relu", "gelu")
    # the searcher told its optimiser every trial's last result
    told = searcher.optimizer.trials
    assert len(told) == 12 and all(t.state == "complete" for t in told)
    told_err = sorted(t.values["err"] for t in told)
    assert told_err == pytest.approx(sorted(r.metrics["err"] for r in results))
    # the scheduler's own records: pruned exactly for the early-stopped trials
    states = [t.state for t in scheduler.optimizer.trials]
    assert states.count("pruned") == len(scheduler.stopped)
    assert states.count("complete") == 12 - len(scheduler.stopped)


def test_single_metric_from_tune_config_and_autopeft_space(ray_local):
    """metric/mode from TuneConfig (Tune passes them with a param_space, here constants only);
    the space an autopeft SearchSpace (flat configs)."""
    space = SearchSpace.from_dict(
        {
            "params": {
                "x": {"type": "float", "low": 0.0, "high": 1.0},
                "alpha": {"choices": [8, 16, 32]},
            }
        }
    )

    def fn(config):
        for step in range(1, 4):
            tune.report({"loss": (config["x"] - 0.6) ** 2 + config["alpha"] / 1000 / step})

    searcher = MoboSearcher(space, seed=1, n_initial=3, **FAST)
    tuner = tune.Tuner(
        fn,
        param_space={"tag": "a"},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", search_alg=searcher, num_samples=5, max_concurrent_trials=1
        ),
        run_config=tune.RunConfig(
            storage_path=os.path.join(ray_local, "results"), verbose=0, name="single"
        ),
    )
    results = tuner.fit()
    assert len(results) == 5 and not results.errors
    assert [t.state for t in searcher.optimizer.trials] == ["complete"] * 5
    assert all(set(r.config) == {"x", "alpha", "tag"} for r in results)


def test_space_from_tune_mapping():
    space, codecs = space_from_tune(PARAM_SPACE)
    kinds = {p.name: (p.kind, p.low, p.high, p.log) for p in space.params}
    assert kinds["x"] == ("float", 0.0, 1.0, False)
    assert kinds["lr"][0] == "float" and kinds["lr"][3]
    assert kinds["model/depth"] == ("int", 1, 3, False)  # randint: upper bound exclusive
    assert kinds["q"] == ("int", 0, 4, False)  # the grid index of 0, 0.25, ..., 1
    assert space["model/rank"].kind == "categorical"
    assert codecs["q"].to_external(3) == 0.75 and codecs["model/rank"].to_external(2) == 8
    assert "fixed" not in space


def test_unsupported_domains_are_named():
    with pytest.raises(InvalidConfig, match="noise"):
        space_from_tune({"noise": tune.randn(0, 1)})
    with pytest.raises(InvalidConfig, match="g"):
        space_from_tune({"g": tune.grid_search([1, 2])})
