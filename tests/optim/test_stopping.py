"""ASHA and multi-objective ASHA decisions on hand-made rungs."""

from __future__ import annotations

import pytest

from autopeft import InvalidConfig
from autopeft.optim import create_optimizer
from autopeft.optim._stopping import make_stopper


def test_rungs():
    s = make_stopper(
        {"kind": "asha", "min_step": 1, "reduction_factor": 3, "max_step": 27}, ["minimize"]
    )
    assert s.rungs_up_to(30) == [1, 3, 9]


def test_asha_keeps_the_top_third():
    s = make_stopper({"kind": "asha", "reduction_factor": 3}, ["minimize"])
    assert s.decide(0, 1, [0.5]) == "continue"
    assert s.decide(1, 1, [0.4]) == "continue"  # fewer than 3 values: continue
    assert s.decide(2, 1, [0.9]) == "stop"  # worst of 3, keep 1
    assert s.decide(3, 1, [0.1]) == "continue"  # best of 4
    assert s.decide(3, 1, [0.1]) == "continue"  # already recorded at this rung
    assert s.decide(4, 2, [0.45]) == "stop"  # step 2 is past rung 1; 3rd of 5, keep 1


def test_moasha_ranks_by_non_dominated_sorting():
    s = make_stopper(
        {"kind": "moasha", "reduction_factor": 2, "keep_front": False}, ["minimize", "minimize"]
    )
    assert s.decide(0, 1, [1.0, 1.0]) == "continue"
    assert s.decide(1, 1, [2.0, 2.0]) == "stop"  # dominated; keep 1 of 2
    # first front {0, 2}, but only 3 // 2 = 1 is kept: both are boundary points (equal crowding),
    # so the earlier recorded one ranks first
    assert s.decide(2, 1, [0.5, 3.0]) == "stop"
    assert s.decide(3, 1, [0.1, 0.1]) == "continue"  # dominates every other: keep 2 of 4
    assert s.decide(4, 1, [0.2, 5.0]) == "stop"  # second front


def test_early_stopping_through_the_optimizer(mixed_space):
    opt = create_optimizer("asha+random", mixed_space, [("loss", "minimize")], seed=0)
    ids = [s.id for s in opt.ask(3)]
    answers = [opt.report(i, 1, {"loss": v}) for i, v in zip(ids, [0.3, 0.2, 0.9])]
    assert answers == ["continue", "continue", "stop"]
    opt.tell(ids[2], None, "pruned")
    assert opt.trials[ids[2]].state == "pruned"


def test_invalid_specs_are_named(mixed_space):
    with pytest.raises(InvalidConfig, match="early_stopping.reduction_factor"):
        create_optimizer(
            "random",
            mixed_space,
            [("loss", "minimize")],
            early_stopping={"kind": "asha", "reduction_factor": 1},
        )
    with pytest.raises(InvalidConfig, match="early_stopping.eta"):
        create_optimizer(
            "random", mixed_space, [("loss", "minimize")], early_stopping={"kind": "asha", "eta": 3}
        )
    with pytest.raises(InvalidConfig, match="early_stopping.kind"):
        create_optimizer(
            "random", mixed_space, [("loss", "minimize")], early_stopping={"kind": "hyperband"}
        )


def test_known_cost_objectives_rank_at_every_rung(mixed_space):
    """A trial reports only accuracy mid-training; the exactly known cost fills in at each rung,
    so MO-ASHA ranks on both objectives (a costlier trial with equal accuracy is the one stopped)."""
    cost = {}
    opt = create_optimizer(
        "random",
        mixed_space,
        [("accuracy", "maximize"), ("params", "minimize")],
        seed=0,
        known_objectives={"params": lambda c: cost[c["lr"]]},
        early_stopping={"kind": "moasha", "reduction_factor": 3, "max_step": 4},
    )
    sugg = opt.ask(3)
    for s, c in zip(sugg, (10.0, 20.0, 30.0)):
        cost[s.config["lr"]] = c
    answers = [opt.report(s.id, 1, {"accuracy": 0.5}) for s in sugg]
    assert answers == ["continue", "continue", "stop"]  # the 30.0-cost one goes
    assert opt.trials[sugg[2].id].reports[1]["params"] == 30.0  # filled in from the config
    assert (
        opt.report(sugg[0].id, 4, {"accuracy": 0.1}) == "continue"
    )  # no rung at max_step: never pruned there


def test_moasha_keeps_the_rungs_front_by_default():
    """Without keep_front only one of three non-dominated trials survives (crowding picks the
    earliest boundary point); with it (the default) every non-dominated trial goes on."""
    ranked = make_stopper(
        {"kind": "moasha", "reduction_factor": 3, "keep_front": False}, ["minimize", "minimize"]
    )
    kept = make_stopper({"kind": "moasha", "reduction_factor": 3}, ["minimize", "minimize"])
    points = [[0.30, 100.0], [0.25, 400.0], [0.35, 5.0], [0.40, 300.0]]  # the last is dominated
    assert [ranked.decide(i, 1, p) for i, p in enumerate(points)] == [
        "continue",
        "continue",
        "stop",
        "stop",
    ]
    assert [kept.decide(i, 1, p) for i, p in enumerate(points)] == [
        "continue",
        "continue",
        "continue",
        "stop",
    ]
    with pytest.raises(InvalidConfig, match="early_stopping.keep_front"):
        make_stopper({"kind": "moasha", "keep_front": "yes"}, ["minimize"])


