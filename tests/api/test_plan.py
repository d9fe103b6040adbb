"""``POST /studies/plan`` (client ``plan_study``, CLI ``study plan``): what a study will cost
before it runs, through REST with the real peft workload. Computed from the spec (epochs per
trial and per baseline, the full trials a budget buys, the optimiser's initial design, predicted
memory of the cheapest and costliest config) and measured from the user's earlier trials of the
same setting (seconds per epoch), with warnings when the budget cannot reach the model."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import client_for, make_token, python_study
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def _spec(workload, **fields):
    return {
        "name": "planned",
        "space": "lora_per_layer",
        "objectives": OBJECTIVES,
        "workload": workload,
        **fields,
    }


def test_plan_before_and_after_measuring(sqlite_url, server_factory, tiny_model, small_csv, capsys):
    from autopeft.api.study import build_space, model_config_of
    from autopeft.peft.memory import predicted_memory_mb
    from autopeft.space.bounds import extreme_configs

    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    workload = tiny_peft_workload(tiny_model, small_csv, epochs=2)

    plan = client.plan_study(spec=_spec(workload, max_trials=40, max_epochs=9))
    assert client.studies() == []  # nothing stored
    assert plan["optimizer"] == "mobo" and plan["epochs_per_trial"] == 2
    assert [b["name"] for b in plan["baselines"]] == ["linear_probe"]
    probe = plan["baselines"][0]["epochs"]
    assert 0 < probe < 1  # forward passes only
    assert plan["full_trials"] == int((9 - probe) // 2) == 4
    assert plan["initial_design"] == 5  # the default's n_initial
    assert plan["seconds_per_epoch"] is None and plan["estimated_seconds"] is None
    assert any("initial design of 5" in w and "n_initial" in w for w in plan["warnings"])
    # the memory range is the memory model's at the space's extremes
    spec = _spec(workload, max_trials=40)
    space = build_space({**spec, "num_layers": None})
    mbs = [
        predicted_memory_mb(c, model_config_of(str(tiny_model)), {**workload}, num_labels=2)
        for c in extreme_configs(space)
    ]
    assert plan["memory_mb"]["max"] > plan["memory_mb"]["min"] > 0
    assert plan["memory_mb"]["max"] == pytest.approx(max(mbs), rel=0.05)
    # the exact trainable range over the space: the cost model at its extremes
    from autopeft.api.study import num_labels_of
    from autopeft.space.bounds import trainable_range

    lo, hi = trainable_range(space, model_config_of(str(tiny_model)), num_labels_of(workload))
    assert plan["trainable_params"] == {"min": lo, "max": hi} and 0 <= lo < hi

    # a bigger budget reaches the model: no warning; a named optimiser's design is its own
    roomy = client.plan_study(spec=_spec(workload, max_trials=40, max_epochs=40))
    assert roomy["full_trials"] == int((40 - probe) // 2) and roomy["warnings"] == []
    tpe = client.plan_study(
        spec=_spec(workload, max_trials=8, optimizer={"name": "tpe", "options": {}})
    )
    assert tpe["initial_design"] == 10 and tpe["full_trials"] == 7
    assert any("n_startup_trials" in w for w in tpe["warnings"])

    # bad input: the same 4xx naming the field as creating the study
    r = httpx.post(
        f"{server.url}/api/v1/studies/plan",
        json=_spec({**workload, "epochs": -1}, max_trials=4),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    assert r.status_code == 422 and "epochs" in r.text

    # POST /studies?dry_run=true answers the same plan and stores nothing; without it, it creates
    dry = httpx.post(
        f"{server.url}/api/v1/studies",
        params={"dry_run": "true"},
        json=_spec(workload, max_trials=40, max_epochs=9),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    assert dry.status_code == 200 and dry.json() == plan, dry.text
    assert client.studies() == []
    bad = httpx.post(
        f"{server.url}/api/v1/studies",
        params={"dry_run": "true"},
        json=_spec({**workload, "epochs": -1}, max_trials=4),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    )
    assert bad.status_code == 422 and "epochs" in bad.text and client.studies() == []

    # after a study of the same setting ran, its speed is measured and the time estimated
    ran = client.create_study(
        spec=_spec(
            workload, max_trials=3, baselines=[], optimizer={"name": "random", "options": {}}
        )
    )
    ran.wait(timeout=600, poll=0.5, progress=False)
    assert ran.counts["complete"] == 3
    trials = ran.trials(state="complete")
    rates = sorted(
        (t["values"]["train_time_s"] + t["values"]["eval_time_s"]) / t["values"]["epochs_trained"]
        for t in trials
    )
    again = client.plan_study(spec=_spec(workload, max_trials=40, max_epochs=9, max_parallel=2))
    assert again["measured_trials"] == 3
    assert again["seconds_per_epoch"] == pytest.approx(rates[1])
    assert again["estimated_seconds"] == pytest.approx((probe + 4 * 2) * rates[1] / 2)
    # a time budget shorter than the estimate says how many trials fit in it
    short = client.plan_study(
        spec=_spec(workload, max_trials=40, max_epochs=9, max_seconds=rates[1] * 2.5)
    )
    assert short["full_trials"] < 4 and any("max_seconds" in w for w in short["warnings"])
    # another workload's speed is not this one's
    other = client.plan_study(spec=_spec({**workload, "max_length": 16}, max_trials=4))
    assert other["seconds_per_epoch"] is None

    # python workloads: budget and design only
    py = client.plan_study(spec=python_study(max_trials=6))
    assert py["epochs_per_trial"] is None and py["full_trials"] == 6 and py["memory_mb"] is None

    # the CLI prints the same plan
    from autopeft.cli import main

    path = tiny_model.parent / "plan.json"
    import json

    path.write_text(json.dumps(_spec(workload, max_trials=40, max_epochs=9)))
    capsys.readouterr()
    assert main(["study", "plan", str(path), "--url", server.url, "--token", token]) == 0
    out = capsys.readouterr().out
    assert "full search trials the budget buys: about 4" in out
    assert f"trainable parameters: {plan['trainable_params']['min']:,}-" in out
    assert "measured:" in out and "warning: the budget runs about 4 full trials" in out
