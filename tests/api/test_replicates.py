"""Seed-aware fronts through REST with the real peft workload (issue 30): ``replicates: k``
re-trains the front's candidates with k - 1 more training seeds once the search ends; /pareto
selects and reports on the seed means, with intervals that hold the seed variance, and marks the
points that cannot be told apart from the best."""

from __future__ import annotations

import statistics

import httpx
import pytest

from tests.api.conftest import client_for, make_token, post_study, python_study
from tests.conftest import tiny_peft_workload

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "trainable_params", "direction": "minimize"},
]


def test_replicates_make_the_front_of_seed_means(sqlite_url, server_factory, tiny_model, small_csv):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    workload = tiny_peft_workload(tiny_model, small_csv, seed=5)
    configs = [
        {"lora.rank.0": 2, "lora.rank.1": 0, "lr": 8e-3},
        {"lora.rank.0": 8, "lora.rank.1": 8, "lr": 3e-3},
    ]
    study = client.create_study(
        spec={
            "name": "replicated",
            "space": "lora_per_layer",
            "objectives": OBJECTIVES,
            "workload": workload,
            "optimizer": {"name": "random", "options": {"warm_start": configs}},
            "baselines": ["linear_probe"],
            "max_trials": 3,
            "max_parallel": 2,
            "replicates": 3,
        }
    )
    study.wait(timeout=600, poll=0.5, progress=False)
    assert study.state == "finished", study.data
    trials = {t["id"]: t for t in study.trials()}
    replicates = [t for t in trials.values() if t["kind"] == "replicate"]
    assert replicates and all(t["state"] == "complete" for t in replicates)
    front = study.pareto()
    assert front
    for point in front:
        runs = point["seeds"]["trial_ids"]
        assert point["seeds"]["runs"] == 3 == len(runs) and runs[0] == point["id"]
        mine = [trials[i] for i in runs]
        # the other runs are replicates of this point, with the next training seeds
        assert all(t["kind"] == "replicate" and t["parent_id"] == point["id"] for t in mine[1:])
        seeds = sorted(t["config"].get("seed", workload["seed"]) for t in mine)
        assert seeds == [5, 6, 7] and all(t["label"] == point["label"] for t in mine)
        # its values are the seed means, its interval holds their spread, on both splits
        accs = [t["values"]["accuracy"] for t in mine]
        assert point["values"]["accuracy"] == pytest.approx(statistics.fmean(accs))
        spread = point["seeds"]["spread"]["accuracy"]
        assert spread["sd"] == pytest.approx(statistics.stdev(accs))
        low, high = point["intervals"]["accuracy"]["low"], point["intervals"]["accuracy"]["high"]
        assert low <= point["values"]["accuracy"] <= high
        assert isinstance(point["tied_with_best"], bool)
    best = max(front, key=lambda p: p["values"]["accuracy"])
    assert best["tied_with_best"] is True
    tested = client._json("GET", f"/api/v1/studies/{study.id}/pareto", params={"split": "test"})
    for point in tested["trials"]:
        runs = [trials[i] for i in point["seeds"]["trial_ids"]]
        assert all(t["test_values"] for t in runs), runs
        assert point["values"]["accuracy"] == pytest.approx(
            statistics.fmean(t["test_values"]["test_accuracy"] for t in runs)
        )
    # the front is the non-dominated set of the candidates' means (search and baseline alike)
    roots = [t for t in trials.values() if t["kind"] != "replicate" and t["state"] == "complete"]

    def mean_acc(root):
        runs = [root, *(t for t in replicates if t["parent_id"] == root["id"])]
        return statistics.fmean(t["values"]["accuracy"] for t in runs)

    points = {r["id"]: (mean_acc(r), r["values"]["trainable_params"]) for r in roots}
    expected = {
        i
        for i, (a, p) in points.items()
        if not any(b >= a and q <= p and (b > a or q < p) for j, (b, q) in points.items() if j != i)
    }
    assert {p["id"] for p in front} == expected
    from autopeft.cli.study import pareto_table

    table = pareto_table(study)  # the CLI: runs per point and the points tied with the best
    assert "runs" in table and "~best" in table and "yes" in table, table
    # the search's budget is its own: replicates ran beyond max_trials
    assert len(trials) > 3
    # a python workload has no training seed to replicate with
    answer = post_study(server, token, python_study(replicates=2))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "replicates"
    assert httpx.get(server.url + "/healthz", trust_env=False).status_code == 200