def test_promotions_pause_instead_of_stopping_and_promote_when_the_rung_fills():
    s = make_stopper({"kind": "asha", "reduction_factor": 2, "promotions": True}, ["minimize"])
    assert s.decide(0, 1, [0.5]) == "continue"  # alone at the rung
    assert s.decide(1, 1, [0.6]) == "pause"  # 2nd of 2, keep 1: waits instead of stopping
    assert s.promotion() is None and s.paused == (1,)
    assert s.decide(2, 1, [0.7]) == "pause"  # 3rd of 3
    assert s.promotion() is None
    assert s.decide(3, 1, [0.9]) == "pause"  # 4th of 4, keep 2: trial 1 is now 2nd
    assert s.promotion() == 1 and s.paused == (1, 2, 3)
    s.resume(1)
    assert s.promotion() is None and s.paused == (2, 3)
    assert s.decide(1, 2, [0.5]) == "continue"  # its next report goes on as usual
    s.forget(3)  # told (e.g. pruned at the end): no longer waiting
    assert s.paused == (2,)


def test_promotions_through_the_optimizer_and_its_rebuild(mixed_space):
    def build():
        return create_optimizer(
            "random",
            mixed_space,
            [("loss", "minimize")],
            seed=0,
            early_stopping={"kind": "asha", "reduction_factor": 2, "promotions": True},
        )

    opt = build()
    ids = [s.id for s in opt.ask(4)]
    calls = []
    for i, loss in zip(ids, [0.5, 0.6, 0.7, 0.9]):
        calls.append((i, opt.report(i, 1, {"loss": loss})))
    assert [d for _, d in calls] == ["continue", "pause", "pause", "pause"]
    assert opt.promotion() == ids[1] and opt.paused == tuple(ids[1:])
    opt.resume(ids[1])
    opt.tell(ids[3], {"loss": 0.9}, "pruned")
    assert opt.paused == (ids[2],)
    # the same calls rebuild the same waiting set (the controller's replay)
    again = build()
    [again.ask(1) for _ in ids]
    for (i, _), loss in zip(calls, [0.5, 0.6, 0.7, 0.9]):
        again.report(i, 1, {"loss": loss})
    again.resume(ids[1])
    again.tell(ids[3], {"loss": 0.9}, "pruned")
    assert again.paused == opt.paused and again.promotion() == opt.promotion()
    with pytest.raises(InvalidConfig, match="early_stopping.promotions"):
        create_optimizer(
            "random",
            mixed_space,
            [("loss", "minimize")],
            early_stopping={"kind": "asha", "promotions": 1},
        )


def test_brackets_judge_later_brackets_only_from_their_first_rung():
    """Asynchronous Hyperband over shared rungs: trial i is in bracket i % brackets; bracket s
    makes its first decision at rung s, but every trial is recorded at every rung it passes."""
    s = make_stopper(
        {"kind": "asha", "reduction_factor": 2, "max_step": 8, "brackets": 3}, ["minimize"]
    )
    assert [s.bracket(i) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert s.decide(0, 1, [0.1]) == "continue"  # alone at rung 1
    assert s.decide(1, 1, [0.9]) == "continue"  # worst of 2 at rung 1, but bracket 1 waits
    assert s.decide(2, 1, [0.8]) == "continue"  # bracket 2: its first rung (4) is the last
    assert s.rung_table()[1] == {0: [0.1], 1: [0.9], 2: [0.8]}  # all recorded (shared)
    assert s.decide(3, 1, [0.85]) == "stop"  # bracket 0: 3rd of 4 at rung 1, keep 2
    # rung 2: bracket 1's first decision; trial 0 sets the bar
    assert s.decide(0, 2, [0.2]) == "continue"
    assert s.decide(1, 2, [0.95]) == "stop"  # 2nd of 2, keep 1
    assert s.decide(2, 2, [0.05]) == "continue"  # best at rung 2
    assert s.decide(2, 4, [0.9]) == "continue"  # bracket 2 is never judged below max_step 8
    # one bracket is the plain ladder
    plain = make_stopper({"kind": "asha", "reduction_factor": 2}, ["minimize"])
    assert plain.decide(0, 1, [0.1]) == "continue" and plain.decide(1, 1, [0.9]) == "stop"


def test_brackets_through_the_optimizer_with_promotions(mixed_space):
    opt = create_optimizer(
        "random",
        mixed_space,
        [("loss", "minimize")],
        seed=0,
        early_stopping={"kind": "asha", "reduction_factor": 2, "promotions": True, "brackets": 2},
    )
    ids = [s.id for s in opt.ask(4)]
    assert ids == [0, 1, 2, 3]
    # trials 1 and 3 are in bracket 1 (judged from rung 2): at rung 1 they only count
    answers = [opt.report(i, 1, {"loss": v}) for i, v in zip(ids, [0.1, 0.9, 0.8, 0.7])]
    assert answers == ["continue", "continue", "pause", "continue"]
    assert opt.paused == (2,)
    # trial 3 is the bar at rung 2; trial 1 is worse there: bracket 1 pauses it now
    assert opt.report(3, 2, {"loss": 0.3}) == "continue"
    assert opt.report(1, 2, {"loss": 0.6}) == "pause"
    assert opt.paused == (1, 2)
    for bad in (0, 9, True, 1.5):
        with pytest.raises(InvalidConfig, match="early_stopping.brackets"):
            create_optimizer(
                "random",
                mixed_space,
                [("loss", "minimize")],
                early_stopping={"kind": "asha", "brackets": bad},
            )
