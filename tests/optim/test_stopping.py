"""ASHA and multi-objective ASHA decisions on hand-made rungs."""

from __future__ import annotations

import pytest

from autopeft import InvalidConfig
from autopeft.optim import create_optimizer
from autopeft.optim._stopping import make_stopper


def test_rungs():
    s = make_stopper({"kind": "asha", "min_step": 1, "reduction_factor": 3, "max_step": 27}, ["minimize"])
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
    s = make_stopper({"kind": "moasha", "reduction_factor": 2}, ["minimize", "minimize"])
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
        create_optimizer("random", mixed_space, [("loss", "minimize")], early_stopping={"kind": "asha",
                                                                                         "reduction_factor": 1})
    with pytest.raises(InvalidConfig, match="early_stopping.eta"):
        create_optimizer("random", mixed_space, [("loss", "minimize")], early_stopping={"kind": "asha", "eta": 3})
    with pytest.raises(InvalidConfig, match="early_stopping.kind"):
        create_optimizer("random", mixed_space, [("loss", "minimize")], early_stopping={"kind": "hyperband"})
