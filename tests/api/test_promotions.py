"""ASHA with promotions through the service, on the real peft workload (issue 30): a trial paused
at a rung is resumed from its rung checkpoint once later trials make it one of the best there, and
trains only the steps after the rung; one never promoted ends pruned where it waited."""

from __future__ import annotations

import pytest

from tests.api.conftest import client_for, make_token
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def _workload(model, data) -> dict:
    # 180 rows: 36 validation, 18 test, 126 train; batch 32 -> 4 steps an epoch; 2 reports an epoch
    return tiny_peft_workload(model, data, epochs=2, evals_per_epoch=2, lr=5e-3)


def _spec(workload, **fields) -> dict:
    spec = {
        "name": "promotions",
        "space": "lora_per_layer",
        "objectives": OBJECTIVES,
        "workload": workload,
        "baselines": [],
        "max_parallel": 1,
        "seed": 0,
    }
    spec.update(fields)
    return spec


def test_a_paused_trial_is_promoted_and_resumes_from_its_rung(
    sqlite_url, server_factory, tiny_model, small_csv
):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    workload = _workload(tiny_model, small_csv)
    ranks = [2, 4, 8, 16]  # asked in this order; ASHA ranks on trainable_params (known exactly)
    configs = [{"lora.rank.0": r, "lora.rank.1": r, "lr": 5e-3} for r in ranks]
    study = client.create_study(
        spec=_spec(
            workload,
            max_trials=4,
            optimizer={
                "name": "random",
                "options": {
                    "warm_start": configs,
                    # one rung, at step 2 (of 4): keep the best half by parameters
                    "early_stopping": {
                        "kind": "asha",
                        "metric": 1,
                        "min_step": 2,
                        "reduction_factor": 2,
                        "promotions": True,
                    },
                },
            },
        )
    )
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished", study.data
    trials = {t["config"]["lora.rank.0"]: t for t in study.trials()}
    steps = {r: [x["step"] for x in client.reports(t["id"])] for r, t in trials.items()}
    # rank 2: alone at the rung, straight on; rank 4: 2nd of 2, paused at step 2; promoted when
    # rank 16 made it 2nd of 4, resumed from its step-2 checkpoint: steps 3 and 4 only, no rerun
    assert trials[2]["state"] == "complete" and steps[2] == [1, 2, 3, 4]
    assert trials[4]["state"] == "complete" and steps[4] == [1, 2, 3, 4], steps
    assert trials[4]["attempts"] == 2 and trials[4]["epochs_trained"] == pytest.approx(2.0)
    # ranks 8 and 16 waited at the rung and were never promoted: pruned where they waited
    for r in (8, 16):
        assert trials[r]["state"] == "pruned" and steps[r] == [1, 2], (r, trials[r])
        assert trials[r]["epochs_trained"] == pytest.approx(1.0)
        assert "promoted" in trials[r]["error"]
    # the resumed trial ends exactly where one trained straight through ends (same seed)
    straight = client.create_study(
        spec=_spec(
            workload,
            name="straight",
            max_trials=2,
            optimizer={"name": "random", "options": {"warm_start": configs[1:2]}},
        )
    )
    straight.wait(timeout=600, poll=0.5, progress=False)
    same = next(t for t in straight.trials() if t["config"]["lora.rank.0"] == 4)
    for key in ("accuracy", "loss", "train_loss"):
        assert trials[4]["values"][key] == pytest.approx(same["values"][key], rel=1e-6), key
