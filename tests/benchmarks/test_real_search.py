"""The analysis of ``benchmarks/real_search.py``: hypervolume, the front selected on validation
and scored on test, HV against compute on either split, and the compute to reach a target."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "real_search.py"
spec = importlib.util.spec_from_file_location("real_search", PATH)
rs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rs)


def trial(n, val_acc, test_acc, params, epochs=2.0, state="complete"):
    return {
        "number": n,
        "state": state,
        "values": {"accuracy": val_acc, "trainable_params": params},
        "test_values": {"test_accuracy": test_acc} if test_acc is not None else None,
        "epochs_trained": epochs,
        "finished_at": f"2026-01-01T00:00:{n:02d}",
    }


def test_hypervolume_is_the_dominated_area_above_the_reference():
    # (acc 0.7 at 10 params) covers params 10..50 at +0.2; (0.8 at 50) covers 50..100 at +0.3
    assert rs.hypervolume([(0.7, 10), (0.8, 50)], 0.5, 100) == pytest.approx(0.2 * 40 + 0.3 * 50)
    # a dominated point adds nothing; points beyond the reference count for nothing
    assert rs.hypervolume([(0.7, 10), (0.6, 20), (0.8, 50)], 0.5, 100) == pytest.approx(23.0)
    assert rs.hypervolume([(0.4, 10), (0.9, 100)], 0.5, 100) == 0.0


def test_the_front_is_selected_on_validation_and_scored_on_test():
    trials = [
        trial(0, 0.70, 0.60, 10),  # best on validation at its cost, worse on test
        trial(1, 0.65, 0.75, 10),  # dominated on validation: not on the front whatever its test
        trial(2, 0.80, 0.78, 50),
        trial(3, 0.90, None, 40, epochs=0.5, state="pruned"),  # pruned: never on the front
    ]
    assert [t["number"] for t in rs.test_front(trials)] == [0, 2]
    s = rs.summarise({"trials": trials}, 0.5, 5000)  # reference at 2% of 5,000 params = 100
    assert s["front"] == [(0.60, 10.0), (0.78, 50.0)]
    assert s["hv_test"] == pytest.approx(0.1 * 40 + 0.28 * 50)
    assert s["hv_validation"] == pytest.approx(0.2 * 40 + 0.3 * 50)
    assert s["compute"] == pytest.approx(6.5)


def test_hv_against_compute_on_either_split_and_the_compute_to_reach_it():
    trials = [trial(0, 0.70, 0.60, 10), trial(1, 0.80, 0.78, 50), trial(2, 0.75, 0.90, 5)]
    grid = [2.0, 4.0, 6.0]
    test = rs.curve(trials, 0.5, 100, grid)
    val = rs.curve(trials, 0.5, 100, grid, "validation")
    # by 6 epochs trial 2 pushes trial 0 off the validation front; on test it is better than
    # trial 1 too, so it alone sets the test HV (0.90 over params 5..100)
    assert test == pytest.approx([0.1 * 90, 0.1 * 40 + 0.28 * 50, 0.4 * 95])
    assert val == pytest.approx([0.2 * 90, 0.2 * 40 + 0.3 * 50, 0.25 * 45 + 0.3 * 50])
    assert rs.compute_to_reach(test, grid, test[1]) == 4.0
    assert rs.compute_to_reach(test, grid, test[-1] + 1) is None


def test_extra_points_are_paired_with_full_fine_tuning_of_the_same_seed():
    def baseline(label, val_acc, test_acc, params):
        return {**trial(0, val_acc, test_acc, params), "kind": "baseline", "label": label}

    runs = {
        # seed 0: full fine-tuning ran in the same study
        "t/extra/0": {
            "trials": [
                baseline("full_finetune", 0.70, 0.72, 1000),
                baseline("mine", 0.71, 0.74, 10),
                baseline("big", 0.69, None, 20),  # never tested: left out
                {**trial(1, 0.9, None, 5), "kind": "search", "label": None},  # not a baseline
            ]
        },
        # seed 1: no full fine-tuning in the study; the hand-picked study's of that seed
        "t/extra/1": {"trials": [baseline("mine", 0.73, 0.70, 10)]},
        # seed 2: nothing to pair with
        "t/extra/2": {"trials": [baseline("mine", 0.60, 0.66, 10)]},
    }
    hand_by_seed = {("full_finetune", 1): {"accuracy": 0.71, "trainable_params": 1000}}
    out = rs.extra_points(runs, "t", 3, hand_by_seed, 1000)
    assert set(out) == {"full_finetune", "mine"}
    mine = out["mine"]
    assert mine["accuracy"] == pytest.approx((0.74 + 0.70 + 0.66) / 3)
    assert mine["validation_accuracy"] == pytest.approx((0.71 + 0.73 + 0.60) / 3)
    assert mine["pct"] == pytest.approx(1.0) and mine["seeds"] == 3
    assert mine["margins"][:2] == pytest.approx([0.02, -0.01]) and mine["margins"][2] is None
    assert mine["seeds_paired"] == 2 and mine["seeds_on_or_above"] == 1
    assert mine["margin_mean"] == pytest.approx(0.005)
    assert mine["margin_se"] == pytest.approx(0.03 / 2**0.5 / 2**0.5)
    assert out["full_finetune"]["margins"] == [0.0]
