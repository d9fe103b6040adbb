"""``benchmarks/peft_table/fidelity.py``: the rank statistics it scores cheap signals with, and
its comparison on the committed tweets runs at a third of the training data."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH / "peft_table"))

fid = pytest.importorskip("fidelity")
DATA = BENCH / "peft_table" / "data"


def test_rank_statistics_match_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 6, 25).astype(float)  # many ties, as accuracies on a finite split
        b = a + rng.normal(0, 2, 25)
        assert fid.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert fid.kendall(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert np.isnan(fid.spearman(np.ones(5), np.arange(5.0)))


def test_top_share_and_regret():
    truth = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert fid.top_share(truth, truth) == 1.0
    assert fid.top_share(-truth, truth) == 0.0
    # the best third is {0, 1}; a signal whose best two are {0, 2} keeps half of it
    assert fid.top_share(np.array([5, 1, 4, 0, 0, 0.0]), truth) == 0.5
    assert fid.regret(truth, truth) == 0.0
    assert fid.regret(np.array([0, 0, 0, 0, 0, 1.0]), truth) == pytest.approx(0.5)


def test_compare_scores_each_signal_on_the_committed_fraction_runs():
    if not (DATA / f"{fid.frac_task('tweets', fid.FRACTION)}.runs.jsonl").exists():
        pytest.skip("the fraction runs are not recorded")
    result = fid.compare("tweets", fid.FRACTION)
    sigs = result["signals"]
    names = list(sigs)
    assert names[0] == "data 0.33" and sigs[names[0]]["cost_epochs"] == pytest.approx(2 / 3)
    assert [sigs[n]["cost_epochs"] for n in names[1:]] == [0.5, 1.0, 1.5, 2.0]
    assert result["candidates"] >= 24
    for name, r in sigs.items():
        assert -1 <= r["spearman"] <= 1 and -1 <= r["kendall"] <= 1
        assert 0 <= r["top_third"] <= 1 and r["regret"] >= 0
        if name != names[0]:
            lo, hi = r["rho_minus_data_ci"]
            assert lo <= r["rho_minus_data"] <= hi
    # the last epoch's validation accuracy is the full run's own: it ranks the truth (the test
    # accuracy of that run and its other seeds) better than chance
    assert sigs["epoch 2"]["spearman"] > 0


def test_signals_refuse_runs_recorded_on_other_splits(tmp_path):
    low = fid.frac_task("tweets", fid.FRACTION)
    if not (DATA / f"{low}.runs.jsonl").exists():
        pytest.skip("the fraction runs are not recorded")
    for name in ("tweets.meta.json", "tweets.runs.jsonl", f"{low}.runs.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    meta = json.loads((DATA / f"{low}.meta.json").read_text())
    meta["val_index"] = meta["val_index"][::-1]
    (tmp_path / f"{low}.meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="other splits"):
        fid.signals("tweets", fid.FRACTION, tmp_path)


def _frac_recorded() -> bool:
    from table import Table

    low = fid.frac_task("tweets", fid.FRACTION)
    if not (DATA / f"{low}.runs.jsonl").exists():
        return False
    table, runs = Table.load("tweets"), Table.load(low)
    return all(c in runs.candidates for c in table.search_ids)


@pytest.mark.parametrize("budget", [12, 24])
def test_a_data_rung_trial_pays_the_fraction_then_the_whole_run(budget):
    """Behind a data rung a search trial trains a third of the data first (2/3 of an epoch,
    reported once as step 1); kept, it trains on all of it from the start; the study's compute is
    what its runs trained."""
    if not _frac_recorded():
        pytest.skip("the fraction runs do not cover every candidate a search can ask")
    sys.path.insert(0, str(BENCH))
    ts = pytest.importorskip("table_search")
    from replay import replay

    table = ts._table("tweets")
    method = ts.METHODS["default+data33"]
    low = 2.0 / 3.0
    full = float(table.candidates["lora_r8"].epochs[-1])
    seen = set()
    for rep in range(4):
        result = replay(table, method, rep, budget)
        search = [e for e in result.ended if e.kind == "search"]
        for e in search:
            if e.state == "complete":
                assert e.epochs == pytest.approx(low + full)
                seen.add("complete")
            elif e.report == 1 and e.epochs == pytest.approx(low):
                seen.add("stopped at the data rung")
            else:  # stopped (or left paused) at MO-ASHA's rung in the full run: 1 epoch in
                assert e.epochs == pytest.approx(low + 1.0)
                seen.add("stopped in the full run")
        assert result.spent == pytest.approx(sum(e.epochs for e in result.ended))
        # the same repetition without the rung: each trial trains the full run alone
        plain = replay(table, ts.METHODS["default"], rep, budget)
        assert all(e.epochs <= full + 1e-9 for e in plain.ended if e.kind == "search")
        assert plain.spent == pytest.approx(sum(e.epochs for e in plain.ended))
    assert seen >= {"complete", "stopped at the data rung"}
