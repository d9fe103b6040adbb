"""PBT / MO-PBT: pure explore helpers, quantiles, exploit decisions and the lineage log."""

from __future__ import annotations

import numpy as np
import pytest

from autopeft import InvalidConfig
from autopeft.optim import Exploit, create_optimizer
from autopeft.optim.pbt import explore, quantiles
from autopeft.space import SearchSpace

SPACE = {
    "params": {
        "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
        "dropout": {"choices": [0.0, 0.1, 0.2]},
        "width": {"choices": [8, 16, 32]},
    }
}


@pytest.fixture
def space():
    return SearchSpace.from_dict(SPACE)


def test_quantiles():
    assert quantiles([3, 1, 2, 0], 0.25) == ([3], [0])
    assert quantiles(list(range(8)), 0.25) == ([0, 1], [6, 7])
    assert quantiles(list(range(3)), 0.5) == ([0], [2])
    assert quantiles([5], 0.25) == ([], [])


def test_explore_perturbs_by_factors_and_neighbours(space):
    config = {"lr": 1.0e-3, "weight_decay": 0.05, "dropout": 0.1, "width": 16}
    for seed in range(20):
        new, changes = explore(
            config,
            space,
            ["lr", "weight_decay", "dropout"],
            np.random.default_rng(seed),
            resample_probability=0.0,
        )
        assert new["lr"] == pytest.approx(0.8e-3) or new["lr"] == pytest.approx(1.2e-3)
        assert new["weight_decay"] == pytest.approx(0.04) or new["weight_decay"] == pytest.approx(
            0.06
        )
        assert new["dropout"] in (0.0, 0.2)
        assert new["width"] == 16  # not mutable
        assert set(changes) == {"lr", "weight_decay", "dropout"}
        assert changes["lr"][2] in ("x0.8", "x1.2")


def test_explore_clips_to_bounds_and_resamples(space):
    config = {"lr": 1.0e-2, "weight_decay": 0.1, "dropout": 0.2, "width": 8}
    seen_resample = False
    for seed in range(40):
        new, changes = explore(config, space, ["lr", "dropout"], np.random.default_rng(seed), 0.25)
        assert 1.0e-4 <= new["lr"] <= 1.0e-2
        space.validate(new)
        seen_resample |= any(how == "resample" for _, _, how in changes.values())
        if "dropout" in changes and changes["dropout"][2] != "resample":
            assert changes["dropout"][1] == 0.1  # the only neighbour of the last choice
    assert seen_resample


def _run_population(opt, score_fn, steps=4):
    suggestions = opt.ask(4)
    answers = []
    for step in range(1, steps + 1):
        for s in suggestions:
            config = opt.trials[s.id].config
            answers.append((s.id, step, opt.report(s.id, step, score_fn(config, step))))
    return suggestions, answers


def test_pbt_bottom_trial_exploits_top_trial_with_only_mutable_changes(space):
    opt = create_optimizer("pbt", space, [("acc", "maximize")], seed=3, perturbation_interval=2)
    suggestions, answers = _run_population(
        opt, lambda c, step: {"acc": c["width"] + 10 * c["lr"] + step}
    )
    exploits = [(i, step, a) for i, step, a in answers if isinstance(a, Exploit)]
    assert exploits, "the worst member must exploit at step 2"
    for trial_id, step, a in exploits:
        assert step % 2 == 0 and a.source_id != trial_id
        source_cfg = opt.lineage[[e["trial"] for e in opt.lineage].index(trial_id)]
        assert source_cfg["source"] == a.source_id
        assert (
            a.config["width"] == opt.trials[a.source_id].config["width"]
        )  # architecture copied, not explored
        assert set(a.changes) <= {"lr", "weight_decay", "dropout"}
    log = opt.lineage_log()
    assert f"trial {exploits[0][0]}" in log and f"cloned trial {exploits[0][2].source_id}" in log
    assert opt.trials[exploits[-1][0]].parent_id == exploits[-1][2].source_id


def test_mopbt_exploits_from_the_first_front(space):
    opt = create_optimizer(
        "mopbt", space, [("acc", "maximize"), ("cost", "minimize")], seed=1, perturbation_interval=1
    )
    suggestions = opt.ask(4)
    # trial 0 dominates all others, trial 3 is dominated by all
    table = {0: (1.0, 1.0), 1: (0.8, 2.0), 2: (0.6, 1.5), 3: (0.1, 5.0)}
    out = {
        s.id: opt.report(s.id, 1, {"acc": table[s.id][0], "cost": table[s.id][1]})
        for s in suggestions
    }
    assert isinstance(out[3], Exploit) and out[3].source_id == 0
    assert out[0] == "continue"


def test_constructor_validation(space):
    with pytest.raises(InvalidConfig, match="mutable"):
        create_optimizer("pbt", space, [("acc", "maximize")], mutable=["nope"])
    with pytest.raises(InvalidConfig, match="quantile_fraction"):
        create_optimizer("pbt", space, [("acc", "maximize")], quantile_fraction=0.9)
    with pytest.raises(InvalidConfig, match="weights"):
        create_optimizer("pbt", space, [("a", "maximize"), ("b", "minimize")], weights=[1.0])
    with pytest.raises(InvalidConfig, match="tie_break"):
        create_optimizer("mopbt", space, [("a", "maximize"), ("b", "minimize")], tie_break="random")
    opt = create_optimizer("pbt", space, [("acc", "maximize")])
    assert opt.mutable == ["lr", "weight_decay", "dropout"]


def test_no_exploit_at_or_after_max_step(mixed_space):
    from autopeft.optim import Exploit, create_optimizer

    def run(max_step):
        opt = create_optimizer(
            "pbt",
            mixed_space,
            [("accuracy", "maximize")],
            seed=0,
            population_size=4,
            perturbation_interval=2,
            quantile_fraction=0.5,
            max_step=max_step,
        )
        ids = [s.id for s in opt.ask(4)]
        answers = []
        for step in (2, 4):
            for i, tid in enumerate(ids):
                answers.append(opt.report(tid, step, {"accuracy": 0.1 * i}))
        return answers

    free = run(None)
    assert any(isinstance(a, Exploit) for a in free[4:])  # without it, members exploit at step 4
    capped = run(4)
    assert capped[:4] == free[:4] and all(a == "continue" for a in capped[4:])
