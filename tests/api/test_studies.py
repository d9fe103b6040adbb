"""A study's life through the real server, on SQLite and PostgreSQL: create, run to the end,
incremental listing, reports, Pareto front, hypervolume, export, stop / resume, time budget,
failures with their reasons, delete; and the whole spec validated before 201."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from autopeft.client import ApiError
from tests.api.conftest import REPO, client_for, make_token, python_study, wait_for


def _dominates(a, b):  # (accuracy max, cost min)
    return (
        a["accuracy"] >= b["accuracy"]
        and a["cost"] <= b["cost"]
        and (a["accuracy"] > b["accuracy"] or a["cost"] < b["cost"])
    )


def test_study_runs_to_the_end(db_url, server_factory, tmp_path):
    server = server_factory(db_url)
    client = client_for(server, make_token(db_url, "alice"))
    study = client.create_study(
        spec=python_study(
            "tests.api.workloads:with_checkpoint", max_trials=6, max_parallel=2, name="life"
        )
    )
    assert study.state == "running" and study.spec["workload"]["entrypoint"].endswith(
        "with_checkpoint"
    )
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    assert study.counts["complete"] == 6 and sum(study.counts.values()) == 6
    trials = study.trials()
    assert sorted(t["number"] for t in trials) == list(range(6))
    assert all(t["attempts"] == 1 and t["values"]["cost"] >= 0 for t in trials)
    # incremental listing
    first = trials[0]["id"]
    assert [t["id"] for t in study.trials(after=first)] == [t["id"] for t in trials[1:]]
    page = client._json(
        "GET", f"/api/v1/studies/{study.id}/trials", params={"after": trials[-1]["id"]}
    )
    assert page == {"trials": [], "next_after": trials[-1]["id"]}
    # reports
    assert [r["step"] for r in client.reports(first)] == [0]
    # Pareto front: non-dominated, and every other complete trial is dominated by one of it
    front = study.pareto()
    values = {t["id"]: t["values"] for t in trials}
    front_ids = {t["id"] for t in front}
    for t in front:
        assert not any(_dominates(values[o], t["values"]) for o in values)
    for tid, v in values.items():
        if tid not in front_ids:
            assert any(_dominates(values[f], v) for f in front_ids)
    assert study.hypervolume() > 0
    df = study.to_dataframe()
    assert len(df) == 6 and {"values.accuracy", "config.x"} <= set(df.columns)
    # export the most accurate trial's adapter
    best = max(front, key=lambda t: t["values"]["accuracy"])
    out = study.export(best["id"], tmp_path / "adapter")
    assert (out / "weights.bin").read_bytes() == bytes(range(256))
    study.delete()
    with pytest.raises(ApiError) as err:
        study.refresh()
    assert err.value.status == 404


def test_listing_matches_the_schema_and_nan_is_null(db_url, server_factory):
    from autopeft.api.schemas import TrialList

    server = server_factory(db_url)
    client = client_for(server, make_token(db_url, "alice"))
    study = client.create_study(spec=python_study("tests.api.workloads:nan_metric", max_trials=3))
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.counts["complete"] == 3
    for params in ({}, {"limit": 2}, {"state": "complete"}, {"after": 0, "limit": 1}):
        raw = client.request("GET", f"/api/v1/studies/{study.id}/trials", params=params)
        page = raw.json()  # strict JSON: NaN would not parse into null
        assert TrialList.model_validate(page).model_dump(mode="json") == page
        for t in page["trials"]:
            assert t["values"]["loss"] is None and t["values"]["grad"] is None
            one = client.trial(t["id"])
            assert (
                t["values"]["accuracy"] == one["values"]["accuracy"]
                and t["config"] == one["config"]
            )
            for key in ("created_at", "started_at", "finished_at"):
                assert dt.datetime.fromisoformat(t[key]) == dt.datetime.fromisoformat(one[key])
    assert (
        len(
            client._json("GET", f"/api/v1/studies/{study.id}/trials", params={"limit": 2})["trials"]
        )
        == 2
    )
    assert (
        client._json("GET", f"/api/v1/studies/{study.id}/trials", params={"state": "failed"})[
            "trials"
        ]
        == []
    )
    assert client.reports(study.trials()[0]["id"])[0]["values"]["loss"] is None


def test_failures_keep_their_reason(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    expected = {
        "crash": "worker exited with code 13",
        "raises": "ValueError: bad luck",
        "no_objective": "lacks objective(s) ['accuracy', 'cost']",
    }
    for name, reason in expected.items():
        study = client.create_study(
            spec=python_study(f"tests.api.workloads:{name}", max_trials=2, name=name)
        )
        study.wait(timeout=120, poll=0.2, progress=False)
        assert study.state == "finished" and study.counts["failed"] == 2, (name, study.data)
        for t in study.trials():
            assert t["state"] == "failed" and reason in t["error"], (name, t["error"])
        assert study.pareto() == [] and study.hypervolume() == 0.0


def test_stop_and_resume(sqlite_url, server_factory):
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "1.5"})
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:sleepy", max_trials=5, max_parallel=2)
    )
    wait_for(lambda: study.refresh().counts["running"] > 0, 60, "a running trial")
    assert study.stop().state == "stopped"
    wait_for(
        lambda: study.refresh().counts["running"] == 0, 60, "running trials to go back to the queue"
    )
    assert study.state == "stopped"
    with pytest.raises(ApiError) as err:
        study.stop()
    assert err.value.status == 409 and err.value.code == "conflict"
    assert study.resume().state == "running"
    study.wait(timeout=180, poll=0.2, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 5
    trials = study.trials()
    assert sorted(t["number"] for t in trials) == list(range(5))
    assert any(t["attempts"] == 2 for t in trials)  # a cancelled trial was run again


def test_time_budget_ends_the_study(sqlite_url, server_factory):
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "0.9"})
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study(
            "tests.api.workloads:sleepy", max_trials=1000, max_parallel=2, max_seconds=1.0
        )
    )
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished" and study.data["message"] == "time budget reached"
    c = study.counts
    assert c["running"] == 0 and c["queued"] == 0 and 1 <= c["complete"] < 1000


BAD_SPECS = [
    (lambda s: s.update(space="no_such_preset"), "space"),
    (lambda s: s.update(space={"params": {"x": {"type": "float", "low": 1, "high": 0}}}), "space"),
    (lambda s: s.update(optimizer={"name": "nope", "options": {}}), "optimizer"),
    (
        lambda s: s.update(optimizer={"name": "random", "options": {"frobnicate": 1}}),
        "optimizer.options.frobnicate",
    ),
    (lambda s: s.update(workload={"kind": "shell"}), "workload.kind"),
    (
        lambda s: s.update(workload={"kind": "python", "entrypoint": "no.such.module:fn"}),
        "workload.entrypoint",
    ),
    (lambda s: s.update(objectives=[{"name": "a", "direction": "up"}]), "objectives.0.direction"),
    (lambda s: s.update(objectives=[]), "objectives"),
    (lambda s: s.update(max_parallel=0), "max_parallel"),
    (lambda s: s.update(unexpected=1), "unexpected"),
    (lambda s: s.pop("workload"), "workload"),
]


def test_whole_spec_is_validated_before_201(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, trust_env=False
    ) as http:
        for mutate, field in BAD_SPECS:
            spec = python_study()
            mutate(spec)
            r = http.post("/api/v1/studies", json=spec)
            assert r.status_code == 422, (field, r.text)
            err = r.json()["error"]
            assert err["field"] is not None and err["field"].startswith(field), (field, err)
            assert err["message"]
        r = http.post(
            "/api/v1/studies", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and "error" in r.json()
        assert http.get("/api/v1/studies").json()["studies"] == []
        r = http.get("/api/v1/studies/999999")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = http.get("/api/v1/nowhere")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_cli_study_commands(sqlite_url, server_factory, tmp_path):
    import json

    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    spec_file = tmp_path / "study.json"
    spec_file.write_text(
        json.dumps(python_study("tests.api.workloads:with_checkpoint", max_trials=3))
    )
    exe = str(Path(sys.executable).parent / "autopeft")
    common = ["--url", server.url, "--token", token]

    def cli(*args):
        out = subprocess.run(
            [exe, "study", *args, *common], capture_output=True, text=True, cwd=REPO, timeout=300
        )
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    assert "study 1 " in cli("create", str(spec_file))
    assert "finished" in cli("wait", "1")
    assert "finished" in cli("list")
    shown = cli("show", "1")
    assert "hypervolume" in shown and "accuracy" in shown
    tid = client_for(server, token).study(1).pareto()[0]["id"]
    cli("export", "1", str(tid), str(tmp_path / "exported"))
    assert (tmp_path / "exported" / "weights.bin").is_file()


def test_delete_a_running_study_removes_it_and_its_trials(sqlite_url, server_factory):
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_SLEEP": "3"})
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:sleepy", max_trials=10, max_parallel=2)
    )
    wait_for(lambda: study.refresh().counts["running"] == 2, 60, "two running trials")
    tid = study.trials()[0]["id"]
    study.delete()
    for call in (study.refresh, lambda: client.trial(tid), lambda: client.reports(tid)):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.status == 404
    import sqlite3

    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as conn:
        for table in ("trials", "trial_reports", "events", "studies", "checkpoints"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    # the controller goes on serving
    other = client.create_study(spec=python_study(max_trials=2))
    assert other.wait(timeout=120, poll=0.2, progress=False).counts["complete"] == 2
