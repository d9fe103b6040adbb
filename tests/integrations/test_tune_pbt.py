"""MOPBTScheduler / PBTScheduler: the ranking on its own, and exploits in a real Ray Tune run (a
private Ray on 127.0.0.1, a function trainable that checkpoints every step)."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'autopeft[ray]')")
tune = pytest.importorskip("ray.tune")

from autopeft.errors import InvalidConfig  # noqa: E402
from autopeft.integrations.tune import MOPBTScheduler, PBTScheduler  # noqa: E402
from tests.integrations.ray_local import private_ray  # noqa: E402

MAX_T = 8
LR = (0.01, 0.1)
DROPOUT = [0.0, 0.1, 0.2]
MUTATIONS = {"lr": tune.uniform(*LR), "opt": {"dropout": DROPOUT}}


@pytest.fixture(scope="module")
def ray_local():
    with private_ray(
        "ap-tune-pbt-", num_cpus=4
    ) as d:  # the four trials of a population run at once (none waits out a perturbation)
        yield d


def trainable(config):
    """``acc`` (max) grows by ``k + lr`` a step, ``cost`` (min) is ``lr``, plus 1 for ``k == 0``:
    the ``k == 0`` trial is dominated by every other. Each step saves ``{step, acc, owner}``;
    each (re)start appends what it restored to the JSON lines file ``config["log"]`` (Tune's own
    result history of a trial is rewound when it restores, so it cannot show this)."""
    me = tune.get_context().get_trial_id()
    step, acc, origin = 0, 0.0, None
    ckpt = tune.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d, open(os.path.join(d, "state.json")) as f:
            state = json.load(f)
        step, acc, origin = state["step"], state["acc"], state["owner"]
    with open(config["log"], "a") as f:
        start = {"trial": me, "loaded_from": origin, "step": step, "acc": acc, "k": config["k"]}
        f.write(json.dumps(start) + "\n")
    while step < MAX_T:
        step += 1
        acc += config["k"] + config["lr"]
        cost = config["lr"] + (1.0 if config["k"] == 0 else 0.0)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as f:
                json.dump({"step": step, "acc": acc, "owner": me}, f)
            metrics = {"acc": acc, "cost": cost, "step": step}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _tuner(scheduler, root, name, stop=None):
    return tune.Tuner(
        trainable,
        param_space={
            "log": os.path.join(root, f"{name}.jsonl"),
            "k": tune.grid_search([0, 1, 2, 3]),
            "lr": tune.uniform(*LR),
            "opt": {"dropout": tune.choice(DROPOUT)},
        },
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1),
        run_config=tune.RunConfig(
            storage_path=os.path.join(root, "results"), verbose=0, name=name, stop=stop
        ),
    )


def test_tuner_with_mopbt_exploits_restore_the_donor_checkpoint(ray_local):
    scheduler = MOPBTScheduler(
        metric=["acc", "cost"],
        mode=["max", "min"],
        hyperparam_mutations=MUTATIONS,
        time_attr="step",
        perturbation_interval=2,
        max_t=MAX_T,
        seed=0,
    )
    results = _tuner(scheduler, ray_local, "mopbt").fit()
    assert len(results) == 4 and not results.errors
    lineage = scheduler.lineage
    assert lineage, scheduler.debug_string()
    with open(os.path.join(ray_local, "mopbt.jsonl")) as f:
        starts = [json.loads(line) for line in f]
    for e in lineage:
        assert e["trial"] != e["source"] and e["step"] < MAX_T
        # the exploiting trial restarted from the donor's checkpoint at the donor's last
        # perturbation (its step and acc are the donor's there), with its new config
        restored = [
            s for s in starts if s["trial"] == e["trial"] and s["loaded_from"] == e["source"]
        ]
        assert restored, (e, starts)
        assert any(
            s["step"] == e["source_step"]
            and s["acc"] == pytest.approx(e["source_values"]["acc"])
            and s["k"] == e["config"]["k"]
            for s in restored
        ), (e, restored)
        # multi-objective: the exploiting trial never dominated its donor
        mine, donor = e["values"], e["source_values"]
        assert not (mine["acc"] >= donor["acc"] and mine["cost"] <= donor["cost"]), e
        # explore changed only the mutable knobs, within their domains
        c = e["config"]
        assert LR[0] <= c["lr"] <= LR[1] and c["opt"]["dropout"] in DROPOUT
        assert set(e["changes"]) <= {"lr", "opt/dropout"}
    # the dominated k == 0 trial exploited (its config then took another trial's k)
    assert any(e["old_config"]["k"] == 0 for e in lineage), lineage
    for r in results:
        assert LR[0] <= r.config["lr"] <= LR[1] and r.config["opt"]["dropout"] in DROPOUT
        assert r.metrics["step"] == MAX_T  # every trial ran to max_t, stopped as done


class _FakeTrial:
    def __init__(self, name):
        self.trial_id, self.experiment_tag = name, name

    def is_finished(self):
        return False

    def __repr__(self):
        return self.trial_id


def _rank(scheduler, points):
    """``(lower, upper)`` ids of :meth:`_quantiles` for trials with ``points`` (acc, cost)."""
    from ray.tune.schedulers.pbt import _PBTTrialState

    for name, (acc, cost) in points.items():
        t = _FakeTrial(name)
        scheduler._trial_state[t] = state = _PBTTrialState(t)
        scheduler._save_trial_state(state, 2, {"acc": acc, "cost": cost}, t)
    lower, upper = scheduler._quantiles()
    return [t.trial_id for t in lower], sorted(t.trial_id for t in upper)


POINTS = {"a": (9.0, 5.0), "b": (5.0, 1.0), "c": (8.0, 3.0), "d": (1.0, 6.0)}


def test_mopbt_ranking_is_multi_objective():
    """a, b, c are mutually non-dominated (the donors), d is dominated by all (exploits); scalar
    PBT on acc alone takes the best acc as the only donor and the worst as the exploiter."""
    kwargs = {"hyperparam_mutations": MUTATIONS, "metric": ["acc", "cost"]}
    mo = MOPBTScheduler(mode=["max", "min"], **kwargs)
    assert _rank(mo, POINTS) == (["d"], ["a", "b", "c"])
    # minimising acc turns the front round: only d (lowest acc and ...) and b are non-dominated
    mo_min = MOPBTScheduler(mode=["min", "min"], **kwargs)
    lower, upper = _rank(mo_min, POINTS)
    assert upper == ["b", "d"] and lower == ["a"]
    scalar = PBTScheduler(mode=["max", "min"], **kwargs)
    assert _rank(scalar, POINTS) == (["d"], ["a"])
    weighted = PBTScheduler(mode=["max", "min"], weights=[0.0, 1.0], **kwargs)
    assert _rank(weighted, POINTS) == (["d"], ["b"])  # cost alone
    nan = MOPBTScheduler(mode=["max", "min"], **kwargs)
    assert _rank(nan, {"a": (1.0, float("nan")), "b": (2.0, 1.0)}) == ([], [])


def test_explore_stays_in_the_domains():
    s = MOPBTScheduler(
        metric=["acc", "cost"],
        mode=["max", "min"],
        hyperparam_mutations={"lr": tune.loguniform(1e-4, 1e-1), "q": tune.quniform(0, 1, 0.25)},
        resample_probability=0.5,
        seed=3,
    )
    donor, me = _FakeTrial("donor"), _FakeTrial("me")
    seen = set()
    for i in range(40):
        donor.config = {"lr": 0.1, "q": 0.75, "k": i, "nested": {"x": 1}}
        s._lineage.append({})  # a new exploit number: a new explore draw
        new, ops = s._get_new_config(me, donor)
        assert 1e-4 <= new["lr"] <= 1e-1 and new["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert new["k"] == i and new["nested"] == {"x": 1}  # the rest is the donor's
        assert set(ops) <= {"lr", "q"}
        seen.add(new["q"])
    assert len(seen) > 1
    # a donor value outside its domain is resampled into it
    donor.config = {"lr": 5.0, "q": 0.3}
    new, _ = s._get_new_config(me, donor)
    assert 1e-4 <= new["lr"] <= 1e-1


def test_bad_arguments_are_named():
    with pytest.raises(InvalidConfig, match="differ in length"):
        MOPBTScheduler(metric=["acc", "cost"], mode=["max"], hyperparam_mutations=MUTATIONS)
    with pytest.raises(InvalidConfig, match="max_t"):
        MOPBTScheduler(hyperparam_mutations=MUTATIONS, perturbation_interval=4, max_t=4)
    with pytest.raises(InvalidConfig, match="max_t"):
        MOPBTScheduler(
            hyperparam_mutations=MUTATIONS, perturbation_interval=1, burn_in_period=5, max_t=5
        )
    with pytest.raises(InvalidConfig, match="perturbation_interval"):
        MOPBTScheduler(hyperparam_mutations=MUTATIONS, perturbation_interval=0)
    with pytest.raises(InvalidConfig, match="hyperparam_mutations"):
        MOPBTScheduler(hyperparam_mutations={})
    with pytest.raises(InvalidConfig, match="opt/lr"):
        MOPBTScheduler(hyperparam_mutations={"opt": {"lr": lambda: 0.1}})
    with pytest.raises(InvalidConfig, match="tie_break"):
        MOPBTScheduler(["a", "b"], ["min", "min"], hyperparam_mutations=MUTATIONS, tie_break="x")
    with pytest.raises(InvalidConfig, match="bogus"):
        PBTScheduler("a", "min", hyperparam_mutations=MUTATIONS, bogus=1)


def test_a_stop_before_the_first_perturbation_is_refused(ray_local):
    scheduler = MOPBTScheduler(
        metric=["acc", "cost"],
        mode=["max", "min"],
        hyperparam_mutations=MUTATIONS,
        time_attr="step",
        perturbation_interval=3,
    )
    with pytest.raises(InvalidConfig, match="no exploit can happen"):
        _tuner(scheduler, ray_local, "too-short", stop={"step": 3}).fit()
