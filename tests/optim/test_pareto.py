"""Pareto maths against hand-computed fronts, distances and volumes (minimisation form)."""

from __future__ import annotations

import numpy as np
import pytest

from autopeft.optim import pareto as P

STAIRS = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])


def test_hypervolume_2d_stairs():
    # (4-1)(4-3) + (4-2)(3-2) + (4-3)(2-1) = 3 + 2 + 1
    assert P.hypervolume(STAIRS, [4, 4]) == pytest.approx(6.0)


def test_hypervolume_ignores_dominated_and_out_of_reference_points():
    Y = np.vstack([STAIRS, [[3.0, 3.0], [5.0, 0.0], [4.0, 0.5], [2.0, 2.0]]])
    assert P.hypervolume(Y, [4, 4]) == pytest.approx(6.0)
    assert P.hypervolume(np.empty((0, 2)), [4, 4]) == 0.0
    assert P.hypervolume([[5.0, 5.0]], [4, 4]) == 0.0


def test_hypervolume_3d_by_slicing():
    assert P.hypervolume([[0, 0, 0]], [1, 2, 3]) == pytest.approx(6.0)
    # boxes 2x2x1 and 1x1x2 overlapping in [1,2]^3: 4 + 2 - 1
    assert P.hypervolume([[0, 0, 1], [1, 1, 0]], [2, 2, 2]) == pytest.approx(5.0)


def test_hypervolume_4d_uses_botorch_and_agrees_with_inclusion_exclusion():
    Y = [[0, 0.5, 0.5, 0.5], [0.5, 0, 0.5, 0.5]]
    # 0.125 + 0.125 - 0.5^4
    assert P.hypervolume(Y, [1, 1, 1, 1]) == pytest.approx(0.1875)


def test_hypervolume_3d_matches_botorch_on_random_points():
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    rng = np.random.default_rng(0)
    Y = rng.random((30, 3))
    ref = np.array([1.1, 1.1, 1.1])
    expected = Hypervolume(-torch.tensor(ref)).compute(-torch.tensor(Y[P.is_non_dominated(Y)]))
    assert P.hypervolume(Y, ref) == pytest.approx(float(expected))


def test_contributions():
    assert P.hypervolume_contributions(STAIRS, [4, 4]) == pytest.approx([1.0, 1.0, 1.0])
    Y = np.array([[1.0, 3.0], [2.0, 1.0], [3.0, 3.0]])
    # without (1,3): (4-2)(4-1)=6; total = 3*1 + 2*2 = 7 → 1; without (2,1): 3 → 4; (3,3) dominated
    assert P.hypervolume_contributions(Y, [4, 4]) == pytest.approx([1.0, 4.0, 0.0])


def test_non_dominated_sort_fronts():
    Y = np.array([[1, 1], [2, 2], [1, 3], [3, 3], [0, 5]], float)
    fronts = P.non_dominated_sort(Y)
    assert [sorted(f.tolist()) for f in fronts] == [[0, 4], [1, 2], [3]]
    assert P.pareto_ranks(Y).tolist() == [0, 1, 1, 2, 0]
    assert P.is_non_dominated(Y).tolist() == [True, False, False, False, True]


def test_duplicates_share_a_front_and_dedup_keeps_one():
    Y = np.array([[1, 1], [1, 1], [2, 0]], float)
    assert P.is_non_dominated(Y).tolist() == [True, True, True]
    assert P.is_non_dominated(Y, deduplicate=True).tolist() == [True, False, True]


def test_crowding_distance():
    Y = np.array([[0, 4], [1, 2], [2, 1], [4, 0]], float)
    d = P.crowding_distance(Y)
    assert np.isinf(d[0]) and np.isinf(d[3])
    assert d[1] == pytest.approx(2 / 4 + 3 / 4)
    assert d[2] == pytest.approx(3 / 4 + 2 / 4)


def test_rank_order_by_front_then_crowding_or_hv():
    Y = np.array([[3, 3], [0, 4], [1, 2], [2, 1.5], [4, 0]], float)
    order = P.rank_order(Y)
    assert set(order[:4].tolist()) == {1, 2, 3, 4} and order[-1] == 0
    assert set(order[:2].tolist()) == {1, 4}  # boundary points (inf crowding) first
    hv_order = P.rank_order(Y, "hv", ref_point=[5, 5])
    assert hv_order[-1] == 0


def test_reference_point_rule():
    Y = np.array([[0.0, 10.0], [2.0, 20.0]])
    assert P.reference_point(Y) == pytest.approx([2.2, 21.0])
    assert P.reference_point(np.array([[1.0, 5.0], [1.0, 6.0]])) == pytest.approx([1.1, 6.1])
    assert P.reference_point(Y, given=[9, 9]) == pytest.approx([9, 9])
    with pytest.raises(ValueError):
        P.reference_point(np.empty((0, 2)))


def test_acquisition_reference_rules():
    # a front of two points and one dominated point far out
    Y = np.array([[0.0, 1.0], [1.0, 0.0], [9.0, 9.0]])
    # front nadir (1, 1) + 10% of the observed range (9) / of the front's range (1) / all of it
    assert P.expanding_reference_point(Y) == pytest.approx([1.9, 1.9])
    assert P.front_reference_point(Y) == pytest.approx([1.1, 1.1])
    assert P.acquisition_reference_point(Y, "far", 0) == pytest.approx([2.0, 2.0])
    assert P.acquisition_reference_point(Y, "observed", 0) == pytest.approx([9.9, 9.9])
    turns = [P.acquisition_reference_point(Y, "cycle", n).tolist() for n in range(3)]
    assert turns == [pytest.approx(r) for r in ([1.9, 1.9], [1.9, 1.9], [2.0, 2.0])]
    listed = [P.acquisition_reference_point(Y, ["front", "alternate"], n) for n in range(4)]
    # a list is taken in turn, and a named sequence inside it by the same number
    assert [r.tolist() for r in listed] == [
        pytest.approx(r) for r in ([1.1, 1.1], [9.9, 9.9], [1.1, 1.1], [9.9, 9.9])
    ]


def test_to_minimization_negates_maximised_columns():
    Y = P.to_minimization([[0.9, 100.0]], ["maximize", "minimize"])
    assert Y.tolist() == [[-0.9, 100.0]]
    with pytest.raises(ValueError, match="direction"):
        P.to_minimization([[1.0]], ["up"])
    assert [P.minimization_sign(d) for d in P.DIRECTIONS] == [1.0, -1.0]


def test_optimizer_hypervolume_uses_user_values(mixed_space):
    from autopeft.optim import create_optimizer

    opt = create_optimizer("random", mixed_space, [("acc", "maximize"), ("cost", "minimize")])
    for acc, cost in [(0.9, 3.0), (0.8, 2.0), (0.7, 1.0), (0.6, 2.5)]:
        (s,) = opt.ask()
        opt.tell(s.id, {"acc": acc, "cost": cost})
    # in minimisation form: (-0.9,3), (-0.8,2), (-0.7,1) vs ref (-0.5, 4) → same stairs as above, scaled
    assert opt.hypervolume([0.5, 4.0]) == pytest.approx(0.4 * 1 + 0.3 * 1 + 0.2 * 1)
    assert {t.id for t in opt.pareto()} == {0, 1, 2}
