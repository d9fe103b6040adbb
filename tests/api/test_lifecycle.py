"""A study's life beyond create / stop / resume, through the real server: more budget for a finished
study (exactly the added trials run) and for a running one; one trial cancelled (a running trial's
worker really stops, a queued one ends at once; the trial is ``failed`` "cancelled by <user>" and the
study goes on); a clone with overrides, validated like a new study; others' studies and trials are
404; bad input is a 4xx naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autopeft.client import ApiError
from tests.api import test_peft_search
from tests.api.conftest import REPO, client_for, make_token, python_study, wait_for
from tests.api.test_peft_search import _spec as peft_spec

peft_workload = test_peft_search.peft_workload  # the tiny-BERT workload fixture, shared


def _error(call) -> ApiError:
    with pytest.raises(ApiError) as err:
        call()
    return err.value


def _cli(server, token, *args) -> subprocess.CompletedProcess:
    env = {
        "AUTOPEFT_URL": server.url,
        "AUTOPEFT_TOKEN": token,
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "autopeft.cli", "study", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_extend_a_finished_study_runs_exactly_the_added_trials(db_url, server_factory):
    server = server_factory(db_url)
    token = make_token(db_url, "alice")
    client = client_for(server, token)
    study = client.create_study(spec=python_study(max_trials=3, max_seconds=600, name="grow"))
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished" and study.counts["complete"] == 3
    before = {t["id"] for t in study.trials()}
    study.extend(max_trials=2, max_seconds=60)
    assert study.spec["max_trials"] == 5 and study.spec["max_seconds"] == 660
    assert [{k: v for k, v in e.items() if k != "at"} for e in study.spec["extensions"]] == [
        {"max_trials": 2, "max_seconds": 60}
    ]
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    trials = study.trials()
    assert study.counts["complete"] == 5 and sum(study.counts.values()) == 5
    assert sorted(t["number"] for t in trials) == list(range(5))
    assert all(t["attempts"] == 1 for t in trials)  # nothing before ran again
    assert len({t["id"] for t in trials} - before) == 2
    # the CLI: one more, through `study extend`
    out = _cli(server, token, "extend", str(study.id), "--trials", "1")
    assert out.returncode == 0 and "max_trials 6" in out.stdout, out.stdout + out.stderr
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.counts["complete"] == 6 and sum(study.counts.values()) == 6

    # bad input names the field; nobody else can extend it
    url = f"/api/v1/studies/{study.id}/extend"
    for body, field in (
        ({}, "max_trials"),
        ({"max_trials": -1}, "max_trials"),
        ({"max_epochs": 2}, "max_epochs"),
        ({"max_trials": 100_000}, "max_trials"),
        ({"trials": 2}, "trials"),
    ):
        err = _error(lambda body=body: client._json("POST", url, json=body))
        assert err.status == 422 and err.field == field, (body, err)
    bob = client_for(server, make_token(db_url, "bob"))
    assert _error(lambda: bob._json("POST", url, json={"max_trials": 1})).status == 404
    assert client.study(study.id).spec["max_trials"] == 6


def test_extend_a_running_study(sqlite_url, server_factory, tmp_path):
    gate = tmp_path / "gate"
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_GATE": str(gate)})
    client = client_for(server, make_token(sqlite_url, "alice"))
    study = client.create_study(
        spec=python_study("tests.api.workloads:gated", max_trials=2, max_parallel=1)
    )
    wait_for(lambda: study.refresh().counts["running"] == 1, 60, "the first trial to start", 0.1)
    assert study.extend(max_trials=3).state == "running" and study.spec["max_trials"] == 5
    gate.touch()
    study.wait(timeout=120, poll=0.2, progress=False)
    assert (
        study.state == "finished"
        and study.counts["complete"] == 5
        and sum(study.counts.values()) == 5
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_cancel_a_running_trial_stops_its_worker_and_the_study_goes_on(
    db_url, server_factory, workdir
):
    server = server_factory(db_url)
    token = make_token(db_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec=python_study("tests.api.workloads:stuck_first", max_trials=3, max_parallel=1)
    )
    pid_file = workdir / "artifacts" / f"study-{study.id}" / "trial-00000" / "checkpoint" / "pid"
    wait_for(pid_file.exists, 60, "trial 0 to start", 0.1)
    pid = int(pid_file.read_text())
    first = study.trials()[0]
    assert first["number"] == 0 and first["state"] == "running" and _alive(pid)
    bob = client_for(server, make_token(db_url, "bob"))
    assert _error(lambda: bob.cancel_trial(first["id"])).status == 404
    out = client.cancel_trial(first["id"])
    assert out["state"] == "failed" and out["error"] == "cancelled by alice", out
    wait_for(lambda: not _alive(pid), 30, "the trial's worker to be gone", 0.1)
    # the study goes on: the other two trials run (only one at a time: trial 0 had the only slot)
    study.wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    assert study.counts == {"queued": 0, "running": 0, "complete": 2, "failed": 1, "pruned": 0}
    assert client.trial(first["id"])["error"] == "cancelled by alice"
    err = _error(lambda: client.cancel_trial(first["id"]))
    assert err.status == 409 and "failed" in err.message


def test_cancel_a_queued_trial_of_a_stopped_study(sqlite_url, server_factory, tmp_path):
    gate = tmp_path / "gate"
    server = server_factory(sqlite_url, env={"AUTOPEFT_TEST_GATE": str(gate)})
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    study = client.create_study(
        spec=python_study("tests.api.workloads:gated", max_trials=3, max_parallel=1)
    )
    wait_for(lambda: study.refresh().counts["running"] == 1, 60, "the first trial to start", 0.1)
    study.stop()
    wait_for(
        lambda: study.refresh().counts["queued"] == 1 and study.counts["running"] == 0,
        60,
        "the running trial to go back to the queue",
        0.1,
    )
    queued = study.trials(state="queued")[0]
    out = _cli(server, token, "cancel-trial", str(queued["id"]))
    assert out.returncode == 0 and "failed (cancelled by alice)" in out.stdout, (
        out.stdout + out.stderr
    )
    gate.touch()
    study.resume().wait(timeout=120, poll=0.2, progress=False)
    assert study.state == "finished", study.data
    assert study.counts == {"queued": 0, "running": 0, "complete": 2, "failed": 1, "pruned": 0}
    assert client.trial(queued["id"])["attempts"] == 1  # never run again after the cancel


def test_clone_with_overrides(sqlite_url, server_factory):
    server = server_factory(sqlite_url)
    token = make_token(sqlite_url, "alice")
    client = client_for(server, token)
    original = client.create_study(spec=python_study(max_trials=2, name="base")).wait(
        timeout=120, poll=0.2, progress=False
    )
    clone = original.clone(
        {"max_trials": 3, "optimizer": {"options": {"constraints": [["cost", "<=", 0.5]]}}}
    )
    assert clone.id != original.id and clone.name == "base (clone)"
    spec = clone.spec
    assert spec["cloned_from"] == original.id and spec["max_trials"] == 3
    assert spec["optimizer"] == {
        "name": "random",
        "options": {"constraints": [["cost", "<=", 0.5]]},
    }
    assert spec["workload"] == original.spec["workload"] and spec["space"] == original.spec["space"]
    clone.wait(timeout=120, poll=0.2, progress=False)
    assert clone.counts["complete"] == 3 and original.refresh().counts["complete"] == 2
    assert all(t["feasible"] is (t["values"]["cost"] <= 0.5) for t in clone.trials())
    # null removes a key (a merge patch); the CLI's --set takes dotted keys
    out = _cli(
        server,
        token,
        "clone",
        str(original.id),
        "--set",
        "name=again",
        "--set",
        "optimizer.name=sobol",
    )
    assert out.returncode == 0 and "created from study" in out.stdout, out.stdout + out.stderr
    again = client.studies()[-1]
    assert (
        again.name == "again"
        and again.spec["optimizer"]["name"] == "sobol"
        and again.spec["max_trials"] == 2
    )
    # validated like a new study: the field is named
    for patch, field in (
        ({"max_trials": 0}, "max_trials"),
        ({"space": "no_such_preset"}, "space"),
        ({"objectives": None}, "objectives"),
        ({"extensions": []}, "extensions"),
        ({"workload": {"kind": "nope"}}, "workload.kind"),
    ):
        err = _error(lambda patch=patch: original.clone(patch))
        assert err.status == 422 and err.field == field, (patch, err)
    bob = client_for(server, make_token(sqlite_url, "bob"))
    err = _error(lambda: bob._json("POST", f"/api/v1/studies/{original.id}/clone", json={}))
    assert err.status == 404


def test_a_clone_with_another_workload_derives_its_own_fidelity(
    sqlite_url, server_factory, peft_workload
):
    """The early stopper's last rung came from the original's workload (2 epochs x 2 reports); a clone
    training 1 epoch gets 2, not a stale 4 that would make MO-ASHA rank at steps never reached."""
    server = server_factory(sqlite_url)
    client = client_for(server, make_token(sqlite_url, "alice"))
    original = client.create_study(spec=peft_spec(peft_workload, max_trials=2, baselines=[]))
    original.stop()
    assert original.spec["optimizer"]["options"]["early_stopping"]["max_step"] == 4
    clone = original.clone({"workload": {"epochs": 1}})
    clone.stop()
    assert clone.spec["workload"]["epochs"] == 1
    assert clone.spec["optimizer"]["options"]["early_stopping"]["max_step"] == 2
    err = _error(
        lambda: original.clone(
            {
                "workload": {"epochs": 1},
                "optimizer": {"options": {"early_stopping": {"min_step": 2}}},
            }
        )
    )
    assert err.status == 422 and err.field == "optimizer.options.early_stopping.min_step"
