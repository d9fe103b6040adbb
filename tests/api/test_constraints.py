"""Constraints as part of the study, through the real server: feasibility stored per trial when it
ends (REST trial JSON, the listing), infeasible trials never on ``/pareto`` (validation and test)
nor in ``/hypervolume``, the client and the CLI; constraints that could never be evaluated are a 422
naming the field."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np

from autopeft.optim import pareto as pm
from tests.api import test_peft_search
from tests.api.conftest import REPO, client_for, make_token, post_study, python_study
from tests.api.test_peft_search import _spec

peft_workload = test_peft_search.peft_workload  # the tiny-BERT workload fixture, shared

BOUND = 0.3  # cost >= 0.3: the cheapest trials (always on the unconstrained front) are infeasible


def _front(values: list[dict]) -> list[int]:
    """Indices of the non-dominated rows (accuracy max, cost min)."""
    Y = pm.to_minimization(
        np.array([[v["accuracy"], v["cost"]] for v in values]), ["maximize", "minimize"]
    )
    return [i for i, keep in enumerate(pm.is_non_dominated(Y)) if keep]


def test_infeasible_trials_are_stored_and_never_on_the_front(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    spec = python_study(
        max_trials=10,
        optimizer={
            "name": "random",
            "options": {"constraints": [{"metric": "cost", "op": ">=", "bound": BOUND}]},
        },
    )
    study = client.create_study(spec=spec).wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 10, study.data
    trials = study.trials()
    for t in trials:  # the verdict of each trial, from its own values, with the reason
        ok = t["values"]["cost"] >= BOUND
        assert t["feasible"] is ok, t
        assert (
            (t["infeasible_reason"] is None)
            if ok
            else ("cost = " in t["infeasible_reason"] and f">= {BOUND:g}" in t["infeasible_reason"])
        )
        assert (
            client.trial(t["id"])["feasible"] is ok
        )  # the trial route says the same as the listing
    infeasible = [t for t in trials if not t["feasible"]]
    feasible = [t for t in trials if t["feasible"]]
    # the run is strong enough: an infeasible trial would be on the front without the constraint
    unconstrained = {trials[i]["id"] for i in _front([t["values"] for t in trials])}
    assert unconstrained & {t["id"] for t in infeasible}
    expected = {feasible[i]["id"] for i in _front([t["values"] for t in feasible])}
    for split in ("validation", "test"):
        body = client._json("GET", f"/api/v1/studies/{study.id}/pareto", params={"split": split})
        assert {t["id"] for t in body["trials"]} == expected and body["n_infeasible"] == len(
            infeasible
        )
        assert all(t["feasible"] for t in body["trials"])
    assert {t["id"] for t in study.pareto()} == expected
    hv = client._json("GET", f"/api/v1/studies/{study.id}/hypervolume")
    assert hv["n_complete"] == len(feasible) and hv["n_infeasible"] == len(infeasible)
    Y = pm.to_minimization(
        np.array([[t["values"]["accuracy"], t["values"]["cost"]] for t in feasible]),
        ["maximize", "minimize"],
    )
    assert abs(hv["hypervolume"] - pm.hypervolume(Y, pm.reference_point(Y))) < 1e-12
    df = study.to_dataframe()
    assert sorted(df.loc[~df["feasible"], "id"]) == sorted(t["id"] for t in infeasible)
    # the CLI's front and its count of infeasible trials
    env = {
        "AUTOPEFT_URL": server.url,
        "AUTOPEFT_TOKEN": client._http.headers["Authorization"].split()[1],
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "study", "show", str(study.id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    table, _, rest = out.stdout.partition(f"\n\n{len(infeasible)} infeasible trial(s)")
    rows = table.split("\n")
    first = next(i for i, line in enumerate(rows) if line.startswith("---")) + 1
    assert {int(line.split()[0]) for line in rows[first:]} == expected, out.stdout
    for t in infeasible:
        assert f"trial {t['id']} (#{t['number']}): {t['infeasible_reason']}" in rest, out.stdout


def test_constraints_that_could_never_be_evaluated_are_refused(
    sqlite_url, server_factory, peft_workload
):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    cases = [
        (
            {"constraints": [["trainable_params", "<=", 1e6], ["latency", "<=", 3]]},
            "optimizer.options.constraints.1.metric",
        ),
        ({"constraints": [["trainable_params", "<<", 1e6]]}, "optimizer.options.constraints"),
        ({"constraints": "trainable_params <= 1e6"}, "optimizer.options.constraints"),
    ]
    for options, field in cases:
        r = post_study(
            server, token, _spec(peft_workload, optimizer={"name": "random", "options": options})
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (field, r.text)
    ok = post_study(
        server,
        token,
        _spec(
            peft_workload,
            max_trials=2,
            baselines=[],
            optimizer={
                "name": "random",
                "options": {
                    "constraints": [["trainable_params", "<=", 1e6], ["peak_memory_mb", "<=", 1e5]]
                },
            },
        ),
    )
    assert ok.status_code == 201, ok.text
    httpx.post(
        f"{server.url}/api/v1/studies/{ok.json()['id']}/stop",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
        timeout=60,
    )
