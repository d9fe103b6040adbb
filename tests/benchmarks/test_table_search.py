"""The analysis of ``benchmarks/table_search.py`` on the committed tweets table: the demo's
criterion (a searched point as accurate as LoRA r8 at half its parameters) valued on true values,
and the goal lines it and the promotions goal print."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH / "peft_table"))
sys.path.insert(0, str(BENCH))

ts = pytest.importorskip("table_search")


@pytest.fixture(scope="module")
def tweets():
    return ts._table("tweets")


def _row(table, cid, report=None):
    c = table.candidates[cid]
    report = c.reports if report is None else report
    return [cid, report, 0.7, c.truth(report)]


def test_half_cost_match_wants_a_searched_point_near_lora_r8_at_half_its_params(tweets):
    r8 = tweets.candidates["lora_r8"]
    target = r8.truth(r8.reports) - ts.MATCH_GAP
    small_good = [
        cid
        for cid, c in tweets.candidates.items()
        if c.kind == "sobol" and c.params <= r8.params / 2 and c.truth(c.reports) >= target
    ]
    small_poor = [
        cid
        for cid, c in tweets.candidates.items()
        if c.kind == "sobol" and c.params <= r8.params / 2 and c.truth(c.reports) < target
    ]
    big_good = [
        cid
        for cid, c in tweets.candidates.items()
        if c.kind == "sobol" and c.params > r8.params / 2 and c.truth(c.reports) >= target
    ]
    assert small_good and small_poor and big_good  # the table holds each kind
    probe = _row(tweets, "linear_probe")
    assert ts.half_cost_match(tweets, [probe, _row(tweets, small_good[0])])
    assert not ts.half_cost_match(tweets, [probe, _row(tweets, small_poor[0])])
    assert not ts.half_cost_match(tweets, [probe, _row(tweets, big_good[0])])
    # a baseline never counts as found, however cheap and accurate
    assert not ts.half_cost_match(tweets, [probe, _row(tweets, "lora_r8")])
    # valued at the report the trial reached: a good config stopped at its first report may not
    first = _row(tweets, small_good[0], report=1)
    assert ts.half_cost_match(tweets, [first]) == (first[3] >= target - 1e-12)


def _rows(method, budget, fronts, hvs, curves):
    return [
        {
            "task": "tweets",
            "method": method,
            "budget": budget,
            "rep": i,
            "hv_true": hv,
            "hv_seen": hv,
            "compute": budget,
            "reach": math.inf,
            "dominates_handpicked": False,
            "handpicked_dominated": 0,
            "front": front,
            "curve": curve,
        }
        for i, (front, hv, curve) in enumerate(zip(fronts, hvs, curves))
    ]


def test_goal_lines_for_the_demo_criterion_and_promotions(tweets):
    r8 = tweets.candidates["lora_r8"]
    good = next(
        cid
        for cid, c in tweets.candidates.items()
        if c.kind == "sobol"
        and c.params <= r8.params / 2
        and c.truth(c.reports) >= r8.truth(r8.reports) - ts.MATCH_GAP
    )
    hit, miss = [_row(tweets, good)], [_row(tweets, "linear_probe")]
    flat = [[1.0, 100.0], [48.0, 100.0]]
    # the default (MO-ASHA with promotions) reaches the no-stopping method's mean HV (100, at 40
    # epochs) at 20 epochs (<= 60%) in two of three repetitions
    rows = (
        _rows(
            "default",
            48,
            [hit, hit, miss],
            [100.0, 100.0, 90.0],
            [[[20.0, 100.0]], [[20.0, 100.0]], [[45.0, 90.0]]],
        )
        + _rows("random", 48, [hit, miss, miss], [100.0, 95.0, 90.0], [flat] * 3)
        + _rows(ts.NO_STOPPING, 48, [miss] * 3, [100.0] * 3, [[[40.0, 100.0]]] * 3)
    )
    summary = ts.summarise(rows, ["tweets"], [48])
    methods = summary["tweets"]["methods"]
    assert methods["default"]["48"]["half_cost_share"] == pytest.approx(2 / 3)
    assert methods["random"]["48"]["half_cost_share"] == pytest.approx(1 / 3)
    assert methods["default"]["48"]["reach_no_stopping_median"] == 20.0
    assert methods[ts.NO_STOPPING]["48"]["reach_no_stopping_median"] == 40.0
    lines = ts.goals(summary, ["tweets"], [48])
    demo = next(line for line in lines if "the demo's criterion" in line)
    assert ": met (default 67%; best other random 33%)" in demo
    prom = next(line for line in lines if "MO-ASHA with promotions" in line)
    assert f": met (default 20, {ts.NO_STOPPING} 40 epochs)" in prom

    # the other way round: random finds it more often, promotions need more than 60%
    rows = (
        _rows("default", 48, [miss] * 3, [100.0] * 3, [[[30.0, 100.0]]] * 3)
        + _rows("random", 48, [hit] * 3, [100.0] * 3, [flat] * 3)
        + _rows(ts.NO_STOPPING, 48, [miss] * 3, [100.0] * 3, [[[40.0, 100.0]]] * 3)
    )
    lines = ts.goals(ts.summarise(rows, ["tweets"], [48]), ["tweets"], [48])
    assert any("the demo's criterion" in line and ": not met (default 0%" in line for line in lines)
    assert any(
        "promotions" in line and f": not met (default 30, {ts.NO_STOPPING} 40" in line
        for line in lines
    )

    # neither reaches the no-stopping method's mean HV (100) in most repetitions: not met
    rows = _rows("default", 48, [miss] * 3, [90.0] * 3, [[[10.0, 90.0]]] * 3) + _rows(
        ts.NO_STOPPING,
        48,
        [miss] * 3,
        [90.0, 90.0, 120.0],
        [[[40.0, 90.0]]] * 2 + [[[40.0, 120.0]]],
    )
    summary = ts.summarise(rows, ["tweets"], [48])
    assert summary["tweets"]["methods"]["default"]["48"]["reach_no_stopping_median"] == math.inf
    lines = ts.goals(summary, ["tweets"], [48])
    assert any(
        "promotions" in line and f": not met (default inf, {ts.NO_STOPPING} inf" in line
        for line in lines
    )


def test_a_merged_summary_keeps_the_earlier_methods_and_their_no_stopping_target(tweets):
    """``--merge``: a run of one new method adds it beside the methods summarised before (which
    stay as they were), and the promotions target comes from the earlier no-stopping method."""
    miss = [_row(tweets, "linear_probe")]
    earlier = ts.summarise(
        _rows("default", 48, [miss] * 2, [90.0, 92.0], [[[30.0, 90.0]]] * 2)
        + _rows(ts.NO_STOPPING, 48, [miss] * 2, [100.0] * 2, [[[40.0, 100.0]]] * 2),
        ["tweets"],
        [48],
    )
    new = _rows("portfolio4", 48, [miss] * 2, [100.0, 104.0], [[[10.0, 100.0]], [[50.0, 104.0]]])
    merged = ts.summarise(new, ["tweets"], [48], prior=earlier)["tweets"]["methods"]
    assert set(merged) == {"default", ts.NO_STOPPING, "portfolio4"}
    assert merged["default"] == earlier["tweets"]["methods"]["default"]
    assert merged["portfolio4"]["48"]["hv_true"] == [100.0, 104.0]
    # the no-stopping mean (100) reached at 10 and 50 epochs: the median of two is the upper
    assert merged["portfolio4"]["48"]["reach_no_stopping_median"] == 50.0
    alone = ts.summarise(new, ["tweets"], [48])["tweets"]["methods"]
    assert (
        set(alone) == {"portfolio4"}
        and alone["portfolio4"]["48"]["reach_no_stopping_median"] is None
    )


def test_the_head_alone_maps_to_its_recorded_runs_and_only_it_does(tweets):
    """An adapter-free ask runs the table's adapter-free candidates (the head trained as a search
    trial), so a replayed study pays what a live one pays for it; an ask with LoRA anywhere never
    lands on them."""
    from replay import Method, replay
    from table import adapter_free

    zeros = [cid for cid, c in tweets.candidates.items() if c.kind == "zero"]
    assert len(zeros) >= 2
    space = tweets.load_space()
    ranks = [p.name for p in space.params if p.name.startswith("lora.rank.")]
    zero = space.validate({**space.default_config(), **dict.fromkeys(ranks, 0), "lr": 1e-2})
    first = tweets.nearest(zero)
    assert first in zeros
    assert tweets.nearest(zero, {first}) in zeros and tweets.nearest(zero, {first}) != first
    assert tweets.nearest(zero, set(zeros)) in zeros  # all run: one of them again (next seed)
    for i in range(len(ranks)):
        one = space.validate({**zero, ranks[i]: 2})
        assert not adapter_free(one) and tweets.nearest(one) not in zeros
    # no better than the probe at the same parameters: the head alone adds nothing to a front
    probe = tweets.candidates["linear_probe"]
    for cid in zeros:
        c = tweets.candidates[cid]
        assert c.params == probe.params and c.truth(c.reports) <= probe.truth(probe.reports)
    # the fingerprint of the table the cache's rows were replayed on changes with its candidates
    assert tweets.fingerprint != ts.FIRST_TABLE["tweets"]
    # the service keeps the head alone out of the default's asks; before, it asked it
    method = Method("x", exclude_adapter_free=False)
    asked = [replay(tweets, m, rep, 16).zero_asks for m in (method, Method("y")) for rep in (0, 1)]
    assert sum(asked[:2]) > 0 and sum(asked[2:]) == 0


def test_asks_past_the_table_are_counted(tweets):
    """When a study has run every candidate an ask could map to, the ask runs one of them again
    (a live study would have trained a new config): the replay counts such asks, so a budget the
    table is too small for shows in the report instead of passing for search."""
    import dataclasses

    from replay import Method, replay

    keep = ["linear_probe", *[f"sobol-{i:03d}" for i in range(6)]]
    small = dataclasses.replace(
        tweets,
        candidates={c: tweets.candidates[c] for c in keep},
        search_ids=[c for c in tweets.search_ids if c in keep],
        _X=None,
    )
    for table, budget in ((small, 24), (tweets, 12)):
        r = replay(table, Method("default"), 0, budget)
        searched = [e.cid for e in r.ended if e.kind == "search"]
        assert len(searched) == r.asks
        assert r.repeat_asks == len(searched) - len(set(searched))
        row = ts.score(table, r)
        assert row["repeat_asks"] == r.repeat_asks
    assert ts.score(small, replay(small, Method("default"), 0, 24))["repeat_asks"] > 0
    assert r.repeat_asks == 0  # 12 epochs on the whole table: every ask ran a new candidate


def test_goal_lines_say_which_rivals_ran_on_an_earlier_table_and_ran_out_of_it(tweets, capsys):
    """Rows carry the table they were replayed on: a rival whose rows are of an earlier version
    of the table is named as such beside the HV goal, and so are asks past the table; a merge that
    replays one task keeps the other tasks' summaries."""
    miss = [_row(tweets, "linear_probe")]
    flat = [[[48.0, 100.0]]] * 2
    rows = _rows("default", 48, [miss] * 2, [100.0] * 2, flat) + _rows(
        "random", 48, [miss] * 2, [101.0, 99.0], flat
    )
    for r in rows:
        r["table"] = tweets.fingerprint
        r["repeat_asks"] = 3 if r["method"] == "default" else 0
    old = _rows("tpe", 48, [miss] * 2, [100.0] * 2, flat)  # no fingerprint: the first table
    summary = ts.summarise(rows + old, ["tweets"], [48])
    methods = summary["tweets"]["methods"]
    assert methods["default"]["48"]["table"] == tweets.fingerprint
    assert methods["tpe"]["48"]["table"] == ts.FIRST_TABLE["tweets"]
    assert methods["default"]["48"]["repeat_asks_mean"] == 3.0
    assert methods["tpe"]["48"]["repeat_asks_mean"] is None  # replayed before they were counted
    hv = next(line for line in ts.goals(summary, ["tweets"], [48]) if "true HV at 48" in line)
    assert ": met (default 100" in hv
    assert "asks past the table per study: default 3.0" in hv
    assert "replayed on an earlier table: tpe" in hv and "random" not in hv.split("earlier")[1]
    ts.print_table(summary, ["tweets"], [48])
    printed = capsys.readouterr().out
    assert "| tpe (earlier table) |" in printed and "| random |" in printed
    assert printed.splitlines()[4].endswith("| 3.0 |")  # the default's asks past the table
    other = {"bbc_news": {"best_hv": 1.0, "methods": {}}}
    merged = ts.summarise(rows, ["tweets"], [48], prior={**summary, **other})
    assert merged["bbc_news"] == other["bbc_news"] and "tpe" in merged["tweets"]["methods"]
