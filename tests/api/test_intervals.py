"""The 95% intervals /pareto gives a front point's share objectives (accuracy, exact_match)."""

from __future__ import annotations

import pytest

from autopeft.api.services.front import intervals, wilson


@pytest.mark.parametrize(
    "p,n,low,high",
    [
        (0.5, 100, 0.4038, 0.5962),  # textbook values of the Wilson score interval
        (0.0, 10, 0.0, 0.2775),  # keeps its width at 0 and 1, where p +- 1.96 se collapses
        (1.0, 10, 0.7225, 1.0),
        (0.7, 500, 0.6584, 0.7385),  # worked by hand
    ],
)
def test_wilson_interval(p, n, low, high):
    assert wilson(p, n) == pytest.approx((low, high), abs=1e-4)


def test_intervals_only_for_shares_with_a_known_count():
    values = {"accuracy": 0.75, "exact_match": 0.25, "loss": 0.4, "trainable_params": 1e5}
    names = ["accuracy", "exact_match", "loss", "trainable_params"]
    out = intervals(values, 40.0, names)
    assert set(out) == {"accuracy", "exact_match"}
    assert out["accuracy"]["examples"] == 40
    assert (out["accuracy"]["low"], out["accuracy"]["high"]) == pytest.approx(wilson(0.75, 40))
    # fewer examples: a wider interval around the same value
    narrow, wide = intervals(values, 400, names)["accuracy"], out["accuracy"]
    assert wide["low"] < narrow["low"] < 0.75 < narrow["high"] < wide["high"]
    # no count (an older trial), no value, a value that is not a share: no interval
    assert intervals(values, None, names) == {} and intervals(values, 0, names) == {}
    assert intervals(None, 40, names) == {} and intervals({"accuracy": None}, 40, names) == {}
    assert intervals({"accuracy": 1.5}, 40, ["accuracy"]) == {}
    assert intervals(values, 40, ["trainable_params"]) == {}  # only the study's objectives
