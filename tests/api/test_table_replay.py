"""The real-run table and its replay (issue 30): a table recorded with the service's own trainer,
looked up for a live study's trials, gives what the live study measured; the replay of that
study's spec makes the live study's decisions (which trials MO-ASHA stopped, where) and sees its
values; the replay's noise draws and scoring behave as documented."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.api.conftest import client_for, make_token
from tests.conftest import tiny_peft_workload

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH / "peft_table"))
sys.path.insert(0, str(BENCH))

RANKS = [(2, 8e-3), (8, 2e-3), (4, 4e-3), (16, 1e-3)]


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory, tiny_model, small_csv):
    """A recorded table of a tiny task: the linear probe and four LoRA configs, seed 0."""
    from build import record

    workload = tiny_peft_workload(tiny_model, small_csv, epochs=2, evals_per_epoch=2)
    configs = [{"lora.rank.0": r, "lora.rank.1": r, "lr": lr} for r, lr in RANKS]
    from autopeft import load_space
    from autopeft.models import load_model_config

    space = load_space("lora_per_layer", model_config=load_model_config(str(tiny_model)))
    cands = [
        {
            "id": "linear_probe",
            "kind": "baseline",
            "config": {},
            "workload": {**workload, "linear_probe": True},
        },
        *(
            {"id": f"c{i}", "kind": "sobol", "config": space.validate(c), "workload": workload}
            for i, c in enumerate(configs)
        ),
    ]
    data = tmp_path_factory.mktemp("table")
    record("tiny", workload, cands, [0], workers=1, data=data)
    return data, workload, configs


def test_a_live_study_replays_exactly(tiny_task, sqlite_url, server_factory):
    from replay import Method, raw_spec, replay
    from table import Table

    data, workload, configs = tiny_task
    table = Table.load("tiny", data=data)
    assert set(table.candidates) == {"linear_probe", "c0", "c1", "c2", "c3"}
    method = Method(
        "faithful",
        {
            "name": "random",
            "options": {"warm_start": configs, "early_stopping": {"kind": "moasha"}},
        },
        extra={"max_trials": 5, "max_parallel": 1},
    )
    raw = raw_spec(table, method, rep=0, budget=100)
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(spec=raw)
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished", study.data
    live = sorted(study.trials(), key=lambda t: t["number"])
    # every live trial looked up in the table: the same validation accuracy at every report
    for t in live:
        cid = "linear_probe" if t["kind"] == "baseline" else table.nearest(t["config"])
        cand = table.candidates[cid]
        reports = client.reports(t["id"])
        assert [r["step"] for r in reports] == list(range(1, len(reports) + 1))
        for r in reports:
            seen = table.observed(cid, 0, r["step"], np.arange(table.n_val))
            assert r["values"]["accuracy"] == pytest.approx(seen, abs=1e-9), (cid, r)
        assert t["values"]["trainable_params"] == cand.params
    # the replay of the same spec, without its noise, makes the live study's decisions
    result = replay(table, method, 0, 100, exact=True)
    assert [(e.kind, e.state, e.report) for e in result.ended] == [
        (t["kind"], t["state"], len(client.reports(t["id"]))) for t in live
    ]
    for e, t in zip(result.ended, live):
        assert e.accuracy == pytest.approx(t["values"]["accuracy"], abs=1e-9)
        assert e.epochs == pytest.approx(t["epochs_trained"])


def test_noise_draws_truth_and_scoring(tiny_task):
    from replay import Method, _base_params, _Noise, best_hv, replay
    from table import Table, hypervolume

    data, _, configs = tiny_task
    table = Table.load("tiny", data=data)
    # a repetition's validation set is a bootstrap of the recorded one, the same for every method
    a, b, c = _Noise(table, 1), _Noise(table, 1), _Noise(table, 2)
    assert (a.val_index == b.val_index).all() and not (a.val_index == c.val_index).all()
    assert len(a.val_index) == table.n_val and len(set(a.val_index)) < table.n_val
    # a second run of a candidate takes the next training seed
    first = a.next_seed("c0")
    assert a.next_seed("c0") == first + 1
    # the truth is the seed mean of test accuracy at the report reached
    c0 = table.candidates["c0"]
    assert c0.truth(2) == pytest.approx(c0.test_acc[:, 1].mean())
    assert c0.truth(99) == pytest.approx(c0.test_acc[:, -1].mean())
    # scoring: the curve's true HV is the selected front's, and never above the table's best
    method = Method("w", {"name": "random", "options": {"warm_start": configs}})
    result = replay(table, method, 3, 6)
    assert result.curve and all(hv <= best_hv(table) + 1e-9 for _, hv, _ in result.curve)
    front = result.front()
    assert front and all(e.state == "complete" for e in front)
    ref = table.reference(_base_params(table))
    truth = [(table.candidates[e.cid].truth(e.report), e.params) for e in front]
    assert math.isclose(result.curve[-1][1], hypervolume(truth, *ref))
