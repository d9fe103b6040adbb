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
