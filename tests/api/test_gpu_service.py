"""Acceptance of GPU placement through the service, with CUDA faked at the boundary only: the node's
inventory comes from ``AUTOPEFT_FAKE_GPUS`` (two 4 GiB GPUs) and a test hook in the trial processes
(``tests/fake_cuda/sitecustomize.py``) records what each attempt was given and makes the first attempt
of trial 0 raise ``torch.OutOfMemoryError``. The server, scheduler, executors (local and Ray), placement,
packing and retry are the real ones, and the trials run the real peft trainer (on the CPU: no CUDA)."""

from __future__ import annotations

import json
import os

import pytest

from tests.api.conftest import REPO, client_for, make_token
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_gpus_auto_places_trials_and_an_oom_trial_is_retried_alone(
    executor, sqlite_url, server_factory, tiny_model, small_csv, tmp_path
):
    if executor == "ray":
        pytest.importorskip("ray")
    hook = tmp_path / "hook"
    hook.mkdir()
    env = {
        "AUTOPEFT_FAKE_GPUS": "2x4GiB",
        "AUTOPEFT_TEST_OOM_DIR": str(hook),
        "AUTOPEFT_EXECUTOR": executor,
        "AUTOPEFT_WORKER_PYTHONPATH": os.pathsep.join(
            [str(REPO), str(REPO / "tests" / "fake_cuda")]
        ),
    }
    server = server_factory(sqlite_url, env=env)
    client = client_for(server, make_token(sqlite_url, "alice"))
    workload = tiny_peft_workload(tiny_model, small_csv, resources={"gpus": "auto"})
    study = client.create_study(
        spec={
            "name": "gpus",
            "space": "lora_per_layer",
            "objectives": OBJECTIVES,
            "optimizer": {"name": "random", "options": {}},
            "workload": workload,
            "max_trials": 3,
            "max_parallel": 2,
            "seed": 0,
            "baselines": [],
        }
    )
    study.wait(timeout=600, poll=0.5, progress=False)
    trials = {t["number"]: t for t in study.trials()}
    assert study.state == "finished" and study.counts["failed"] == 0, (
        study.data,
        server.log()[-3000:],
    )
    assert all(t["state"] == "complete" for t in trials.values()), trials
    assert trials[0]["attempts"] == 2 and all(
        trials[n]["attempts"] == 1 for n in (1, 2)
    )  # the OOM: not a failure
    placed = sorted(
        (json.loads(p.read_text()) for p in hook.glob("placed-*.json")), key=lambda r: r["at"]
    )
    by_trial: dict[int, list[dict]] = {}
    for rec in placed:
        by_trial.setdefault(rec["number"], []).append(rec)
    assert sorted(len(v) for v in by_trial.values()) == [1, 1, 2]
    for recs in by_trial.values():
        for rec in recs:
            assert rec["cuda_visible_devices"] in ("0", "1"), (
                rec
            )  # one GPU each, named to the trial
            assert rec["resources"]["gpus"] > 0
    first, retry = by_trial[0]
    assert 0 < first["resources"]["gpus"] < 1  # a predicted share, packed
    assert retry["resources"]["gpus"] == 1.0  # retried alone: a whole GPU
    assert all(0 < recs[0]["resources"]["gpus"] < 1 for n, recs in by_trial.items() if n != 0)
