"""Acceptance of data-parallel trials (issue 34): a REST study with ``workload.resources.workers: 2``
on a three-node Ray cluster on 127.0.0.1 (``ray start``), the real controller (server process,
SQLite) and the real peft workload on a tiny BERT.

Every node offers one ``gang`` slot and every worker asks for one, so the two workers of a trial
run on two different nodes. Mid-trial, a worker node that holds one of them is killed as a machine
dies: SIGKILL to its raylet and, at the same instant, to the gang worker on it (a worker whose
raylet died lives on for seconds before it notices). The trial is retried on the two nodes left, from the
checkpoint its rank 0 shipped at its last report, and completes; the study finishes. Each
attempt reports each step once (rank 0 only), and the trial has one checkpoint folder.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]')")

from tests.api.conftest import client_for, make_token, wait_for
from tests.conftest import tiny_peft_workload
from tests.workers.cluster import LocalCluster, gang_nodes, gang_workers
from tests.workers.conftest import REPO

pytestmark = pytest.mark.slow

EPOCHS = 40


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="autopeft-dp-"))
    c = LocalCluster(root, env={"PYTHONPATH": str(REPO)})
    try:
        c.start_node("head", num_cpus=1, head=True, resources='{"gang": 1}')
        c.start_node("node2", num_cpus=1, resources='{"gang": 1}')
        c.start_node("node3", num_cpus=1, resources='{"gang": 1}')
        yield c
    finally:
        c.close()


def test_a_two_worker_study_survives_losing_a_worker_node(
    cluster, server_factory, sqlite_url, tiny_model, small_csv
):
    server = server_factory(
        sqlite_url,
        env={
            "AUTOPEFT_EXECUTOR": "ray",
            "AUTOPEFT_RAY_ADDRESS": cluster.address,
            **cluster.driver_env(),
        },
    )
    client = client_for(server, make_token(sqlite_url, "carol"))
    workload = tiny_peft_workload(
        tiny_model,
        small_csv,
        epochs=EPOCHS,
        evals_per_epoch=1,
        resources={"workers": 2, "cpus": 1, "custom": {"gang": 1}},
    )
    study = client.create_study(
        spec={
            "name": "gang",
            "space": {"peft": {"lora": {"rank": {"choices": [2, 4]}, "targets": "q,v"}}},
            "objectives": [
                {"name": "accuracy", "direction": "maximize"},
                {"name": "trainable_params", "direction": "minimize"},
            ],
            "workload": workload,
            "optimizer": {"name": "random"},
            "baselines": [],
            "max_trials": 2,
            "max_parallel": 1,
            "seed": 0,
        }
    )

    def first_trial_mid_way():
        trials = study.trials()
        if not trials or trials[0]["state"] != "running":
            return None
        steps = [r["step"] for r in client.reports(trials[0]["id"])]
        nodes = [n for n in gang_nodes() if n != "head"]
        return (trials[0], max(steps), nodes[0]) if len(steps) >= 3 and nodes else None

    trial, step_at_kill, victim = wait_for(first_trial_mid_way, 300, "the gang's third report", 0.5)
    assert len(gang_nodes()) == 2  # the trial runs as two workers
    cluster.kill_raylet(victim)
    for node, pid in gang_workers():
        if node == victim:
            os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished", study.data
    trials = {t["id"]: t for t in study.trials()}
    assert study.counts["complete"] == 2, (study.counts, [t.get("error") for t in trials.values()])

    victim_trial = trials[trial["id"]]
    assert victim_trial["attempts"] >= 2, victim_trial
    reports = client.reports(trial["id"])
    by_attempt: dict[int, list[int]] = {}
    for r in reports:
        by_attempt.setdefault(r["attempt"], []).append(r["step"])
    for attempt, steps in by_attempt.items():  # one voice: each step once per attempt
        assert len(steps) == len(set(steps)), (attempt, steps)
    last = max(by_attempt)
    assert by_attempt[last][-1] == EPOCHS  # the retry trained to the end
    # ... from the checkpoint of the first attempt (not from scratch)
    assert min(by_attempt[last]) > 1, (by_attempt, victim_trial, step_at_kill)
    assert min(by_attempt[last]) >= step_at_kill - 1, (step_at_kill, by_attempt)
    print(f"retried {time.monotonic() - killed_at:.0f} s after the kill: {by_attempt}")

    # one checkpoint folder per trial, with rank 0's files
    artifacts = Path(server.workdir) / "artifacts"
    ckpts = sorted(p.relative_to(artifacts) for p in artifacts.rglob("meta.json"))
    assert len(ckpts) == 2 and all(p.parent.name == "checkpoint" for p in ckpts), ckpts
    wait_for(lambda: not gang_nodes(), 60, "the gangs' workers to exit")
